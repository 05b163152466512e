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
