"""Who gets which GPU: exclusive leases across processes, a fair queue, timeouts and fallbacks.

The Scheduler is used directly where no container is needed (fast); other
processes are real `python -c` children sharing the test's runtime folder.
Two tests at the end go through ContainerManager.start, as a notebook does.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from processes import wait_until

from cellhop.container import ContainerSpec, Phase
from cellhop.errors import GpuRequestError, QueueTimeout
from cellhop.gpu_request import GpuRequest
from cellhop.server_ext.gpu_inventory import load_inventory
from cellhop.server_ext.scheduler import Scheduler

# A child process that takes GPUs through its own Scheduler, says so, and
# releases them when told (or holds them until it is killed).
OWNER = r"""
import sys
from pathlib import Path
from cellhop.gpu_request import GpuRequest
from cellhop.server_ext.gpu_inventory import load_inventory
from cellhop.server_ext.scheduler import Scheduler

root, gpus, request, owner = sys.argv[1:5]
scheduler = Scheduler(load_inventory(gpus, environ={}), Path(root))
say = lambda *words: print(*words, flush=True)
allocation = scheduler.acquire(GpuRequest.parse(request), {"owner": owner}, timeout=120,
                               on_position=lambda n: say("position", n))
say("held", ",".join(g.uuid for g in allocation.gpus))
for line in sys.stdin:
    if line.strip() == "release":
        scheduler.release(allocation)
        say("released")
"""


def scheduler(root, gpus: str) -> Scheduler:
    return Scheduler(load_inventory(gpus, environ={}), root)


def acquire(s: Scheduler, request: str, owner: str, **kwargs):
    return s.acquire(GpuRequest.parse(request), {"owner": owner}, **kwargs)


def tickets(root) -> list[str]:
    return [n for n in os.listdir(root / "queue") if n.endswith(".ticket")]


class Waiter(threading.Thread):
    """A request waiting in the queue on its own thread, recording its positions."""

    def __init__(self, s: Scheduler, request: str, owner: str, timeout: float = 60):
        super().__init__(daemon=True)
        self.s, self.request, self.owner, self.timeout = s, request, owner, timeout
        self.positions: list[int] = []
        self.allocation = None
        self.error: BaseException | None = None
        self.granted = threading.Event()
        self.start()

    def run(self):
        try:
            self.allocation = acquire(self.s, self.request, self.owner, timeout=self.timeout,
                                      on_position=self.positions.append)
        except BaseException as exc:  # reported by the test
            self.error = exc
        self.granted.set()


# -- exclusivity --------------------------------------------------------------------------
def test_two_processes_never_share_a_gpu(runtime_root, python_child):
    gpus = "H100:1,A10G:1"
    first = python_child(OWNER, runtime_root, gpus, "H100", "first.ipynb")
    h100 = first.expect("held").split()[1]
    second = python_child(OWNER, runtime_root, gpus, "H100", "second.ipynb")
    assert second.expect("position") == "position 0"  # it could not take the H100: it queues, next in line

    here = scheduler(runtime_root, gpus)
    assert here.holders()[h100]["owner"] == "first.ipynb"
    assert here.holders()[h100]["pid"] == first.pid
    # The second owner retries every 50 ms; in half a second it must still not have the GPU.
    time.sleep(0.5)
    assert not [line for line in second.pending() if line.startswith("held")]

    first.send("release")
    first.expect("released")
    assert second.expect("held", timeout=30) == f"held {h100}"
    assert here.holders()[h100]["owner"] == "second.ipynb"
    assert here.holders()[h100]["pid"] == second.pid


def test_two_schedulers_of_one_process_never_share_a_gpu(runtime_root):
    one, two = scheduler(runtime_root, "H100:2"), scheduler(runtime_root, "H100:2")
    a = acquire(one, "H100", "a")
    b = acquire(two, "H100", "b")
    assert {a.gpus[0].uuid, b.gpus[0].uuid} == {g.uuid for g in one.inventory.gpus}
    with pytest.raises(QueueTimeout):
        acquire(one, "H100", "c", timeout=0.3)
    one.release(a)
    two.release(b)
    assert set(one.holders().values()) == {None}


# -- the queue ------------------------------------------------------------------------------
def test_queue_position_is_visible_and_the_older_waiter_goes_first(runtime_root):
    s = scheduler(runtime_root, "H100:1,A10G:1")
    held = acquire(s, "H100", "holder")
    older = Waiter(s, "H100", "older")
    wait_until(lambda: older.positions == [0], what="the older waiter to be next in line")
    younger = Waiter(s, "H100", "younger")
    wait_until(lambda: younger.positions == [1], what="the younger waiter to be second in line")
    assert len(tickets(runtime_root)) == 2

    s.release(held)
    assert older.granted.wait(30), "the older waiter did not get the H100"
    assert older.error is None and older.allocation.gpu_type == "H100"
    wait_until(lambda: younger.positions == [1, 0], what="the younger waiter to move up")
    assert not younger.granted.is_set()
    assert s.holders()[older.allocation.gpus[0].uuid]["owner"] == "older"

    s.release(older.allocation)
    assert younger.granted.wait(30), "the younger waiter did not get the H100"
    assert younger.error is None
    s.release(younger.allocation)
    assert tickets(runtime_root) == []


def test_a_newcomer_does_not_jump_the_queue(runtime_root):
    s = scheduler(runtime_root, "H100:2")
    held = acquire(s, "H100", "holder")
    waiter = Waiter(s, "H100:2", "waiter")  # needs both H100s: waits although one is free
    wait_until(lambda: waiter.positions == [0], what="the waiter to queue")
    with pytest.raises(QueueTimeout, match="1 request\\(s\\) ahead"):
        acquire(s, "H100", "newcomer", timeout=0.5)  # the free H100 is the older waiter's to wait for
    s.release(held)
    assert waiter.granted.wait(30) and waiter.error is None
    assert len(waiter.allocation.gpus) == 2
    s.release(waiter.allocation)


def test_a_queued_h100_request_does_not_block_an_a10g_one(runtime_root):
    s = scheduler(runtime_root, "H100:1,A10G:1")
    held = acquire(s, "H100", "holder")
    waiter = Waiter(s, "H100", "waiter")
    wait_until(lambda: waiter.positions == [0], what="the H100 request to queue")
    positions = []
    a10g = acquire(s, "A10G", "other", timeout=5, on_position=positions.append)
    assert a10g.gpu_type == "A10G" and positions == []  # taken at once, never queued
    for allocation in (a10g, held):
        s.release(allocation)
    assert waiter.granted.wait(30) and waiter.error is None
    s.release(waiter.allocation)


def test_queue_timeout_names_who_holds_the_gpu(runtime_root):
    s = scheduler(runtime_root, "H100:1,A10G:1")
    held = acquire(s, "H100", "train.ipynb")
    started = time.monotonic()
    with pytest.raises(QueueTimeout) as err:
        acquire(s, "H100", "eval.ipynb", timeout=0.5)
    assert time.monotonic() - started < 20
    message = str(err.value)
    assert "no GPU for H100 freed up within" in message
    assert "GPU 0 (H100) held by train.ipynb" in message
    assert "Stop a container that holds one" in message
    assert tickets(runtime_root) == []  # the timed-out request left the queue
    s.release(held)


def test_a_request_the_host_can_never_satisfy_fails_at_once(runtime_root):
    s = scheduler(runtime_root, "H100:2,A10G:1")
    started = time.monotonic()
    with pytest.raises(GpuRequestError, match="this host has only 2"):
        acquire(s, "H100:3", "greedy", timeout=60)
    assert time.monotonic() - started < 5
    assert tickets(runtime_root) == []


# -- fallbacks ------------------------------------------------------------------------------
def test_fallback_takes_the_next_type_when_the_first_is_all_held(runtime_root):
    s = scheduler(runtime_root, "H100:2,A10G:1")
    both = acquire(s, "H100:2", "big-job")
    fallback = acquire(s, "H100,A10G", "flexible", timeout=5)
    assert fallback.gpu_type == "A10G"
    assert fallback.waited == 0.0
    s.release(fallback)
    s.release(both)


def test_fallback_prefers_the_first_choice_that_is_free(runtime_root):
    s = scheduler(runtime_root, "H100:2,A10G:1")
    first = acquire(s, "H100,A10G", "a", timeout=5)
    second = acquire(s, "A10G,H100", "b", timeout=5)
    assert (first.gpu_type, second.gpu_type) == ("H100", "A10G")
    third = acquire(s, "A10G,H100", "c", timeout=5)  # A10G taken: the H100 left
    assert third.gpu_type == "H100"
    for allocation in (first, second, third):
        s.release(allocation)


def test_a_fallback_is_not_held_back_by_a_waiter_for_its_first_choice(runtime_root):
    # An older waiter wants only H100s; "H100,A10G" must not wait behind it for the free A10G.
    s = scheduler(runtime_root, "H100:1,A10G:1")
    held = acquire(s, "H100", "holder")
    waiter = Waiter(s, "H100", "waiter")
    wait_until(lambda: waiter.positions == [0], what="the H100 request to queue")
    fallback = acquire(s, "H100,A10G", "flexible", timeout=5)
    assert fallback.gpu_type == "A10G"
    s.release(held)
    assert waiter.granted.wait(30) and waiter.error is None  # the H100 still goes to the older waiter
    for allocation in (fallback, waiter.allocation):
        s.release(allocation)


def test_any_takes_whatever_type_is_free(runtime_root):
    s = scheduler(runtime_root, "H100:2,A10G:1")
    held = acquire(s, "H100:2", "big-job")
    assert (allocation := acquire(s, "any", "whatever", timeout=5)).gpu_type == "A10G"
    s.release(allocation)
    s.release(held)


# -- crashes leave nothing stale -----------------------------------------------------------
def test_a_killed_process_leaves_no_stale_lease_or_ticket(runtime_root, python_child):
    gpus = "H100:1"
    holder = python_child(OWNER, runtime_root, gpus, "H100", "crashing-holder")
    holder.expect("held")
    waiter = python_child(OWNER, runtime_root, gpus, "H100", "crashing-waiter")
    waiter.expect("position 0")
    assert len(tickets(runtime_root)) == 1

    waiter.kill()  # first, so that it cannot take the GPU the holder leaves
    holder.kill()

    s = scheduler(runtime_root, gpus)
    assert set(s.holders().values()) == {None}
    positions = []
    allocation = acquire(s, "H100", "survivor", timeout=10, on_position=positions.append)
    assert positions == []  # the dead waiter's ticket did not count: taken at once
    [left] = tickets(runtime_root)  # it stays a moment (a file is made, then locked: never swept too soon)
    long_ago = time.time() - 60
    os.utime(runtime_root / "queue" / left, (long_ago, long_ago))  # ... and once that moment is long past
    s.recover()  # (what the control plane runs every few seconds)
    assert tickets(runtime_root) == []  # it was swept away
    s.release(allocation)


def test_a_lease_is_freed_when_released(runtime_root):
    s = scheduler(runtime_root, "H100:1")
    allocation = acquire(s, "H100", "nb")
    (uuid,) = [g.uuid for g in allocation.gpus]
    assert s.holders()[uuid]["owner"] == "nb" and s.holders()[uuid]["pid"] == os.getpid()
    s.release(allocation)
    assert s.holders()[uuid] is None
    s.release(allocation)  # twice is harmless


# -- through the container manager -------------------------------------------------------
def test_a_container_start_queues_visibly_then_starts_when_a_gpu_frees(manager):
    other = scheduler(manager.root, "H100:2,A10G:1")
    held = acquire(other, "H100:2", "other-notebook")
    events, result = [], {}
    starter = threading.Thread(target=lambda: result.update(container=manager.start(
        ContainerSpec(gpu=GpuRequest.parse("H100"), owner="me"), on_event=events.append)), daemon=True)
    starter.start()
    wait_until(lambda: any(e.get("queue_position") == 0 for e in events), what="a queued event at position 0")
    (queued,) = manager.list()
    assert queued.phase == Phase.QUEUED and queued.queue_position == 0
    assert queued.to_dict()["queue_position"] == 0

    other.release(held)
    starter.join(60)
    container = result["container"]
    assert container.phase == Phase.READY and container.gpus[0].type == "H100"
    assert [e["phase"] for e in events if "queue_position" not in e] == ["queued", "starting", "ready"]
    assert container.to_dict()["queue_position"] is None
    assert container.allocation.waited > 0
    manager.stop(container.id)


def test_a_container_start_that_times_out_in_the_queue_leaves_nothing(manager):
    other = scheduler(manager.root, "H100:2,A10G:1")
    held = acquire(other, "H100:2", "long-training.ipynb")
    with pytest.raises(QueueTimeout, match="held by long-training.ipynb"):
        manager.start(ContainerSpec(gpu=GpuRequest.parse("H100"), owner="me", queue_timeout=0.5))
    assert manager.list() == []
    assert tickets(manager.root) == []
    other.release(held)
