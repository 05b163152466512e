"""How busy each lease's GPUs are, sampled while held: for the usage log, for other users, for idle holders.

Every `c.Cellhop.usage_sample_interval` seconds, a thread of the control
plane takes one metric sample of the GPUs its containers hold (NVML on a real
card; on a simulated inventory, the CPU use of the container holding it,
control_plane.py) and:
- adds it to the container's allocation (its busy fraction goes in the usage
  log when the lease ends, scheduler.py);
- touches the lease files (a sign of life: a crashed holder's lease ends
  there) and writes in them since when the container has been idle, which
  other users' `%gpu` shows;
- flags an idle holder: a container that has held its GPUs for
  `idle_holder_after` seconds at under `idle_holder_busy` use, said in its
  view (the panel, `%gpu`) and as an event, once.
Without metrics (no GPU driver) only the busy fraction is missing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from ..container import Phase

log = logging.getLogger("cellhop")


class UsageSampler:
    """The sampling thread of one control plane (`close()` ends it)."""

    def __init__(self, control_plane, interval: float, idle_after: float, idle_busy: float):
        self.cp = control_plane
        self.interval = max(0.05, interval)
        self.idle_after = idle_after
        self.idle_busy = idle_busy
        self._windows: dict[str, deque] = {}  # container id -> (time, busy) samples of the last idle_after s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cellhop-usage", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample_once()
            except Exception:  # the log is a courtesy; sampling never takes the control plane down
                log.debug("cellhop: sampling GPU use failed", exc_info=True)

    def holding(self) -> list:
        return [c for c in self.cp.manager.list()
                if c.phase == Phase.READY and c.allocation is not None and c.allocation.leases]

    def sample_once(self, now: float | None = None) -> None:
        containers = self.holding()
        for gone in set(self._windows) - {c.id for c in containers}:
            del self._windows[gone]
        if not containers:
            return
        try:
            samples = {s["uuid"]: s for s in self.cp.sample_metrics()}
        except Exception as exc:  # noqa: BLE001 - no metrics: leases still live, only busy is unknown
            log.debug("cellhop: no GPU metrics for the usage log: %s", exc)
            samples = {}
        now = time.time() if now is None else now
        for container in containers:
            self._note_idle(container, now)
            utils = [samples[g.uuid]["utilization"] for g in container.gpus
                     if isinstance(samples.get(g.uuid, {}).get("utilization"), (int, float))]
            if not utils:
                continue
            busy = sum(utils) / len(utils) / 100.0
            container.allocation.sample(busy)
            window = self._windows.setdefault(container.id, deque())
            window.append((now, busy))
            while window and window[0][0] < now - self.idle_after:
                window.popleft()
            self._check_idle_holder(container, window, now)

    def _note_idle(self, container, now: float) -> None:
        idle_for = self.cp.manager.activity.idle_for(container.id, container.last_activity)
        idle_since = None if idle_for is None else now - idle_for
        for lease in container.allocation.leases:
            lease.touch()
            old = lease.holder.get("idle_since")
            if idle_since is not None and old is not None and abs(old - idle_since) < 2:
                continue  # the same idle stretch
            lease.note_idle(None if idle_since is None else round(idle_since, 1))

    def _check_idle_holder(self, container, window: deque, now: float) -> None:
        if container.idle_holder or not window:
            return
        since = min(lease.holder.get("since", now) for lease in container.allocation.leases)
        if now - since < self.idle_after or window[0][0] > now - self.idle_after + self.interval * 1.5:
            return  # not held that long, or not sampled over all of it
        mean = sum(b for _, b in window) / len(window)
        if mean >= self.idle_busy:
            return
        types = ", ".join(sorted({g.type for g in container.gpus}))
        container.idle_holder = (f"held {types} for {_duration(now - since)} at {mean * 100:.0f}% busy "
                                 f"(under {self.idle_busy * 100:.0f}%); stop it to let others have the GPU")
        log.warning("cellhop: container %s (%s) is an idle GPU holder: %s", container.id, container.spec.owner,
                    container.idle_holder)
        for lease in container.allocation.leases:
            lease.note_idle_holder(True)
        self.cp.manager.flag(container, idle_holder=container.idle_holder)

    def close(self) -> None:
        self._stop.set()


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
