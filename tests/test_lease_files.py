"""A held lease is never read as free: not while its holder rewrites what it says (idle since, idle holder),
and not when what it holds does not read as JSON. The lock decides who holds a GPU, never the content.
Two real processes on one lease folder."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from cellhop.server_ext.gpu_inventory import load_inventory
from cellhop.server_ext.leases import LeaseDirectory


def _holder(root: str, ready, stop) -> None:
    gpu = load_inventory("H100:1", environ={}).gpus[0]
    lease = LeaseDirectory(Path(root)).try_acquire(gpu, {"owner": "rewriting holder"})
    assert lease is not None
    ready.set()
    while not stop.is_set():
        lease.note_idle(1733360000.123456789)  # what it says grows ...
        lease.note_idle(None)  # ... and shrinks
    lease.release()


def test_a_lease_being_rewritten_is_never_taken_by_another_process(tmp_path):
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    holder = context.Process(target=_holder, args=(str(tmp_path), ready, stop))
    holder.start()
    try:
        assert ready.wait(30)
        gpu = load_inventory("H100:1", environ={}).gpus[0]
        leases = LeaseDirectory(tmp_path)
        taken = tries = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            tries += 1
            lease = leases.try_acquire(gpu, {"owner": "second"})
            if lease is not None:
                taken += 1
                lease.release()
            assert leases.held_by(), "a held lease was counted as free"
        assert taken == 0, f"the GPU was taken {taken} times out of {tries} while another process held it"
    finally:
        stop.set()
        holder.join(30)
