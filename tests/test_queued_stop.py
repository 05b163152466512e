"""Stopping or deleting a container while it is still queued for a GPU.

A simulated inventory of one GPU: container A holds it, B queues behind it. Stopping (or
deleting) B ends its wait at once, with no stop grace to sit through; when A frees the GPU
afterwards, B never launches and the GPU is held by nobody.
"""

from __future__ import annotations

import threading
import time

import pytest
from processes import container_kernel_pids, wait_until

from cellhop.container import ContainerSpec, Phase
from cellhop.errors import ContainerNotFound, ContainerStopped, QueueCancelled

pytestmark = pytest.mark.timeout(90)

GPU = "GPU-simulated-h100-0"


def spec(**kwargs) -> ContainerSpec:
    return ContainerSpec(gpu="H100", owner="tests", **kwargs)


class Starter(threading.Thread):
    """`manager.start(spec)` on a thread of its own; `.result` or `.error` once it is done."""

    def __init__(self, manager, spec, cancelled=None):
        super().__init__(daemon=True)
        self.manager, self.spec, self.cancelled = manager, spec, cancelled
        self.result = self.error = None
        self.events: list[dict] = []

    def run(self):
        try:
            self.result = self.manager.start(self.spec, on_event=self.events.append, cancelled=self.cancelled)
        except BaseException as exc:  # looked at by the test
            self.error = exc


def queued_behind(manager, holder) -> tuple[Starter, object]:
    starter = Starter(manager, spec(label="B"))
    starter.start()
    wait_until(lambda: any(c.spec.label == "B" and c.queue_position is not None for c in manager.list()),
               timeout=10, what="B to queue behind A")
    [queued] = [c for c in manager.list() if c.spec.label == "B"]
    assert queued.phase == Phase.QUEUED
    assert manager.scheduler.holders()[GPU]["container"] == holder.id
    return starter, queued


def assert_b_never_starts(manager, starter, runtime_root, b_id):
    starter.join(10)
    assert not starter.is_alive(), "B's start() still waits for the GPU after it was stopped"
    assert isinstance(starter.error, ContainerStopped), (starter.error, starter.result)
    assert "stopped while queued for a GPU" in str(starter.error) and b_id in str(starter.error)
    assert starter.result is None
    phases = [e["phase"] for e in starter.events]
    assert "starting" not in phases and "ready" not in phases, phases
    time.sleep(0.5)  # a late grab of the freed GPU would show now
    assert manager.scheduler.holders()[GPU] is None
    assert not list((manager.root / "queue").glob("*.ticket"))
    assert not [pid for pid in container_kernel_pids(runtime_root / "containers" / b_id)]


def test_stopping_a_queued_container_ends_its_wait_and_it_never_takes_the_freed_gpu(make_manager, runtime_root):
    manager = make_manager(simulated_gpus="H100:1", stop_grace=5.0)
    a = manager.start(spec(label="A"))
    starter, b = queued_behind(manager, a)

    started = time.monotonic()
    status = manager.stop(b.id, reason="not needed any more")
    assert time.monotonic() - started < 1.0  # no stop grace for a container with no process
    assert status.stopped and "not needed any more" in status.describe()
    assert "stopped while queued" in status.describe()
    assert b.phase == Phase.EXITED and b.allocation is None
    starter.join(5)
    assert not starter.is_alive()  # its wait ended at once, before the GPU was freed

    manager.stop(a.id)  # the GPU frees up: nobody may take it
    assert_b_never_starts(manager, starter, runtime_root, b.id)
    assert manager.get(b.id).phase == Phase.EXITED  # still listed, as stopped
    assert [p for p, _ in b.phases] == ["queued", "stopping", "exited"]
    manager.remove(b.id)
    with pytest.raises(ContainerNotFound):
        manager.get(b.id)


def test_deleting_a_queued_container_stops_it_for_good(make_manager, runtime_root):
    manager = make_manager(simulated_gpus="H100:1", stop_grace=5.0)
    a = manager.start(spec(label="A"))
    starter, b = queued_behind(manager, a)
    started = time.monotonic()
    manager.remove(b.id)
    assert time.monotonic() - started < 1.0
    with pytest.raises(ContainerNotFound):
        manager.get(b.id)
    manager.stop(a.id)
    assert_b_never_starts(manager, starter, runtime_root, b.id)
    assert [c.id for c in manager.list()] == [a.id]
    # and the GPU can be had at once by the next request
    c = manager.start(spec(label="C"))
    assert manager.scheduler.holders()[GPU]["container"] == c.id


def test_a_stop_as_the_gpu_is_granted_gives_it_back(make_manager, runtime_root, monkeypatch):
    """The GPU frees in the very moment B is stopped: B's acquire returns with it, then hands it back."""
    manager = make_manager(simulated_gpus="H100:1")
    scheduler = manager.scheduler
    real_acquire = scheduler.acquire
    granted = threading.Event()
    go_on = threading.Event()

    def acquire(*args, **kwargs):
        allocation = real_acquire(*args, **kwargs)
        granted.set()
        go_on.wait(10)  # stop() runs here, after the scheduler granted the GPU
        return allocation

    monkeypatch.setattr(scheduler, "acquire", acquire)
    starter = Starter(manager, spec(label="B"))
    starter.start()
    assert granted.wait(10)
    [b] = manager.list()
    manager.stop(b.id)
    go_on.set()
    starter.join(10)
    assert isinstance(starter.error, ContainerStopped), starter.error
    assert scheduler.holders()[GPU] is None
    assert not container_kernel_pids(runtime_root / "containers")


def test_a_requester_that_goes_away_still_calls_off_its_queued_start(make_manager, runtime_root):
    manager = make_manager(simulated_gpus="H100:1")
    a = manager.start(spec(label="A"))
    gone = threading.Event()
    starter = Starter(manager, spec(label="B"), cancelled=gone)
    starter.start()
    wait_until(lambda: any(c.spec.label == "B" and c.queue_position is not None for c in manager.list()),
               timeout=10, what="B to queue")
    gone.set()
    starter.join(5)
    assert isinstance(starter.error, QueueCancelled), starter.error
    assert [c.id for c in manager.list()] == [a.id]  # forgotten, as before
    manager.stop(a.id)
    time.sleep(0.3)
    assert manager.scheduler.holders()[GPU] is None
