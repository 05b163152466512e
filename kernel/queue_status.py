"""What work waiting for a GPU shows, live: its place in the queue and who holds the GPUs it waits for.

A `%%remote` cell's status line (or a quiet line for `cellhop.remote` calls)
reads, while the request is queued and refreshed every few seconds:

    ⏳ queued for A10G · next in line · held by: kernel 1a2b3c4d (%%remote, container 0c1d2e3f,
    idle 2 min) · interrupt the kernel to stop waiting

The holders come from the control plane (`holders()`, and `containers()` for
what a container is and how long it has idled: `idle_seconds`); a container
of another control plane (another notebook's embedded one) shows how long it
has held the GPU instead.
"""

from __future__ import annotations

import threading
import time

from ..gpu_request import GpuRequest

REFRESH = 2.0  # seconds between two looks while queued


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def holders_text(control, request: str, owner: str) -> str:
    """Who holds the GPUs `request` could use, in words ('' when nobody holds one)."""
    inv = control.inventory()
    try:
        wanted = GpuRequest.parse(request).types(inv)
    except Exception:
        wanted = {g.type for g in inv.gpus}
    holders = control.holders()
    views = {c["id"]: c for c in control.containers()}
    by_container: dict[str, list] = {}
    for gpu in inv.gpus:
        holder = holders.get(gpu.uuid)
        if gpu.type in wanted and holder:
            by_container.setdefault(holder.get("container") or "?", []).append((gpu, holder))
    parts = []
    now = time.time()
    for container, held in by_container.items():
        holder = held[0][1]
        who = "this notebook" if holder.get("owner") == owner else (holder.get("owner") or "someone")
        view = views.get(container, {})
        what = [view["label"]] if view.get("label") else []
        what.append(f"container {container[:8]}")
        if view.get("phase") == "ready":
            idle = view.get("idle_seconds")
            what.append("busy" if idle is None else f"idle {_duration(idle)}")
        elif holder.get("since"):
            what.append(f"holding it for {_duration(now - holder['since'])}")
        gpus = ", ".join(f"{g.type} [{g.index}]" for g, _ in held)
        parts.append(f"{who} ({', '.join(what)}) holds {gpus}")
    return "; ".join(parts)


class QueueStatus:
    """Feeds a StatusLine from a starting container's events, and keeps it live while it is queued."""

    def __init__(self, control, status, request: str, owner: str, announce_start: bool = True):
        self.control = control
        self.announce_start = announce_start  # False: say nothing unless it queued (a function's call)
        self.status = status
        self.request = request
        self.owner = owner
        self._position = None
        self._container: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def on_event(self, event: dict) -> None:
        phase = event.get("phase")
        if phase != "queued":
            self._stop.set()
            if phase == "starting" and (self.announce_start or self._thread is not None):
                self.status.show(f"🚀 starting a container for {self.request}…")
            return
        with self._lock:
            self._position = event.get("queue_position")
            self._container = event.get("id")
            start = self._thread is None
            if start:
                self._thread = threading.Thread(target=self._refresh, name="cellhop-queue-status", daemon=True)
        self.show()
        if start:
            self._thread.start()

    def text(self) -> str:
        position = self._position
        place = ("next in line" if not position else f"{position} request{'s' if position > 1 else ''} ahead")
        try:
            held = holders_text(self.control, self.request, self.owner)
        except Exception:  # the queue position is still worth showing
            held = ""
        return (f"⏳ queued for {self.request} · {place}" + (f" · held by: {held}" if held else "")
                + " · interrupt the kernel to stop waiting")

    def show(self) -> None:
        if not self._stop.is_set():
            self.status.show(self.text())

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH):
            try:
                mine = next((c for c in self.control.containers() if c["id"] == self._container), None)
            except Exception:
                mine = None
            if mine is None or mine.get("phase") != "queued":
                return
            self.show()
