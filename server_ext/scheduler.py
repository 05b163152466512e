"""Who gets which GPU: exclusive allocation with a fair queue shared by every process of every user.

A request that fits now takes its GPUs at once. One that does not fit waits
in a queue of ticket files (`queue/` of the host folder, host_dir.py), each
made and locked by its waiting process (host_files.py), so the queue is
shared by every notebook of every user on the host and a waiter that dies
leaves no ticket that counts. The order:
- within one user, first come first served per GPU type;
- across users, round robin: every user's first waiting request comes
  before anyone's second, and among those the user served longest ago goes
  first (each user's last grant is in `grants/`), so fifty requests of one
  user and one of another are served alternately.
A request may take a GPU of a type only when no request ahead of it wants
that type. A queued H100 request never blocks an A10G one, nor the A10G of a
younger fallback request "H100,A10G".

Limits (host_dir.HostSettings, the admin's, or this user's stricter own):
`max_gpus_per_user` caps the GPUs one user holds at once (a request past it
waits, and `make_room` may stop that user's own idle containers first);
`monthly_gpu_hours` refuses new requests once this month's use is past it.
Every grant and release goes in the usage log (usage_log.py).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from ..errors import GpuBudgetExceeded, GpuRequestError, QueueCancelled, QueueTimeout
from ..gpu_request import ANY, GpuChoice, GpuRequest, feasible_choices
from ..inventory import Inventory
from .host_dir import HostPlace, HostSettings, own_place, stricter
from .host_files import HeldFile, abandoned_own, listing, open_checked, read_live, read_object
from .leases import Lease, LeaseDirectory, user_name
from .paths import private_dir
from .scheduling import Allocation, GpuScheduler
from .usage_log import UsageLog

POLL_INTERVAL = 0.05
GRANT = "grant"


class _Ticket:
    """This waiter's place in the host-wide queue."""

    def __init__(self, queue_dir: Path, types: set[str], user: str):
        self.file = HeldFile(queue_dir, f"{time.time_ns():020d}", "ticket", {"types": sorted(types), "user": user})
        self.types = types

    @property
    def name(self) -> str:
        return self.file.name

    def close(self) -> None:
        self.file.close()


def live_tickets(queue_dir: Path) -> list[tuple[str, int, set[str]]]:
    """(name, uid, types wanted) of every valid live ticket, oldest first (a dead waiter's counts for
    nothing; its user's `recover` removes it)."""
    found = []
    for name in listing(queue_dir, "ticket"):
        live = read_live(queue_dir / name)
        if live is None:
            continue
        shared, value = live
        types = value.get("types")
        if isinstance(types, list) and all(isinstance(t, str) for t in types) and shared.subject.isdigit():
            found.append((name, shared.uid, set(types)))
    return found


def fair_order(tickets: list[tuple[str, int, set[str]]], last_grant: dict[int, float]) -> list[str]:
    """Ticket names in the order they are served: every user's n-th request before anyone's (n+1)-th;
    among those, the user whose last grant is oldest first; then the older ticket."""
    rank: dict[int, int] = {}
    keyed = []
    for name, uid, _ in tickets:  # oldest first, so a user's tickets get ranks 0, 1, 2...
        keyed.append(((rank.get(uid, 0), last_grant.get(uid, 0.0), name), name))
        rank[uid] = rank.get(uid, 0) + 1
    return [name for _, name in sorted(keyed)]


class Scheduler(GpuScheduler):
    """Allocates this host's GPUs exclusively, queueing fairly when none fits."""

    def __init__(self, inventory: Inventory, host: HostPlace | Path, poll_interval: float = POLL_INTERVAL,
                 private_root: Path | None = None, max_gpus_per_user: int | None = None,
                 monthly_gpu_hours: float | None = None):
        if not isinstance(host, HostPlace):  # one user's own folder (the embedded control plane's, tests')
            host = own_place(Path(host))
            private_root = private_root or host.root
        self.inventory = inventory
        self.host = host
        self.user = user_name()
        self.uid = os.getuid()
        private = private_dir(Path(private_root or host.root) / "lease-details")
        self.leases = LeaseDirectory(host.folder("leases"), private)
        self.queue_dir = host.folder("queue")
        self.grants_dir = host.folder("grants")
        self.usage = UsageLog(host.folder("usage"))
        self.poll_interval = poll_interval
        settings = host.settings or HostSettings()
        self.max_gpus = stricter(settings.for_user(self.user, "max_gpus_per_user"), max_gpus_per_user)
        self.monthly_hours = stricter(settings.for_user(self.user, "monthly_gpu_hours"), monthly_gpu_hours)
        self.make_room: Callable[[int], int] | None = None  # stops this user's idle holders; how many GPUs freed
        self._released = threading.Condition()
        self._grant: HeldFile | None = None
        self.capped = False  # the last try was held back by max_gpus_per_user
        self._usage_lock = threading.Lock()
        self.recover()

    # -- asking ------------------------------------------------------------------
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
        satisfy, GpuBudgetExceeded past this user's monthly GPU-hours, QueueTimeout when it
        waited too long, QueueCancelled when it was called off.
        """
        choices = feasible_choices(request, self.inventory)
        if not choices:
            return Allocation(request)
        self.check_cap(request)
        self.check_budget()
        start = time.monotonic()
        holder = {**holder, "pid": os.getpid(), "since": time.time()}
        leases = self._try_take(choices, holder, blocked=self.queued_types())
        if leases:
            return self._granted(request, leases, 0.0)
        ticket = _Ticket(self.queue_dir, request.types(self.inventory), self.user)
        try:
            last_position = None
            while True:
                if cancelled is not None and cancelled.is_set():
                    raise QueueCancelled(f"the request for {request} was called off while queued")
                position, blocked = self._ahead(ticket)
                if position != last_position and on_position is not None:
                    on_position(position)
                last_position = position
                leases = self._try_take(choices, holder, blocked)
                if leases:
                    return self._granted(request, leases, time.monotonic() - start)
                waited = time.monotonic() - start
                if timeout is not None and waited >= timeout:
                    raise QueueTimeout(self._timeout_message(request, waited, position))
                with self._released:
                    self._released.wait(self.poll_interval)
        finally:
            ticket.close()

    def _ahead(self, ticket: _Ticket) -> tuple[int, set[str]]:
        """How many live tickets are served before this one and want a type it could use, and which."""
        tickets = live_tickets(self.queue_dir)
        wants = {name: types for name, _, types in tickets}
        count, wanted = 0, set()
        for name in fair_order(tickets, self.last_grants()):
            if name == ticket.name:
                break
            if wants[name] & ticket.types:
                count += 1
                wanted |= wants[name] & ticket.types
        return count, wanted

    def _granted(self, request: GpuRequest, leases: list[Lease], waited: float) -> Allocation:
        now = time.time()
        with self._usage_lock:
            if self._grant is None:
                self._grant = HeldFile(self.grants_dir, str(self.uid), GRANT, {"t": now})
            else:
                self._grant.write({"t": now})
            for lease in leases:
                self.usage.started(lease.name, self.user, lease.gpu.uuid, lease.gpu.type,
                                   str(lease.holder.get("owner") or ""), str(lease.holder.get("label") or ""), now)
        return Allocation(request, leases, waited=waited)

    def release(self, allocation: Allocation) -> None:
        names = [lease.name for lease in allocation.leases if lease.held]
        busy = allocation.busy_fraction()
        allocation.release()
        now = time.time()
        with self._usage_lock:
            for name in names:
                self.usage.ended(name, now, busy)
        with self._released:
            self._released.notify_all()

    def wake(self) -> None:
        """Make every waiter of this process look again now (a GPU was freed, a wait was called off)."""
        with self._released:
            self._released.notify_all()

    # -- what the queue and the log say ----------------------------------------------
    def last_grants(self) -> dict[int, float]:
        """uid -> when that user was last granted a GPU (that user's own grant files say; a user can only
        make itself look served long ago, which is what a user never served is)."""
        grants: dict[int, float] = {}
        for name in listing(self.grants_dir, GRANT):
            opened = open_checked(self.grants_dir / name)
            if opened is None:
                continue
            fd, shared = opened
            try:
                t = (read_object(fd) or {}).get("t")
            finally:
                os.close(fd)
            if isinstance(t, (int, float)) and not isinstance(t, bool) and shared.subject == str(shared.uid):
                grants[shared.uid] = max(grants.get(shared.uid, 0.0), min(float(t), time.time()))
        return grants

    def used_this_month(self, now: float | None = None) -> float:
        """This user's GPU-hours since the start of this month (local time)."""
        now = time.time() if now is None else now
        since = month_start(now)
        return sum(use.hours(now, since) for use in self.usage.leases())

    def check_budget(self) -> None:
        if not self.monthly_hours:
            return
        used = self.used_this_month()
        if used >= self.monthly_hours:
            resets = datetime.fromtimestamp(next_month_start(time.time())).strftime("%Y-%m-%d %H:%M")
            raise GpuBudgetExceeded(
                f"{self.user} has used {used:.3g} of {self.monthly_hours:g} GPU-hours this month "
                f"(monthly_gpu_hours); new GPU requests are refused until the budget resets on {resets}. "
                "Running work goes on. Ask the admin for more, or run this without a GPU.")

    def recover(self) -> None:
        """What this user's processes that died left (at start, then every few seconds): the end of their
        leases goes in the usage log (their last sign of life), their queue tickets go, and of the grant
        files nobody holds only the newest stays."""
        for path, last_alive, _ in self.leases.stale_own():
            with self._usage_lock:
                self.usage.ended(path.name, last_alive, None, recovered=True)
            self.leases.remove_stale(path)
        for path, _, _ in abandoned_own(self.queue_dir, "ticket", self.uid):
            path.unlink(missing_ok=True)
        grants = abandoned_own(self.grants_dir, GRANT, self.uid, str(self.uid))
        for path, _, _ in sorted(grants, key=lambda found: found[1])[:-1]:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        with self._usage_lock:
            if self._grant is not None:
                self._grant.close(remove=False)  # it stays: when this user was last served
                self._grant = None
            self.usage.close()

    def queued_types(self) -> set[str]:
        """The GPU types that live queued requests wait for."""
        wanted: set[str] = set()
        for _, _, types in live_tickets(self.queue_dir):
            wanted |= types
        return wanted

    def holders(self) -> dict[str, dict | None]:
        """GPU uuid -> who holds it (None when free)."""
        return {gpu.uuid: self.leases.holder_of(gpu) for gpu in self.inventory.gpus}

    def check_cap(self, request: GpuRequest) -> None:
        """A request for more GPUs than one user may ever hold is refused at once."""
        if self.max_gpus and request.choices and min(c.count for c in request.choices) > self.max_gpus:
            raise GpuRequestError(f"{request} asks for more GPUs than one user may hold at once "
                                  f"(max_gpus_per_user = {self.max_gpus})")

    def _room_under_cap(self, count: int) -> bool:
        """Whether this user may take `count` more GPUs (max_gpus_per_user), after its own idle containers
        yield where that is what it takes."""
        if not self.max_gpus:
            return True
        over = self.leases.held_by().get(self.uid, 0) + count - self.max_gpus
        if over > 0 and self.make_room is not None and self.make_room(over) > 0:
            over = self.leases.held_by().get(self.uid, 0) + count - self.max_gpus
        self.capped = over > 0
        return over <= 0

    def _try_take(self, choices: list[GpuChoice], holder: dict, blocked: set[str] = frozenset()) -> list[Lease]:
        """The first choice that can be had now, in order, skipping types older waiters want."""
        for choice in choices:
            if not self._room_under_cap(choice.count):
                continue
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
        if self.capped:
            held += (f"; {self.user} already holds the most GPUs one user may hold at once "
                     f"(max_gpus_per_user = {self.max_gpus})")
        return (
            f"no GPU for {request} freed up within {waited:.0f} s "
            f"({position} request(s) ahead; {held}). "
            "Stop a container that holds one, or ask for another type or a longer timeout."
        )


def month_start(now: float) -> float:
    """The start of the month `now` is in (local time)."""
    day = datetime.fromtimestamp(now)
    return day.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def next_month_start(now: float) -> float:
    day = datetime.fromtimestamp(month_start(now))
    return (day.replace(year=day.year + 1, month=1) if day.month == 12 else day.replace(month=day.month + 1)).timestamp()
