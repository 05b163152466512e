"""`GpuMonitor`: the host's GPUs, live, in a notebook.

One row per GPU (type, holder, utilization, memory, power, temperature) as numbers
and as sparklines of the last minutes. It reads the control plane's event stream
through this kernel's control-plane client (the server's over HTTP, or the embedded
one in plain Jupyter and nbclient): the same samples the JupyterLab panel shows, no
second NVML poller.

Samples travel as anywidget custom messages, only the new ones each tick
(`{"type": "samples", "time", "samples": {uuid: readings}}`); the front end
(static/gpu_monitor.js, shipped in the package) keeps the sparklines' ring
buffer itself. The model's state stays small: the GPUs and the newest sample
of each (`latest`, also what plain nbclient users read). The kernel keeps a
ring buffer of the last `history_seconds` too, sent once to a front end that
attaches late and says "hello" (`{"type": "history", "history": {...}}`), and
readable in Python as `.history`.
"""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path

import anywidget
import traitlets

from ..events import MAX_INTERVAL, MIN_INTERVAL
from ..inventory import SIMULATED_HINT

_STATIC = Path(__file__).parent / "static"
_READINGS = ("utilization", "memory_used", "power_w", "temperature_c")
_HOLDING = {"starting", "ready", "stopping"}


class GpuMonitor(anywidget.AnyWidget):
    """Live GPU metrics. `GpuMonitor(interval=0.5)`, `GpuMonitor(container="3f2a")` for the
    GPUs of one container; `.paused = True` (or the Pause button) stops the updates;
    `.close()` ends its subscription."""

    _esm = _STATIC / "gpu_monitor.js"
    _css = _STATIC / "gpu_monitor.css"

    # -- synced state (what the front end draws) ----------------------------------------
    gpus = traitlets.List(help="[{uuid, index, type, simulated, memory_total, node, holder}] of the GPUs shown "
                                 "(node: the Ray node's IP; None on the local runtime)").tag(sync=True)
    latest = traitlets.Dict(help="uuid -> the newest sample of that GPU (the history goes by custom messages)"
                            ).tag(sync=True)
    interval = traitlets.Float(1.0, help="Seconds between samples (0.1 to 60)").tag(sync=True)
    paused = traitlets.Bool(False, help="No samples while paused").tag(sync=True)
    history_seconds = traitlets.Float(300.0, help="How far back the sparklines go").tag(sync=True)
    simulated = traitlets.Bool(False, help="The inventory is simulated (no real GPU)").tag(sync=True)
    title = traitlets.Unicode("GPUs").tag(sync=True)
    message = traitlets.Unicode("", help="Why nothing is shown, or what went wrong").tag(sync=True)
    samples_received = traitlets.Int(0).tag(sync=True)

    def __init__(self, interval: float = 1.0, *, container: str | dict | None = None,
                 gpus: list | None = None, history_seconds: float = 300.0, paused: bool = False,
                 control=None, **kwargs):
        """`container`: show only that container's GPUs (its id, a unique prefix of it, or its dict);
        `gpus`: only these GPUs (uuids or indices); `control`: a ControlPlaneClient (default: this
        kernel's)."""
        super().__init__(interval=interval, history_seconds=history_seconds, paused=paused, **kwargs)
        if control is None:
            from ..kernel.control_client import get_control_plane

            control = get_control_plane()
        self._control = control
        self._lock = threading.RLock()
        self._container_id: str | None = None
        self._only: set | None = None
        if container is not None:
            self._container_id, self._only = self._container_gpus(container)
            self.title = f"GPUs of container {self._container_id[:8]}"
        elif gpus is not None:
            self._only = set(gpus)
        self._all_gpus: list[dict] = []
        self._ring: deque = deque()  # (time, {uuid: readings}) of the last history_seconds
        self.on_msg(self._on_front_end_message)
        self._subscription = None
        self._subscription = control.subscribe(self._on_event, metrics_interval=self.interval, paused=self.paused)

    # -- which GPUs ----------------------------------------------------------------------
    def _container_gpus(self, container) -> tuple[str, set]:
        if isinstance(container, dict):
            return container["id"], {g["uuid"] for g in container.get("gpus") or []}
        wanted = str(container)
        found = [c for c in self._control.containers() if c["id"].startswith(wanted)]
        if len(found) != 1:
            what = "no container" if not found else f"{len(found)} containers"
            raise ValueError(f"{what} of this control plane has an id starting with {wanted!r}; "
                             "give the id the %%remote status line shows")
        c = found[0]
        return c["id"], {g["uuid"] for g in c.get("gpus") or []}

    def _shown(self, gpu: dict) -> bool:
        return self._only is None or gpu["uuid"] in self._only or gpu.get("index") in self._only

    # -- events --------------------------------------------------------------------------
    def _on_event(self, event: dict) -> None:
        kind = event.get("type")
        with self._lock, self.hold_sync():
            if kind == "hello":
                self._on_hello(event)
            elif kind == "container":
                self._on_container(event.get("container") or {})
            elif kind == "metrics":
                self._on_metrics(event)

    def _on_hello(self, event: dict) -> None:
        view = event.get("gpus") or {}
        self._all_gpus = [{"uuid": g["uuid"], "index": g["index"], "type": g["type"],
                           "simulated": bool(g.get("simulated")), "memory_total": g.get("memory_total"),
                           "node": g.get("node") or None, "holder": _holder_text(g.get("holder")),
                           "holder_container": (g.get("holder") or {}).get("container")}
                          for g in view.get("gpus") or []]
        self.simulated = bool(view.get("simulated"))
        self._publish_gpus()
        if not self._all_gpus:
            self.message = (f"No GPUs: {view.get('reason') or 'none found on this host'}. "
                            f"%%remote cells run in CPU-only containers. {SIMULATED_HINT}.")
        elif not self.gpus:
            self.message = (f"Container {self._container_id[:8]} holds no GPU (CPU only)."
                            if self._container_id else "None of the GPUs asked for is on this host.")
        else:
            self.message = ""

    def _on_container(self, container: dict) -> None:
        cid = container.get("id")
        holds = container.get("phase") in _HOLDING
        mine = {g["uuid"] for g in container.get("gpus") or []}
        changed = False
        for g in self._all_gpus:
            if holds and g["uuid"] in mine:
                text = _holder_text({"owner": container.get("owner"), "container": cid})
            elif not holds and g.get("holder_container") == cid:
                text = None
            else:
                continue
            g["holder"], g["holder_container"] = text, (cid if holds else None)
            changed = True
        if changed:
            self._publish_gpus()
        if cid == self._container_id and container.get("phase") == "exited":
            self.message = f"Container {cid[:8]} has exited: {(container.get('exit') or {}).get('description', '')}"

    def _publish_gpus(self) -> None:
        self.gpus = [{k: v for k, v in g.items() if k != "holder_container"} for g in self._all_gpus if self._shown(g)]

    def _on_metrics(self, event: dict) -> None:
        t = event.get("time")
        shown = {g["uuid"] for g in self.gpus}
        latest = {u: v for u, v in self.latest.items() if u in shown}
        samples = {}
        for sample in event.get("gpus") or []:
            uuid = sample.get("uuid")
            if uuid not in shown:
                continue
            latest[uuid] = {k: sample[k] for k in ("simulated", "memory_total", *_READINGS) if k in sample}
            samples[uuid] = {k: sample.get(k) for k in _READINGS}
        self._ring.append((t, samples))
        horizon = t - self.history_seconds
        while self._ring and self._ring[0][0] < horizon:
            self._ring.popleft()
        self.latest = latest
        self.samples_received += 1
        self.send({"type": "samples", "time": t, "samples": samples})  # only what is new
        if event.get("error"):
            self.message = event["error"]
        elif self.message.startswith("GPU metrics could not"):
            self.message = ""

    @property
    def history(self) -> dict:
        """uuid -> {"time": [...], "utilization", "memory_used", "power_w", "temperature_c": [...]} of the
        last `history_seconds` (None where a reading is not given); the kernel's copy, not synced."""
        with self._lock:
            ring = list(self._ring)
        shown = [g["uuid"] for g in self.gpus]
        out = {}
        for uuid in shown:
            h = {"time": [], **{k: [] for k in _READINGS}}
            for t, samples in ring:
                if uuid in samples:
                    h["time"].append(t)
                    for k in _READINGS:
                        h[k].append(samples[uuid][k])
            if h["time"]:
                out[uuid] = h
        return out

    def _on_front_end_message(self, _widget, content, _buffers) -> None:
        """A front end that attaches (or re-attaches) says hello: it gets the buffered history once."""
        if isinstance(content, dict) and content.get("type") == "hello":
            self.send({"type": "history", "history": self.history})

    # -- what the user changes -----------------------------------------------------------
    @traitlets.validate("interval")
    def _valid_interval(self, proposal):
        value = float(proposal["value"])
        if not MIN_INTERVAL <= value <= MAX_INTERVAL:
            raise traitlets.TraitError(f"interval {value:g} s is out of range; give {MIN_INTERVAL:g} to "
                                       f"{MAX_INTERVAL:g} s")
        return value

    @traitlets.observe("interval")
    def _interval_changed(self, change):
        subscription = getattr(self, "_subscription", None)
        if subscription is not None:
            subscription.configure(change["new"])

    @traitlets.observe("paused")
    def _paused_changed(self, change):
        subscription = getattr(self, "_subscription", None)
        if subscription is not None:
            (subscription.pause if change["new"] else subscription.resume)()

    def close(self) -> None:
        """Stop listening (the control plane stops sampling when nobody listens) and close the view."""
        subscription, self._subscription = getattr(self, "_subscription", None), None
        if subscription is not None:
            subscription.close()
        super().close()


def _holder_text(holder: dict | None) -> str | None:
    if not holder:
        return None
    container = holder.get("container") or ""
    return f"{holder.get('owner') or 'someone'} · {container[:8]}".strip(" ·")
