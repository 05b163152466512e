"""Small helpers shared by the benchmarks: statistics, host description, results file, table.

Results go to `benchmarks/results/<name>-<YYYY-MM-DD>.json` with the date, the
host (CPU count, Python version, platform) and the device the figures were
taken on.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEVICE = "cpu-only host, no GPU (simulated inventory)"


# -- statistics -------------------------------------------------------------------
def median(xs) -> float:
    s = sorted(xs)
    if not s:
        return math.nan
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def percentile(xs, q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    s = sorted(xs)
    if not s:
        return math.nan
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def p90(xs) -> float:
    return percentile(xs, 90)


def summary(xs, scale: float = 1.0) -> dict:
    """{n, median, p90, min, max} of `xs`, each multiplied by `scale` (e.g. 1e3 for ms)."""
    return {"n": len(xs), "median": median(xs) * scale, "p90": p90(xs) * scale,
            "min": min(xs) * scale if xs else math.nan, "max": max(xs) * scale if xs else math.nan}


def timed(fn, reps: int, warmup: int = 0) -> list[float]:
    """Seconds of each of `reps` calls of fn(), after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


# -- host and results ---------------------------------------------------------------
def host_info() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


def write_results(name: str, payload: dict, date: _dt.date | None = None) -> Path:
    """Write `payload` (plus date, host, device) to results/<name>-<date>.json; return the path."""
    date = date or _dt.date.today()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-{date.isoformat()}.json"
    doc = {"benchmark": name, "date": date.isoformat(), "host": host_info(), "device": DEVICE, **payload}
    path.write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


# -- table ----------------------------------------------------------------------------
def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain-text table of `rows` (dicts) with the given column keys as headers."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), line]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def print_table(rows: list[dict], columns: list[str], file=None) -> None:
    print(format_table(rows, columns), file=file or sys.stdout, flush=True)


# -- driving what a benchmark starts -------------------------------------------------------
def fresh_runtime_dir(simulated_gpus: str) -> str:
    """A fresh JUPYTER_RUNTIME_DIR and the simulated GPUs (CELLHOP_SIMULATED_GPUS, unless set), in this
    process's environment: call it before anything of cellhop or Jupyter is imported."""
    import tempfile

    path = tempfile.mkdtemp(prefix="ch-", dir="/tmp")
    os.environ["JUPYTER_RUNTIME_DIR"] = path
    os.environ.setdefault("CELLHOP_SIMULATED_GPUS", simulated_gpus)
    return path


def logger(name: str):
    """log(msg): `[name HH:MM:SS] msg` on stderr."""
    def log(msg: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    return log


class CellError(RuntimeError):
    pass


class Kernel:
    """A real ipykernel driven over the wire, as a frontend would."""

    def __init__(self, extra_arguments: tuple = ()):
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(env=dict(os.environ), startup_timeout=60,
                                            extra_arguments=list(extra_arguments))
        self.outputs: list = []

    def _hook(self, msg) -> None:
        if msg["msg_type"] in ("stream", "error", "display_data", "execute_result"):
            self.outputs.append(msg["content"])
            del self.outputs[:-20]

    def run(self, code: str, timeout: float = 60.0) -> dict:
        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=self._hook)
        content = reply["content"]
        if content["status"] != "ok":
            raise CellError(f"cell failed: {code!r}: {content.get('ename')}: {content.get('evalue')}\n"
                            + "\n".join(content.get("traceback", []))[-3000:])
        return content

    def value(self, expr: str):
        """repr of `expr` in the kernel, via a stdout print."""
        self.outputs.clear()
        self.run(f"print(repr({expr}))")
        texts = [o.get("text", "") for o in self.outputs if "text" in o]
        return "".join(texts).strip()

    def close(self) -> None:
        if getattr(self, "_closed", False):
            return
        self._closed = True
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=False)


def plain_ray_echo(ray, **actor_options):
    """A started plain Ray actor whose f/echo return their argument, and a task that does the same."""

    class Echo:
        def f(self, x):
            return x

        def echo(self, x):
            return x

    Echo = ray.remote(**actor_options)(Echo) if actor_options else ray.remote(Echo)

    @ray.remote
    def task(x):
        return x

    actor = Echo.remote()
    ray.get(actor.f.remote(0))
    return actor, task


def quietly(log, fn, *args) -> None:
    """fn(*args) in a cleanup: a failure is logged, and the cleanup goes on."""
    try:
        fn(*args)
    except Exception as exc:
        log(f"cleanup: {getattr(fn, '__name__', fn)} failed: {type(exc).__name__}: {exc}")


def stop_leftover_children(log, report: list) -> None:
    """Every process this benchmark started is gone by now; stop (by pid) and report any that is not."""
    try:
        import psutil
    except ImportError:
        return
    import contextlib

    time.sleep(0.5)
    children = psutil.Process().children(recursive=True)
    for p in children:
        with contextlib.suppress(psutil.Error):
            report.append(f"{p.pid} {' '.join(p.cmdline())[:80]}")
            p.terminate()
    _, alive = psutil.wait_procs(children, timeout=5)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    if report:
        log("stopped leftover processes: " + "; ".join(report))


def ratio_text(value: float, better: str) -> str:
    return f"{value:.2f}x ({better} is better)"


def yes_no(ok: bool) -> str:
    return "yes" if ok else "NO"
