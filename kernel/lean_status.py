"""Busy and idle of shipped requests, published only when someone could tell the difference.

Inside the container (container_kernel.py). ipykernel publishes `busy` before
and `idle` after every shell request; for a trivial `f.remote()` those two
IOPub messages cost as much as the call itself (each a hand-off to the
IOPub thread). The notebook no longer needs them (a reply says how many
outputs to wait for: output_tracking.py), but the control plane does: its
activity watch (server_ext/kernel_activity.py) counts a container with a
request in progress as busy, whatever its idle timeout, and counts idleness
from the last status it heard.

So for shipped requests (cellhop_apply_request, cellhop_execute_request):
- `busy` is published at once for the first request after a quiet spell
  (none ended in the last PERIOD): an idle container turns busy where the
  control plane sees it, before it could stop it as idle;
- within a burst, `busy` is published once the request has run for PERIOD:
  a call that long is held busy as before; a shorter one is over before
  anyone would look (the container was at work less than PERIOD ago, which
  nothing counts as idle: container.MIN_IDLE, which is more than PERIOD);
- `idle` is published at the end when `busy` was; otherwise at most PERIOD
  later, by the watch thread (the last request of a burst of short ones, so
  the control plane's idleness counts from at most PERIOD after the real
  end, never before it).
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("cellhop")

LEAN = frozenset({"cellhop_apply_request", "cellhop_execute_request"})
PERIOD = 0.2  # seconds


class LeanStatus:
    """Defers the status messages of shipped requests (see the module docstring).

    `publish(state, parent)` sends one status message; it is called from the kernel's main thread
    or from the watch thread (ipykernel's IOPub socket takes sends from any thread).
    """

    def __init__(self, publish, period: float = PERIOD):
        self.publish = publish
        self.period = period
        self._lock = threading.Lock()
        self._running: list | None = None  # [parent, started (monotonic), busy published]
        self._deferred: dict | None = None  # the parent of a finished request whose idle is still due
        self._last_end: float | None = None  # when the last request ended (monotonic)
        self._awake = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def applies(parent) -> bool:
        try:
            return parent["header"]["msg_type"] in LEAN
        except (KeyError, TypeError):
            return False

    def begin(self, parent: dict) -> None:
        with self._lock:
            now = time.monotonic()
            quiet = self._last_end is None or now - self._last_end > self.period
            self._running = [parent, now, quiet]
            if quiet:  # the first request after a quiet spell: busy at once (it was idle; now it is not)
                self._say("busy", parent)
            if not self._awake:
                self._awake = True
                self._ensure_thread()
                self._wake.set()

    def end(self, parent: dict) -> None:
        with self._lock:  # published under the lock: never before the watch thread's `busy` of the same request
            self._last_end = time.monotonic()
            running, self._running = self._running, None
            busy_published = running is not None and running[2] and _msg_id(running[0]) == _msg_id(parent)
            if not busy_published:
                self._deferred = parent
                return
            self._say("idle", parent)

    def _say(self, state: str, parent: dict) -> None:
        try:
            self.publish(state, parent)
        except Exception:  # a closed socket at shutdown: nothing left to tell, and the request goes on
            log.debug("cellhop: publishing %s failed", state, exc_info=True)

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cellhop-lean-status", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            while True:
                time.sleep(self.period)
                due = []
                with self._lock:  # sent in order with `end`'s idle (ipykernel queues IOPub sends in call order)
                    if self._deferred is not None:
                        due.append(("idle", self._deferred))
                        self._deferred = None
                    running = self._running
                    if running is not None and not running[2] and time.monotonic() - running[1] >= self.period:
                        running[2] = True
                        due.append(("busy", running[0]))
                    if not due and running is None:  # all told: sleep until the next request
                        self._awake = False
                        self._wake.clear()
                        break
                    for state, parent in due:
                        self._say(state, parent)


def _msg_id(parent) -> str | None:
    try:
        return parent["header"]["msg_id"]
    except (KeyError, TypeError):
        return None
