"""Building an Image into cached layers, with progress events.

The plan is one layer per step: the base (a venv of the notebook's Python,
or of a clean one with what the container kernel needs), the user's steps,
and for clean images a last small layer with cellhop's container side (so a
cellhop upgrade rebuilds only that). A layer whose key exists is used at
once; a missing one is built under its key's lock into a temporary folder
and renamed into place. A process that finds the lock taken follows the
builder's log until the layer appears: two notebooks, one build. Steps that
run code the server did not write run sandboxed, with only their layer's
temporary folder writable (build_sandbox.py).

Events (also published on the control plane's event stream), all with
`{"type": "image", "image": <key>, "name": ..., "time": ...}`:
`plan` (steps, each `cached` or `pending`), `step` (index, state: `waiting`,
`building`, `done`, `failed`, with `elapsed`), `log` (index, line),
`done` (seconds, built), `failed` (index, error).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from .keys import digest, step_key, tree_digest
from ...errors import ImageBuildError
from ...image_spec import Image, step_title
from .steps import LayerBuild, build_base, build_cellhop, build_step, cellhop_sources
from .store import ImageStore
from ..file_tree import remove_path

log = logging.getLogger("cellhop")


@dataclass
class Planned:
    index: int
    key: str
    parent: str | None
    title: str
    kind: str  # base, step, cellhop
    payload: dict
    force: bool = False


class ImageBuilder:
    def __init__(self, store: ImageStore, publish=None):
        self.store = store
        self.publish = publish
        self._build_sandbox = None

    def _sandbox(self):
        """Where build steps run (build_sandbox.py); made at the first build."""
        if self._build_sandbox is None:
            from .build_sandbox import BuildSandbox
            from .steps import uv_binary

            try:
                uv = uv_binary()
            except Exception:  # the build itself says uv is missing
                uv = None
            self._build_sandbox = BuildSandbox(self.store, uv)
        return self._build_sandbox

    # -- planning -----------------------------------------------------------------
    def plan(self, image: Image, force: bool = False) -> list[Planned]:
        base = dict(image.base)
        extra = {}
        if base["kind"] == "python":
            from .interpreters import find_interpreter

            path, full = find_interpreter(base["version"])
            extra = {"python": full}
            title = f"Image.python({base['version']!r}) (Python {full} + ipykernel, cloudpickle)"
        else:
            title = f"Image.current() (the notebook's Python {base.get('version', '')})"
        key = step_key({"op": "base", **base}, None, extra)
        plan = [Planned(0, key, None, title, "base", base, force)]
        forced = force
        for i, step in enumerate(image.steps, 1):
            forced = forced or bool(step.get("force_build"))
            parent, key = key, step_key(step, key)
            plan.append(Planned(i, key, parent, step_title(step), "step", step, forced))
        if base["kind"] == "python":
            sources = cellhop_sources()
            source_digest = digest({p: tree_digest(Path(d)) for p, d in sources.items()})
            parent, key = key, step_key({"op": "cellhop"}, key, {"source": source_digest})
            plan.append(Planned(len(plan), key, parent, "cellhop's container side", "cellhop",
                                {"sources": sources}, forced))
        return plan

    # -- building -----------------------------------------------------------------
    def build(self, spec: dict | Image, on_event=None, force: bool = False) -> dict:
        """Build (or find) the image; returns its description. Raises ImageBuildError naming the step."""
        image = spec if isinstance(spec, Image) else Image.from_json(spec)
        t0 = time.monotonic()
        plan = self.plan(image, force)
        image_key = plan[-1].key
        context = {"image": image_key, "name": image.name}

        def emit(**event):
            event = {"type": "image", **context, "time": time.time(), **event}
            for listener in (on_event, self.publish):
                if listener is not None:
                    try:
                        listener(event)
                    except Exception:
                        log.exception("cellhop: image event listener failed")

        # Every layer of the plan is held for the whole build (prune and delete leave them alone) until
        # the image's record, which keeps them from then on, is written.
        with self.store.using(p.key for p in plan):
            states = []
            for p in plan:
                states.append("cached" if not p.force and self.store.layer(p.key) is not None else "pending")
            emit(event="plan", steps=[{"index": p.index, "key": p.key, "title": p.title, "state": s}
                                      for p, s in zip(plan, states)])
            built = 0
            for p, state in zip(plan, states):
                if state == "cached":
                    continue
                if self._build_layer(p, emit):
                    built += 1
            final = self.store.layer(image_key)
            info = {"key": image_key, "name": image.name, "python_version": final.get("python_version"),
                    "packages": final.get("packages", {}), "modules": final.get("modules", []),
                    "layers": [p.key for p in plan], "built": built, "base": image.base.get("kind")}
            self.store.record(image_key, image.name, image.to_json(), info["layers"],
                              {"python_version": info["python_version"], "steps": [p.title for p in plan]})
        info["seconds"] = time.monotonic() - t0
        emit(event="done", seconds=info["seconds"], built=built)
        return info

    def _build_layer(self, p: Planned, emit) -> bool:
        """Build one layer (or watch another process build it); True if this process built it."""
        store = self.store
        waited = {"since": None, "offset": 0}

        def follow():  # another process holds the lock: show its log as it grows
            if waited["since"] is None:
                waited["since"] = time.monotonic()
                emit(event="step", index=p.index, state="waiting", elapsed=0.0,
                     note="another process is building this step; following its log")
            try:
                with open(store.log_path(p.key), "rb") as f:
                    f.seek(0, 2)
                    if f.tell() < waited["offset"]:
                        waited["offset"] = 0
                    f.seek(waited["offset"])
                    chunk = f.read()
            except OSError:
                return
            complete = chunk[:chunk.rfind(b"\n") + 1]
            waited["offset"] += len(complete)
            for line in complete.decode(errors="replace").splitlines():
                emit(event="log", index=p.index, line=line)

        t0 = time.monotonic()
        with store.locked(p.key, wait=follow):
            if waited["since"] is not None:
                follow()  # the rest of its log
                if store.layer(p.key) is not None:  # built by the other process meanwhile
                    emit(event="step", index=p.index, state="done", elapsed=time.monotonic() - t0,
                         note="built by another process")
                    return False
            elif not p.force and store.layer(p.key) is not None:  # built between plan and lock
                emit(event="step", index=p.index, state="cached", elapsed=0.0)
                return False
            emit(event="step", index=p.index, state="building", elapsed=0.0)
            tmp = store.new_tmp(p.key)
            logfile = open(store.log_path(p.key), "w", buffering=1)

            def line_out(text: str) -> None:
                logfile.write(text + "\n")
                emit(event="log", index=p.index, line=text)

            try:
                parent = store.layer(p.parent) if p.parent else None
                lb = LayerBuild(p.key, tmp, parent, store, line_out, sandbox=self._sandbox())
                if p.kind == "base":
                    build_base(lb, p.payload)
                elif p.kind == "cellhop":
                    build_cellhop(lb, p.payload["sources"])
                else:
                    build_step(lb, p.payload)
                seconds = time.monotonic() - t0
                meta = {**lb.meta, "key": p.key, "parent": p.parent, "title": p.title,
                        "step": p.payload if p.kind == "step" else {"op": p.kind}, "seconds": seconds,
                        "created": time.time()}
                store.commit(tmp, p.key, meta)
                line_out(f"=> done in {seconds:.2f} s")
            except BaseException as exc:
                remove_path(tmp, ignore_errors=True)
                interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
                message = "interrupted" if interrupted else str(exc)
                try:
                    line_out(f"=> FAILED: {message}")
                except Exception:
                    pass
                emit(event="step", index=p.index, state="failed", elapsed=time.monotonic() - t0)
                emit(event="failed", index=p.index, title=p.title, error=message)
                if interrupted:
                    raise
                raise ImageBuildError(
                    f"image build failed at step {p.index} {p.title}: {message.rstrip('.')}. "
                    "Nothing of this step was kept; fix the step and run again "
                    "(the steps before it stay cached)") from exc
            finally:
                logfile.close()
            emit(event="step", index=p.index, state="done", elapsed=time.monotonic() - t0)
            return True
