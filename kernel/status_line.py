"""The small line at the top of a `%%remote` cell: where it ran, how long it queued, started and ran."""

from __future__ import annotations

import html
import time
import uuid

_COLORS = {"failed": "var(--jp-error-color1, #c62828)", "done": "var(--jp-success-color1, #2e7d32)"}


class StatusLine:
    """Shown once at the top of the cell, with a display id, and updated in place as phases pass.

    Published straight on the output sink (one small message), not through
    IPython's display formatters: it is on the path of every warm cell.
    """

    def __init__(self, sink=None, parent: dict | None = None):
        self._sink = sink  # None: show nothing (outside a kernel)
        self._parent = parent or {}
        self._display_id = uuid.uuid4().hex
        self._shown = False
        self.text = ""
        self.state = "pending"
        self.container_id: str | None = None  # set while the cell's container holds a GPU: offers the monitor

    def _content(self) -> dict:
        color = _COLORS.get(self.state, "var(--jp-ui-font-color2, #666)")
        markup = (f'<div class="cellhop-status" style="font-size:0.85em;color:{color};'
                  f'font-family:var(--jp-ui-font-family,sans-serif)">{html.escape(self.text)}{self._monitor_hint()}</div>')
        return {"data": {"text/plain": self.text, "text/html": markup}, "metadata": {},
                "transient": {"display_id": self._display_id}}

    def monitor_command(self) -> str | None:
        """The line magic that opens a GpuMonitor of this container's GPUs alone."""
        return f"%gpu --monitor {self.container_id}" if self.container_id else None

    def _monitor_hint(self) -> str:
        """The way to this container's GPUs alone, live: `%gpu --monitor <container>` in the notebook;
        a click in JupyterLab (cellhop's panel picks up data-cellhop-container)."""
        if not self.container_id:
            return ""
        cid, command = html.escape(self.container_id), html.escape(self.monitor_command())
        return (f' <span class="cellhop-status-monitor" data-cellhop-container="{cid}" '
                f'data-cellhop-command="{command}" style="cursor:pointer" '
                f'title="Live metrics of this container\'s GPUs: run {command}, or click to open '
                f'cellhop\'s panel">· 📈 <code>{command}</code></span>')

    def show(self, text: str, state: str = "pending") -> None:
        self.text, self.state = text, state
        if self._sink is None:
            return
        msg_type = "update_display_data" if self._shown else "display_data"
        self._shown = True
        self._sink.publish(msg_type, self._content(), {}, [], self._parent)


def describe_gpus(container: dict) -> str:
    gpus = container.get("gpus") or []
    if not gpus:
        return "CPU only"
    types = {g["type"] for g in gpus}
    label = " + ".join(sorted(types)) + (f" ×{len(gpus)}" if len(gpus) > 1 else "")
    return label + (" (simulated)" if gpus[0].get("simulated") else "")


def progress_text(event: dict, request: str) -> str:
    """A phase event of a starting container, as the status line says it."""
    phase = event.get("phase")
    if phase == "queued":
        ahead = event.get("queue_position")
        if ahead:
            return f"⏳ queued for {request}: {ahead} request(s) ahead"
        return f"⏳ waiting for {request}"
    if phase == "starting":
        return f"🚀 starting a container for {request}…"
    return f"{phase}…"


def finished_text(container: dict, ran: float, started: float | None, failed: bool = False,
                  cost: float | None = None) -> str:
    """`cost`: what the cell's GPU time cost at the prices set (None: no price, nothing said)."""
    parts = [f"{'✗ failed' if failed else '✓ ran'} on container {container['id']}", describe_gpus(container)]
    queued = container.get("queued_seconds")
    if started is not None:
        if queued:
            parts.append(f"queued {queued:.1f} s")
        parts.append(f"started in {started:.2f} s")
    parts.append(f"ran {ran:.2f} s")
    if cost is not None:
        from ..usage_text import money

        parts.append(f"cost {money(cost)}")
    parts.append(time.strftime("at %H:%M:%S"))
    return " · ".join(parts)
