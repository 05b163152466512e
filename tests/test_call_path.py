"""The lean call path of `f.remote()` (lean_channel.py, output_tracking.py, lean_status.py): a real notebook
kernel whose containers have an idle timeout of 3 s. Calls go on the container kernel's lean channel, past
ipykernel's shell thread; what a call prints still arrives in its cell before the call returns; an interrupt
still stops a running call (SIGINT in the container's main thread) and the container lives on with its
state; and a call longer than the idle timeout is busy to the control plane, not idle, so its container
is not stopped under it (busy goes out once a call has run 0.2 s), while an idle one is."""

from __future__ import annotations

import threading
import time

import pytest

from kernel_fixtures import start_cellhop_kernel

pytestmark = pytest.mark.timeout(240)

IDLE_TIMEOUT = 3

SETUP = """
import os, time, cellhop
from cellhop.kernel.extension import remote_cells

@cellhop.remote(gpu='H100')
def work(op, x=None):
    import __main__  # the container process's: state that outlives a call
    if op == 'print':
        for i in range(x):
            print('line', i)
        return 'printed'
    if op == 'sleep':
        __main__.KEPT = 'state'
        print('sleeping', flush=True)
        time.sleep(x)
        return os.environ['CELLHOP_CONTAINER_ID']
    if op == 'kept':
        return __main__.KEPT
    return x

def _lean():
    return [s.lean for s in remote_cells(get_ipython()).pool.sessions().values()]
"""


@pytest.fixture(scope="module")
def nb():
    with start_cellhop_kernel(extra_arguments=(f"--Cellhop.idle_timeout={IDLE_TIMEOUT}",)) as kernel:
        kernel.ok(SETUP)
        yield kernel


def test_calls_go_on_the_lean_channel_and_their_output_arrives_before_they_return(nb):
    ran = nb.ok("print(work.remote('echo', 7), _lean())")
    assert ran.stdout == "7 [True]\n", ran
    ran = nb.ok("r = work.remote('print', 50)\nprint('returned', r)")
    lines = ran.stdout.splitlines()
    assert lines == [f"line {i}" for i in range(50)] + ["returned printed"], ran.stdout


def test_an_interrupt_stops_a_running_call_and_the_container_keeps_its_state(nb):
    at = {}

    def hook(msg):
        if not at and msg["msg_type"] == "stream" and "sleeping" in msg["content"]["text"]:
            at["t"] = time.monotonic()
            threading.Thread(target=nb.km.interrupt_kernel, daemon=True).start()

    ran = nb.run("work.remote('sleep', 60)", output_hook=hook, timeout=60)
    assert at, ran  # the interrupt was sent
    assert ran.status == "error" and ran.ename == "KeyboardInterrupt", ran
    assert time.monotonic() - at["t"] < 30  # long before the 60 s sleep would have ended
    assert nb.ok("print(work.remote('kept'), _lean())").stdout == "state [True]\n"


def test_a_call_longer_than_the_idle_timeout_is_busy_and_an_idle_container_still_stops(nb):
    first = nb.ok("print(work.remote('echo', 'warm'))").stdout
    assert first == "warm\n"
    ran = nb.ok(f"cid = work.remote('sleep', {IDLE_TIMEOUT * 2})\nprint(cid)")  # sleeps past the idle timeout
    cid = ran.stdout.split()[-1]
    assert ran.stdout.split()[0] == "sleeping", ran.stdout
    # the same container answers at once: it was not stopped as idle while the call ran
    assert nb.ok("print(work.remote('sleep', 0))").stdout.split()[-1] == cid
    # left alone, it is stopped as idle, and the next call gets a fresh container
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(1)
        ids = nb.ok("print(sorted(s.id for s in remote_cells(get_ipython()).pool.sessions().values() "
                    "if s.alive()))").stdout
        if cid not in ids:
            break
    assert cid not in ids, ids
    assert nb.ok("print(work.remote('sleep', 0))").stdout.split()[-1] != cid


def test_a_pipelined_map_of_one_call_a_message_does_not_stall(nb):
    # two requests in flight per container: the reply sent on the lean socket must not hide the next request
    # (about 0.15 s a call while it did: 300 calls took 45 s; a few hundred milliseconds now)
    ran = nb.ok("t0 = time.monotonic()\n"
                "double = cellhop.remote(gpu='H100')(lambda i: i * 2)\n"
                "out = double.map(range(300), progress=False, chunk_size=1)\n"
                "double.shutdown()\n"
                "print(out == [i * 2 for i in range(300)], time.monotonic() - t0 < 20)")
    assert ran.stdout == "True True\n", ran.stdout
