"""When a %%remote cell goes wrong: remote exceptions, values that cannot travel, interrupt, timeout,
a container that dies (SIGKILL, os._exit, out of memory), and --async handles."""

from __future__ import annotations

import threading
import time

import pytest

from kernel_fixtures import (  # noqa: F401  (cellhop_kernel is a fixture)
    cellhop_kernel,
    container_processes,
    short_runtime_dir,
    start_cellhop_kernel,
)


@pytest.fixture(scope="module")
def nb(cellhop_kernel):  # noqa: F811
    return cellhop_kernel


def interrupt_on(nb, marker: str, times: int = 1, gap: float = 1.0):
    """An output hook that interrupts the notebook kernel (as the interrupt button does) once `marker`
    is printed, `times` times `gap` seconds apart; `.at` records when the first interrupt was sent."""

    class Hook:
        at = None

        def __call__(self, msg):
            if self.at is None and msg["msg_type"] == "stream" and marker in msg["content"]["text"]:
                self.at = time.monotonic()
                threading.Thread(target=self._interrupt, daemon=True).start()

        def _interrupt(self):
            for n in range(times):
                if n:
                    time.sleep(gap)  # nothing to wait on: a stubborn cell prints nothing more
                nb.km.interrupt_kernel()

    return Hook()


# -- errors raised by the cell ----------------------------------------------------------------------
def test_remote_exception_shows_remote_traceback_with_cell_lines(nb):
    ran = nb.run("%%remote\nnumerator = 1\nspare = 2\nratio = numerator / 0")
    assert ran.status == "error", ran
    assert ran.ename == "ZeroDivisionError" and ran.evalue == "division by zero"
    tb = ran.traceback_text
    assert "raised in the container" in tb
    assert "line 3" in tb and "ratio = numerator / 0" in tb, tb
    # shown once, not twice (the container's own error output is not relayed as well)
    assert [t for t, _ in ran.outputs].count("error") == 1


def test_remote_exception_raises_locally_as_its_type(nb):
    ran = nb.ok("try:\n"
                "    get_ipython().run_cell_magic('remote', '', 'values = [1]\\nvalues[5]')\n"
                "except IndexError as exc:\n"
                "    print('caught', type(exc).__name__, exc)\n")
    assert ran.stdout == "caught IndexError list index out of range\n"


def test_remote_syntax_error_is_reported(nb):
    ran = nb.run("%%remote\nvalue = (1,\n")
    assert ran.status == "error" and ran.ename == "SyntaxError", ran


# -- values that cannot travel --------------------------------------------------------------------------
def test_unpicklable_variable_is_named_and_nothing_runs(nb):
    nb.ok("import threading\nguard = threading.Lock()")
    ran = nb.run("%%remote\nprint('ran anyway')\nprobe = 1\nwith guard:\n    pass")
    assert ran.status == "error", ran
    assert ran.ename == "UnsendableVariable"
    assert "guard" in ran.evalue and "_thread.lock" in ran.evalue and "nothing ran" in ran.evalue
    assert "ran anyway" not in ran.stdout
    # nothing ran in the container either
    assert nb.ok("%%remote --no-pull\nprint('probe' in dir())").stdout == "False\n"


def test_value_that_cannot_come_back_is_named_and_others_arrive(nb):
    nb.ok("plain = None")
    ran = nb.ok("%%remote\nsquares = (i * i for i in range(3))\nplain = 5\nalso = 'x'")
    assert "squares" in ran.stderr and "generator" in ran.stderr, ran
    assert "plain" not in ran.stderr and "also" not in ran.stderr
    assert nb.ok("print(plain, also, 'squares' in globals())").stdout == "5 x False\n"
    # the value is still in the container, usable there
    assert nb.ok("%%remote --no-pull\nprint(list(squares))").stdout == "[0, 1, 4]\n"


# -- interrupt and timeout ------------------------------------------------------------------------------
def test_interrupt_stops_the_remote_cell_and_the_container_survives(nb):
    hook = interrupt_on(nb, "sleeping")
    ran = nb.run("%%remote\nimport time\nkept = 'state'\nprint('sleeping', flush=True)\ntime.sleep(60)",
                 output_hook=hook, timeout=60)
    assert hook.at is not None, ran  # the interrupt was sent
    replied_after = time.monotonic() - hook.at
    assert ran.status == "error" and ran.ename == "KeyboardInterrupt", ran
    assert replied_after < 2, replied_after  # the issue asks for "within a second"
    assert nb.ok("%%remote\nprint(kept)").stdout == "state\n"  # same container, state intact


def test_second_interrupt_stops_a_stubborn_container(nb):
    nb.ok("%%remote --no-pull\nold_state = 1")
    hook = interrupt_on(nb, "stubborn", times=2)
    ran = nb.run("%%remote\nimport signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                 "print('stubborn', flush=True)\ntime.sleep(60)", output_hook=hook, timeout=60)
    assert ran.status == "error" and ran.ename == "ContainerDied", ran
    assert "interrupted twice" in ran.evalue
    assert ran.elapsed < 15
    ran = nb.ok("%%remote --no-pull\nprint('old_state' in dir())")
    assert ran.stdout == "False\n"  # a fresh container


def test_timeout_stops_the_cell_quickly(nb):
    nb.ok("%%remote --no-pull\nbefore_timeout = 'still here'")
    ran = nb.run("%%remote --timeout 1\nimport time\ntime.sleep(30)", timeout=60)
    assert ran.status == "error", ran
    assert ran.elapsed < 5, ran
    # the cell stopped on interrupt, so the container (and its state) stays
    assert nb.ok("%%remote --no-pull\nprint(before_timeout)").stdout == "still here\n"


def test_timeout_error_says_it_was_the_timeout(nb):
    ran = nb.run("%%remote --timeout 1\nimport time\ntime.sleep(30)", timeout=60)
    assert ran.status == "error", ran
    assert ran.ename == "RemoteTimeout" and "--timeout 1" in ran.evalue, ran


def test_timeout_stops_a_cell_that_ignores_interrupt(nb):
    nb.ok("%%remote --no-pull\nold_state = 1")
    ran = nb.run("%%remote --timeout 1\nimport signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                 "time.sleep(30)", timeout=60)
    assert ran.status == "error" and ran.ename == "RemoteTimeout", ran
    assert "--timeout 1" in ran.evalue
    assert ran.elapsed < 12, ran
    assert nb.ok("%%remote --no-pull\nprint('old_state' in dir())").stdout == "False\n"


# -- the container dies ---------------------------------------------------------------------------------
def test_container_killed_mid_cell(nb):
    ran = nb.run("%%remote --gpu A10G\nimport os\nvictim_state = 1\nprint('about to die', flush=True)\n"
                 "os.kill(os.getpid(), 9)", timeout=60)
    assert ran.status == "error" and ran.ename == "ContainerDied", ran
    assert "SIGKILL" in ran.evalue
    assert ran.elapsed < 10
    # its GPU is free again, and the notebook kernel is fine
    table = nb.ok("%gpu").stdout
    assert [line for line in table.splitlines() if " A10G " in line and "free" in line], table
    assert nb.ok("print('notebook alive')").stdout == "notebook alive\n"
    # the next cell gets a fresh container
    ran = nb.ok("%%remote --gpu A10G --no-pull\nprint('victim_state' in dir())")
    assert ran.stdout == "False\n"


def test_container_death_message_is_not_a_wall_of_logs(nb):
    ran = nb.run("%%remote\nimport os\nos.kill(os.getpid(), 9)", timeout=60)
    assert ran.ename == "ContainerDied", ran
    assert "To connect another client" not in ran.evalue and "Ctrl-C will not work" not in ran.evalue


def test_container_exit_code_is_reported(nb):
    ran = nb.run("%%remote\nimport os\nos._exit(3)", timeout=60)
    assert ran.status == "error" and ran.ename == "ContainerDied", ran
    assert "exit code 3" in ran.evalue
    assert nb.ok("%%remote\nprint('next one works')").stdout == "next one works\n"


def test_out_of_memory_is_reported(nb):
    ran = nb.run("%%remote --memory 300M\nhog = bytearray(2**30)\nprint('allocated')", timeout=60)
    assert ran.status == "error" and ran.ename == "ContainerDied", ran
    assert "out of memory" in ran.evalue
    assert "allocated" not in ran.stdout
    assert nb.ok("%%remote --memory 300M\nprint('fits')").stdout == "fits\n"


# -- --async ----------------------------------------------------------------------------------------
def test_async_returns_a_handle_and_wait_lands_values(nb):
    nb.ok("%%remote --no-pull\nwarm = True")
    ran = nb.ok("%%remote --async\nimport time\ntime.sleep(1.5)\nlate_value = 41")
    assert ran.elapsed < 1.0, ran  # returned at once
    assert [d["data"]["text/plain"] for d in ran.displays()] == ["<RemoteRun remote cell: running>"]
    nb.ok("handle = _")
    assert nb.ok("print('late_value' in globals(), handle.status)").stdout == "False running\n"
    ran = nb.ok("print(handle.wait(30)['late_value'], late_value, handle.status)")
    assert ran.stdout == "41 41 done\n"


def test_async_cancel_interrupts_it(nb):
    nb.ok("%%remote --no-pull\nbefore_cancel = 'kept'")
    nb.ok("%%remote --async\nimport time\ntime.sleep(60)\nnever = 1")
    ran = nb.ok("cancelled = _\n"
                "cancelled.cancel()\n"
                "try:\n"
                "    cancelled.wait(10)\n"
                "except BaseException as exc:\n"
                "    print('raised', type(exc).__name__)\n"
                "print(cancelled.status, 'never' in globals())")
    assert ran.stdout == "raised KeyboardInterrupt\ncancelled False\n"
    assert nb.ok("%%remote --no-pull\nprint(before_cancel)").stdout == "kept\n"


# -- containers and GPUs end with their notebook --------------------------------------------------------
def test_containers_and_gpu_leases_end_with_the_notebook_kernel():
    runtime = short_runtime_dir()
    with start_cellhop_kernel(runtime_dir=runtime) as first:
        first.ok("%gpu H100:2")
        ran = first.ok("%%remote\nheld = 1")
        assert ran.container in set(first.container_processes().values())
    deadline = time.monotonic() + 10
    while container_processes(runtime) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert container_processes(runtime) == {}
    # another notebook of the same host gets both H100s at once
    with start_cellhop_kernel(runtime_dir=runtime, queue_timeout=3) as second:
        second.ok("%gpu H100:2")
        ran = second.ok("%%remote\nimport os\nprint(os.environ['CUDA_VISIBLE_DEVICES'])")
        assert sorted(ran.stdout.split()[0].split(",")) == ["GPU-simulated-h100-0", "GPU-simulated-h100-1"]
        assert ran.elapsed < 3
