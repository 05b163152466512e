"""Fan-out of the control plane's events, and GPU metric sampling on demand.

Subscribers get lifecycle events (containers, later images and volumes) as
they happen. A subscriber that asks for metrics gets a `metrics` event every
`interval` seconds while it is not paused. One sampling thread serves them
all at the fastest interval asked; with no active metrics subscriber it
samples nothing and waits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..events import check_interval

log = logging.getLogger("cellhop")

Listener = Callable[[dict], None]


class Subscription:
    """One listener's view of the bus. `configure`, `pause`, `resume`, `close` change it at any time."""

    def __init__(self, bus: EventBus, listener: Listener, interval: float | None, paused: bool = False):
        self._bus = bus
        self.listener = listener
        self.interval = None if interval is None else check_interval(interval)
        self.paused = paused
        self.next_due = time.monotonic()
        self.closed = False

    @property
    def wants_metrics(self) -> bool:
        return self.interval is not None and not self.paused and not self.closed

    def configure(self, interval: float) -> None:
        self.interval = check_interval(interval)
        self.next_due = time.monotonic()
        self._bus._changed()

    def pause(self) -> None:
        self.paused = True
        self._bus._changed()

    def resume(self) -> None:
        self.paused = False
        self.next_due = time.monotonic()
        self._bus._changed()

    def close(self) -> None:
        self.closed = True
        self._bus._remove(self)

    def deliver(self, event: dict) -> None:
        if self.closed:
            return
        try:
            self.listener(event)
        except Exception:  # one broken listener must not starve the others
            log.exception("cellhop: event listener failed")


class EventBus:
    """Thread-safe publish/subscribe with a metrics sampler started on demand."""

    def __init__(self, sample_metrics: Callable[[], list[dict]]):
        self._sample_metrics = sample_metrics
        self._subs: list[Subscription] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.samples_taken = 0  # for tests and the overhead benchmark

    def subscribe(self, listener: Listener, metrics_interval: float | None = None,
                  paused: bool = False) -> Subscription:
        sub = Subscription(self, listener, metrics_interval, paused)
        with self._cond:
            self._subs.append(sub)
            self._ensure_thread()
            self._cond.notify_all()
        return sub

    def publish(self, event: dict) -> None:
        with self._cond:
            subs = list(self._subs)
        for sub in subs:
            sub.deliver(event)

    def _remove(self, sub: Subscription) -> None:
        with self._cond:
            if sub in self._subs:
                self._subs.remove(sub)
            self._cond.notify_all()

    def _changed(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _ensure_thread(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="cellhop-metrics", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    active = [s for s in self._subs if s.wants_metrics]
                    if not active:
                        self._cond.wait()  # nobody listens: sample nothing
                        continue
                    wait = min(s.next_due for s in active) - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
            self._sample_and_deliver()

    def _sample_and_deliver(self) -> None:
        try:
            gpus = self._sample_metrics()
        except Exception as exc:
            log.warning("cellhop: GPU metrics could not be sampled: %s", exc)
            gpus = None
        self.samples_taken += 1
        now = time.monotonic()
        event = {"type": "metrics", "time": time.time(), "gpus": gpus or []}
        if gpus is None:
            event["error"] = "GPU metrics could not be read; see the server log"
        with self._cond:
            due = [s for s in self._subs if s.wants_metrics and s.next_due <= now + 0.005]
            for s in due:
                # keep the cadence, but never try to catch up on missed ticks
                s.next_due = max(s.next_due + s.interval, now + s.interval * 0.5)
        for s in due:
            s.deliver(event)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._subs.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
