"""A notebook's warm containers, shared by its `%%remote` cells and its `cellhop.remote` functions.

One pool per notebook (per process outside IPython). Containers are kept by
run spec (`RunSpec.key()`) and user: the notebook's cells share one warm
container per run spec, whose state persists from cell to cell; each remote
function has its own (so two functions run side by side, as before), and
`.map` may add more of one spec, only where GPUs are free now.

One rule for the notebook's own containers: a notebook never queues behind
itself. When a new container finds no free GPU of a type it needs, this
notebook's idle containers holding that type yield: they are stopped (least
recently used first, only as many as it takes) and the notebook is told so.
A container with work in flight is never stopped.

Work holds a Lease while it runs: the container's primary connection for
the thread that uses the container (the notebook's), a connection of its
own for any other thread (`--async`, `.spawn`, user threads). A leased
container counts as busy. Nothing here asks the control plane while a
container is warm: its death is noticed from the wire (container_watch.py).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field

from ..errors import QueueTimeout
from .container_session import ContainerSession
from .run_spec import RunSpec
from .status_line import StatusLine, describe_gpus

CELLS = "%%remote"  # the pool user that %%remote cells are


@dataclass(eq=False)
class _Entry:
    """One warm container of the pool."""

    key: tuple  # (run spec key, user)
    session: ContainerSession  # its primary connection
    thread: int  # the thread whose work uses the primary connection
    leases: int = 0
    primary_in_use: bool = False
    last_used: float = field(default_factory=time.monotonic)

    @property
    def gpus(self) -> list[dict]:
        return self.session.container.get("gpus") or []


class Lease:
    """A container held for one piece of work: `session` to run it on; `started` is the seconds the
    container took to start (None when it was warm). Close it (or leave its `with`) when done."""

    def __init__(self, pool: ContainerPool, entry: _Entry, session: ContainerSession, started: float | None,
                 primary: bool):
        self.pool = pool
        self.entry = entry
        self.session = session
        self.started = started
        self.primary = primary
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.pool._give_back(self)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ContainerPool:
    """The warm containers of one notebook (see the module docstring)."""

    def __init__(self, control, sink, comm_proxies=None, owner: str = "notebook", pull: str = "all"):
        self.control = control
        self.sink = sink
        self.comm_proxies = comm_proxies
        self.owner = owner  # who the control plane shows as holding them: "kernel 1a2b3c4d"
        self.pull = pull  # the notebook's floor for what may come back (c.Cellhop.pull)
        self._entries: list[_Entry] = []
        self._lock = threading.RLock()
        self._starting: dict[tuple, threading.Lock] = {}
        self._hinted = False

    # -- taking containers ------------------------------------------------------------
    def lease(self, spec: RunSpec, user: str, label: str, *, fresh: bool = False, on_event=None,
              own_connection: bool = False) -> Lease:
        """The warm container for `spec` (its first one), started when there is none (`fresh`: a new one
        in place of it). `own_connection`: for work that goes on in another thread."""
        key = (spec.key(), user)
        with self._start_lock(key):  # two threads wanting the same new container start it once
            while True:
                entry = self._first(key)
                if entry is not None and fresh:
                    self._discard(entry, reason="--fresh")
                    entry, fresh = None, False
                started = None
                if entry is None:
                    t0 = time.monotonic()
                    entry = self._start(key, spec, label, on_event=on_event or self._queue_status(spec), make_room=True)
                    started = time.monotonic() - t0
                lease = self._lease(entry, started, own_connection)
                if lease is not None:  # else it was stopped for another request just now: again
                    return lease

    def leases(self, spec: RunSpec, user: str, label: str, wanted: int) -> list[Lease]:
        """Up to `wanted` containers for `spec` (`.map`): the first as `lease()` gives it, more only where
        a GPU is free now (extra containers never stop the notebook's others, nor queue)."""
        leases = [self.lease(spec, user, label)]
        key = leases[0].entry.key
        try:
            with self._lock:
                others = [e for e in self._entries if e.key == key and e is not leases[0].entry and e.session.alive()]
            leases += [lease for e in others[:wanted - 1] if (lease := self._lease(e, None, False))]
            missing = wanted - len(leases)
            if missing > 0:
                started: list[_Entry] = []

                def start_one():
                    try:
                        started.append(self._start(key, spec, label, queue_timeout=0.01, make_room=False))
                    except QueueTimeout:
                        pass

                threads = [threading.Thread(target=start_one, name="cellhop-start") for _ in range(missing)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                for entry in started:
                    entry.thread = threading.get_ident()
                    if (lease := self._lease(entry, None, False)) is not None:
                        leases.append(lease)
        except BaseException:
            for lease in leases:
                lease.close()
            raise
        return leases

    def _start_lock(self, key: tuple) -> threading.Lock:
        with self._lock:
            return self._starting.setdefault(key, threading.Lock())

    def _first(self, key: tuple) -> _Entry | None:
        """The first live container for `key`; containers seen to have ended are forgotten."""
        ended, found = [], None
        with self._lock:
            for entry in self._entries:
                if entry.key != key:
                    continue
                if entry.session.alive():
                    found = entry
                    break
                if entry.leases == 0:
                    ended.append(entry)
        for entry in ended:
            self._forget(entry)
        return found

    def _lease(self, entry: _Entry, started: float | None, own_connection: bool) -> Lease | None:
        """A lease on `entry`, or None when it has just left the pool."""
        with self._lock:
            if entry not in self._entries:
                return None
            entry.leases += 1
            primary = not own_connection and not entry.primary_in_use and entry.thread == threading.get_ident()
            entry.primary_in_use = entry.primary_in_use or primary
        try:
            session = entry.session if primary else entry.session.secondary()
        except BaseException:
            with self._lock:
                entry.leases -= 1
                entry.primary_in_use = entry.primary_in_use and not primary
            raise
        return Lease(self, entry, session, started, primary)

    def _give_back(self, lease: Lease) -> None:
        if not lease.primary:
            lease.session.close()
        entry = lease.entry
        with self._lock:
            entry.leases -= 1
            if lease.primary:
                entry.primary_in_use = False
            entry.last_used = time.monotonic()
            gone = entry.leases == 0 and not entry.session.alive()
        if gone:  # it ended (or was stopped) during the work: the next work gets a fresh one
            self._forget(entry)

    def _start(self, key: tuple, spec: RunSpec, label: str, queue_timeout: float | None = None, on_event=None,
               make_room: bool = True) -> _Entry:
        if make_room:
            self._make_room(spec)
        container = self.control.start(spec.container_spec(self.owner, label, queue_timeout), on_event=on_event)
        self._hint_imports()
        try:
            session = ContainerSession(container, self.control, self.sink, self.comm_proxies, self.pull)
        except BaseException:
            self.control.stop(container["id"], reason="the notebook could not connect to it")
            raise
        entry = _Entry(key, session, threading.get_ident())
        with self._lock:
            self._entries.append(entry)
        return entry

    # -- keep-warm: containers started ahead and never scaled down ------------------------
    def keep_warm(self, spec: RunSpec, user: str, label: str, wanted: int) -> threading.Thread | None:
        """Make `user` have `wanted` containers for `spec` (started in the background, queued for their GPUs
        like any), or with 0, stop its idle ones; says plainly what that holds. Returns the starting thread."""
        key = (spec.key(), user)
        with self._lock:
            have = [e for e in self._entries if e.key == key and e.session.alive()]
        for entry in have:  # the ones it has keep (or lose) the never-idle-stopped setting as well
            try:
                self.control.touch(entry.session.id, 0 if wanted > 0 else spec.idle_timeout)
            except Exception:  # it ended meanwhile: the next work starts another
                pass
        if wanted <= 0:
            for entry in have:
                self._discard(entry, reason="keep-warm turned off", only_if_idle=True)
            return None
        missing = wanted - len(have)
        gpus = "no GPU" if spec.gpu.cpu_only else f"{spec.gpu}"
        self._note(f"cellhop: keeping {wanted} container(s) of {label} warm with {gpus}: "
                   + ("" if spec.gpu.cpu_only else "each holds its GPU while idle, so no one else can use it: "
                      f"{24 * wanted * spec.gpu.choices[0].count} GPU-hours a day, ")
                   + "until keep-warm is set to 0, the function is shut down or this kernel ends.")
        if missing <= 0:
            return None
        thread_id = threading.get_ident()  # the notebook's: it uses their primary connections

        def start():
            for _ in range(missing):
                try:
                    with self._start_lock(key):
                        entry = self._start(key, spec, label, make_room=False)
                    entry.thread = thread_id
                except Exception as exc:  # told, not raised: nobody waits on this thread
                    self._note(f"cellhop: a keep-warm container of {label} did not start: {exc}")
                    return

        thread = threading.Thread(target=start, name="cellhop-keep-warm", daemon=True)
        thread.start()
        return thread

    # -- the one rule: this notebook's idle containers yield to its new requests -------
    def _make_room(self, spec: RunSpec) -> None:
        """When no GPU `spec` could run on is free, stop this notebook's idle containers holding such
        GPUs (least recently used first) until one would be; never one with work in flight."""
        if spec.gpu.cpu_only:
            return
        inv = self.control.inventory()
        wanted = spec.gpu.types(inv)
        holders = self.control.holders()
        free = Counter({t: 0 for t in wanted})
        for g in inv.gpus:
            if g.type in wanted and not holders.get(g.uuid):
                free[g.type] += 1

        def enough() -> bool:
            return any(free[c.type] >= c.count if c.type in free else c.type == "any" and sum(free.values()) >= c.count
                       for c in spec.gpu.choices)

        if enough():
            return
        with self._lock:
            idle = sorted((e for e in self._entries if e.leases == 0 and e.session.alive()
                           and any(g["type"] in wanted for g in e.gpus)), key=lambda e: e.last_used)
        for entry in idle:
            if not self._discard(entry, reason=f"its GPU was needed for {spec.gpu} by the same notebook",
                                 only_if_idle=True):
                continue  # taken for work meanwhile: it stays
            self._note(f"cellhop: remote state lost: this notebook's idle container {entry.session.id} "
                        f"({describe_gpus(entry.session.container)}) was stopped to free its GPU for {spec.gpu} "
                        "(work with other settings needs a container of its own, and a notebook never waits for "
                        "itself); what lived only in it (values not brought back, models on its GPU) is gone.")
            for g in entry.gpus:
                if g["type"] in wanted:
                    free[g["type"]] += 1
            if enough():
                return

    def _hint_imports(self) -> None:
        """Once: tell the control plane which heavy libraries this notebook imported, so standby containers
        of the default image it starts from now on have them loaded (it keeps only well-known ones)."""
        if self._hinted:
            return
        self._hinted = True
        import sys

        from ..image_spec import HINTABLE

        heavy = sorted(m for m in HINTABLE if m in sys.modules)
        if heavy:
            try:
                self.control.hint_preload(heavy)
            except Exception:  # a hint is a courtesy
                pass

    def _queue_status(self, spec: RunSpec):
        """Events of a start for a caller that shows none (a function's call): a line in the cell while it
        waits for a GPU, with who holds it (queue_status.py)."""
        from .queue_status import QueueStatus

        status = StatusLine(self.sink, self.sink.current_parent())
        return QueueStatus(self.control, status, str(spec.gpu), self.owner, announce_start=False).on_event

    def _note(self, text: str) -> None:
        """Tell the user what the pool did on its own: a quiet line in the cell, as the status line is
        (not a warning on stderr, and not mixed into the cell's own stdout)."""
        try:
            StatusLine(self.sink, self.sink.current_parent()).show(text, "note")
        except Exception:  # telling is a courtesy
            pass

    # -- letting go -----------------------------------------------------------------
    def _forget(self, entry: _Entry) -> None:
        with self._lock:
            if entry in self._entries:
                self._entries.remove(entry)
        entry.session.close()

    def _discard(self, entry: _Entry, reason: str, only_if_idle: bool = False) -> bool:
        """Stop a container of the pool (its remote state goes with it); `only_if_idle`: unless work
        holds it. Whether it was stopped here."""
        with self._lock:
            if entry not in self._entries or (only_if_idle and entry.leases):
                return False
            self._entries.remove(entry)
        alive = entry.session.alive()
        entry.session.close()
        if alive:
            self.control.stop(entry.session.id, reason=reason)
        return True

    def discard(self, container_id: str, reason: str) -> None:
        with self._lock:
            entries = [e for e in self._entries if e.session.id == container_id]
        for entry in entries:
            self._discard(entry, reason)

    def release(self, user: str, reason: str) -> None:
        """`user` is done with its containers: stop them."""
        with self._lock:
            mine = [e for e in self._entries if e.key[1] == user]
        for entry in mine:
            self._discard(entry, reason)

    def shutdown(self, reason: str = "notebook kernel shut down") -> None:
        with self._lock:
            entries = list(self._entries)
        for entry in entries:
            self._discard(entry, reason)

    # -- views ----------------------------------------------------------------------
    def warm(self, spec: RunSpec, user: str) -> bool:
        """Whether `user` has a live container for `spec` (asks nobody)."""
        key = (spec.key(), user)
        with self._lock:
            return any(e.key == key and e.session.alive() for e in self._entries)

    def sessions(self, user: str | None = None) -> dict:
        """{(run spec key, user, n): primary session} of the live containers (of `user`'s, if given)."""
        with self._lock:
            found, count = {}, Counter()
            for entry in self._entries:
                if entry.session.alive() and (user is None or entry.key[1] == user):
                    found[(*entry.key, count[entry.key])] = entry.session
                    count[entry.key] += 1
            return found


_process_pools: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_process_lock = threading.Lock()


def process_pool(control) -> ContainerPool:
    """The pool of code that runs outside IPython (a script): one per control plane client."""
    import os
    import socket

    from .output_relay import ConsoleSink

    with _process_lock:
        pool = _process_pools.get(control)
        if pool is None:
            pool = _process_pools[control] = ContainerPool(control, ConsoleSink(),
                                                           owner=f"process {os.getpid()} on {socket.gethostname()}")
        return pool
