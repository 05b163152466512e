"""Who gets which GPU: exclusive allocation with a fair queue shared by every process on the host.

A request that fits now takes its GPUs at once. One that does not fit waits
in a queue of ticket files (`<runtime dir>/queue/`), each locked by its
waiting process, so the queue is shared by every notebook on the host and a
waiter that dies leaves no ticket that counts. A request may take a GPU of
a type only when no older live ticket wants that type: first come, first
served per GPU type. A queued H100 request never blocks an A10G one, nor
the A10G of a younger fallback request "H100,A10G".
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import QueueCancelled, QueueTimeout
from ..gpu_request import ANY, GpuChoice, GpuRequest, feasible_choices
from ..inventory import Inventory
from .leases import Lease, LeaseDirectory, read_locked
from .paths import private_dir
from .scheduling import Allocation, GpuScheduler

POLL_INTERVAL = 0.05


class _Ticket:
    """This waiter's place in the host-wide queue."""

    def __init__(self, queue_dir: Path, types: set[str], holder: dict):
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.ticket"
        tmp = queue_dir / f".{name}.tmp"
        self.fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)  # locked before it becomes visible
        os.write(self.fd, json.dumps({"types": sorted(types), "holder": holder}).encode())
        self.path = queue_dir / name
        os.rename(tmp, self.path)
        self.types = types

    def ahead(self) -> tuple[int, set[str]]:
        """How many live, older tickets want a type this one could use, and which of those types they want."""
        count, wanted = 0, set()
        for name in sorted(os.listdir(self.path.parent)):
            if name >= self.path.name:
                break
            if name.startswith(".") or not name.endswith(".ticket"):
                continue
            other = self.path.parent / name
            types = _live_ticket_types(other)
            if types is not None and types & self.types:
                count += 1
                wanted |= types & self.types
        return count, wanted

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)


def _live_ticket_types(path: Path) -> set[str] | None:
    """The types an older ticket waits for, or None (removing it) if its waiter is gone."""
    info = read_locked(path, fcntl.LOCK_EX, when_free=lambda stale: stale.unlink(missing_ok=True))
    return None if info is None else set(info.get("types", ()))


class Scheduler(GpuScheduler):
    """Allocates this host's GPUs exclusively, queueing fairly when none fits."""

    def __init__(self, inventory: Inventory, runtime_root: Path, poll_interval: float = POLL_INTERVAL):
        self.inventory = inventory
        self.leases = LeaseDirectory(Path(runtime_root) / "leases")
        self.queue_dir = private_dir(Path(runtime_root) / "queue")
        self.poll_interval = poll_interval
        self._released = threading.Condition()

    def acquire(
        self,
        request: GpuRequest,
        holder: dict,
        timeout: float | None = None,
        on_position: Callable[[int], None] | None = None,
        cancelled: threading.Event | None = None,
    ) -> Allocation:
        """Take GPUs for `request`, waiting in the queue up to `timeout` seconds (None: forever).

        `on_position(n)` is called whenever the number of requests ahead
        changes (0 means next in line). `cancelled` (anything with `is_set()`, e.g. a
        threading.Event) calls the wait off: checked before every try, and `wake()` makes a
        waiter look at once. Raises GpuRequestError at once for a request the host can never
        satisfy, QueueTimeout when it waited too long, QueueCancelled when it was called off.
        """
        choices = feasible_choices(request, self.inventory)
        if not choices:
            return Allocation(request)
        start = time.monotonic()
        holder = {**holder, "pid": os.getpid(), "since": time.time()}
        leases = self._try_take(choices, holder, blocked=self.queued_types())
        if leases:
            return Allocation(request, leases)
        ticket = _Ticket(self.queue_dir, request.types(self.inventory), holder)
        try:
            last_position = None
            while True:
                if cancelled is not None and cancelled.is_set():
                    raise QueueCancelled(f"the request for {request} was called off while queued")
                position, blocked = ticket.ahead()
                if position != last_position and on_position is not None:
                    on_position(position)
                last_position = position
                leases = self._try_take(choices, holder, blocked)
                if leases:
                    return Allocation(request, leases, waited=time.monotonic() - start)
                waited = time.monotonic() - start
                if timeout is not None and waited >= timeout:
                    raise QueueTimeout(self._timeout_message(request, waited, position))
                with self._released:
                    self._released.wait(self.poll_interval)
        finally:
            ticket.close()

    def release(self, allocation: Allocation) -> None:
        allocation.release()
        with self._released:
            self._released.notify_all()

    def wake(self) -> None:
        """Make every waiter of this process look again now (a GPU was freed, a wait was called off)."""
        with self._released:
            self._released.notify_all()

    def queued_types(self) -> set[str]:
        """The GPU types that live queued requests wait for."""
        wanted: set[str] = set()
        for name in sorted(os.listdir(self.queue_dir)):
            if name.endswith(".ticket"):
                wanted |= _live_ticket_types(self.queue_dir / name) or set()
        return wanted

    def holders(self) -> dict[str, dict | None]:
        """GPU uuid -> who holds it (None when free)."""
        return {gpu.uuid: self.leases.holder_of(gpu) for gpu in self.inventory.gpus}

    def _try_take(self, choices: list[GpuChoice], holder: dict, blocked: set[str] = frozenset()) -> list[Lease]:
        """The first choice that can be had now, in order, skipping types older waiters want."""
        for choice in choices:
            types = self.inventory.counts() if choice.type == ANY else [choice.type]
            for gpu_type in types:
                if gpu_type in blocked:
                    continue
                taken: list[Lease] = []
                for gpu in self.inventory.of_type(gpu_type):
                    lease = self.leases.try_acquire(gpu, holder)
                    if lease is not None:
                        taken.append(lease)
                        if len(taken) == choice.count:
                            return taken
                for lease in taken:
                    lease.release()
        return []

    def _timeout_message(self, request: GpuRequest, waited: float, position: int) -> str:
        busy = []
        types = request.types(self.inventory)
        for gpu in self.inventory.gpus:
            if gpu.type in types:
                who = self.leases.holder_of(gpu)
                if who:
                    busy.append(f"GPU {gpu.index} ({gpu.type}) held by {who.get('owner', 'unknown')}")
        held = "; ".join(busy) or "none held right now"
        return (
            f"no GPU for {request} freed up within {waited:.0f} s "
            f"({position} request(s) ahead; {held}). "
            "Stop a container that holds one, or ask for another type or a longer timeout."
        )
