"""ImageBuild: an image build as it happens, in the notebook.

Steps with their state (cached, waiting, building, done, failed), elapsed
time, a progress bar and a live, collapsible tail of the build log. Fed with
the build's events (`handle(event)`); `%%remote --image` shows one on its own
when a cell waits for a build.
"""

from __future__ import annotations

import html
import time

import ipywidgets as w

_ICONS = {"cached": "✓ cached", "pending": "· pending", "waiting": "⏳ waiting (built elsewhere)",
          "building": "⚙ building", "done": "✓ done", "failed": "✗ failed"}
_COLORS = {"failed": "#c62828", "done": "#2e7d32", "cached": "#607d8b", "building": "#1565c0",
           "waiting": "#ef6c00"}
TAIL_LINES = 40


class ImageBuild(w.VBox):
    """Progress of one image build."""

    last: ImageBuild | None = None  # the most recent one made (for tests and `%%remote` users)

    def __init__(self, name: str | None = None, **kwargs):
        self.name = name
        self.state = "pending"
        self.steps: list[dict] = []
        self.lines: list[str] = []
        self.error: str | None = None
        self._t0 = time.monotonic()
        self._finished_at: float | None = None
        self._last_log_flush = 0.0
        self._title = w.HTML()
        self._steps = w.HTML()
        self._bar = w.FloatProgress(value=0, min=0, max=1, bar_style="info", layout=w.Layout(width="60%"))
        self._elapsed = w.Label()
        self._log = w.Textarea(value="", disabled=True, layout=w.Layout(width="100%", height="12em"))
        self._log_box = w.Accordion(children=[self._log], selected_index=0)
        self._log_box.set_title(0, "build log")
        super().__init__(children=[self._title, self._steps, w.HBox([self._bar, self._elapsed]), self._log_box],
                         **kwargs)
        ImageBuild.last = self
        self._render()

    # -- events -------------------------------------------------------------------
    def handle(self, event: dict) -> None:
        """Apply one build event (the `{"type": "image", ...}` events of the builder)."""
        kind = event.get("event")
        if kind == "plan":
            self.steps = [{"title": s["title"], "state": s["state"], "elapsed": None, "key": s["key"]}
                          for s in event.get("steps", [])]
            self.state = "building" if any(s["state"] == "pending" for s in self.steps) else "cached"
        elif kind == "step" and 0 <= event.get("index", -1) < len(self.steps):
            step = self.steps[event["index"]]
            step["state"] = event["state"]
            if event["state"] in ("done", "failed", "cached"):
                step["elapsed"] = event.get("elapsed")
        elif kind == "log":
            self.lines.append(event.get("line", ""))
            del self.lines[:-TAIL_LINES * 5]
            if time.monotonic() - self._last_log_flush < 0.1:
                self._elapsed.value = self._elapsed_text()
                return
        elif kind == "done":
            self.state = "done"
            self._finished_at = time.monotonic()
        elif kind == "failed":
            self.state = "failed"
            self.error = event.get("error")
            self._finished_at = time.monotonic()
        self._render()

    # -- view -----------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return (self._finished_at or time.monotonic()) - self._t0

    def _elapsed_text(self) -> str:
        return f"{self.elapsed:.1f} s"

    def _render(self) -> None:
        finished = sum(1 for s in self.steps if s["state"] in ("done", "cached"))
        total = max(1, len(self.steps))
        label = html.escape(self.name or "image")
        head = {"done": "built", "failed": "build failed", "cached": "cached"}.get(self.state, "building")
        color = _COLORS.get(self.state, "#1565c0")
        self._title.value = (f'<b>Image <code>{label}</code></b> · '
                             f'<span style="color:{color}">{head}</span> · {finished}/{len(self.steps)} steps')
        rows = []
        for i, s in enumerate(self.steps):
            took = f" ({s['elapsed']:.2f} s)" if s.get("elapsed") else ""
            rows.append(f'<tr><td style="color:{_COLORS.get(s["state"], "#666")};padding-right:1em">'
                        f'{_ICONS.get(s["state"], s["state"])}</td><td><code>{i}. {html.escape(s["title"])}'
                        f'</code>{took}</td></tr>')
        error = (f'<div style="color:#c62828">{html.escape(self.error)}</div>' if self.error else "")
        self._steps.value = f'<table style="font-size:0.9em">{"".join(rows)}</table>{error}'
        self._bar.max = total
        self._bar.value = finished
        self._bar.bar_style = {"done": "success", "failed": "danger", "cached": "success"}.get(self.state, "info")
        self._elapsed.value = self._elapsed_text()
        self._log.value = "\n".join(self.lines[-TAIL_LINES:])
        self._last_log_flush = time.monotonic()
        if self.state in ("done", "cached"):
            self._log_box.selected_index = None  # collapse the log once built; a click opens it
        elif self.state == "failed":
            self._log_box.selected_index = 0

    def summary(self) -> dict:
        """What the widget shows, as data."""
        return {"name": self.name, "state": self.state, "elapsed": self.elapsed,
                "steps": [{"title": s["title"], "state": s["state"], "elapsed": s.get("elapsed")} for s in self.steps],
                "progress": [self._bar.value, self._bar.max], "bar_style": self._bar.bar_style,
                "log_tail": self._log.value.splitlines(), "log_open": self._log_box.selected_index == 0,
                "error": self.error}
