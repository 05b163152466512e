"""Image builds: uv-built cached layers against plain pip in a venv, cache hits, partial rebuilds.

    python benchmarks/images.py            # 3 rounds of each build, 50 cache hits
    python benchmarks/images.py --n 5

Measured in one run, the order alternating round by round:

- cold build of an image with numpy: `Image.current().pip_install("numpy")`
  built by cellhop (uv venv + uv pip install into a new layer) into an empty
  store with an empty uv cache (numpy is downloaded from PyPI), against
  `python -m venv` + `pip install numpy` with pip's cache off (downloaded
  too). Then the same with warm download caches (uv's, pip's), the store
  still empty: what a new image costs once packages were seen before.
- cache hit: building an image whose layers all exist (`Images.build`:
  plan, content keys, lookup, record); aim < 50 ms.
- rebuild after changing the last step of
  `Image.current().pip_install("numpy").run_commands("echo N")`, against a
  cold build of that image (empty store, warm uv cache); and the same with a
  last step `.pip_install("six==1.16.0")` changed to `six==1.17.0`. A
  run_commands layer copies the venv in full (its commands could edit files
  in place), a pip_install layer hard-links it, as uv links from its cache.

Writes benchmarks/results/images-<date>.json. Needs PyPI (numpy).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, p90, print_table, summary, write_results  # noqa: E402

CACHE_HIT_AIM_MS = 50.0
PACKAGE = "numpy"


def _fresh(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def cellhop_build(image, store_root: Path) -> tuple[float, dict]:
    from cellhop.server_ext.images.service import Images

    t0 = time.perf_counter()
    info = Images(store_root).build(image.to_json())
    return time.perf_counter() - t0, info


def pip_venv_build(cache: Path | None) -> float:
    """`python -m venv` + `pip install numpy` (pip's cache in `cache`, or off)."""
    work = _fresh("ch-bpip-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_FIND_LINKS")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    try:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
        cache_args = ["--cache-dir", str(cache)] if cache else ["--no-cache-dir"]
        subprocess.run([str(work / "venv" / "bin" / "pip"), "install", "-q", *cache_args, PACKAGE],
                       check=True, env=env)
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3, help="rounds of each build (default 3)")
    parser.add_argument("--hits", type=int, default=50, help="cache hits timed (default 50)")
    args = parser.parse_args(argv)
    from cellhop.server_ext.images.service import Images
    from cellhop.image_spec import Image

    image = Image.current().pip_install(PACKAGE)
    times: dict[str, list[float]] = {k: [] for k in ("uv_cold", "pip_cold", "uv_warm", "pip_warm", "rebuild",
                                                     "cold_full", "rebuild_pip", "cold_full_pip")}
    scratch = _fresh("ch-bench-")
    pip_cache = scratch / "pip-cache"
    uv_cache = scratch / "uv-cache-warm"
    saved_uv_cache = os.environ.get("UV_CACHE_DIR")
    try:
        # warm both download caches once, untimed
        os.environ["UV_CACHE_DIR"] = str(uv_cache)
        cellhop_build(image, scratch / "warmup-store")
        pip_venv_build(pip_cache)
        for r in range(args.n):
            order = ["uv", "pip"] if r % 2 == 0 else ["pip", "uv"]
            for who in order:  # cold: empty download caches
                if who == "uv":
                    os.environ["UV_CACHE_DIR"] = str(_fresh("ch-uvc-"))
                    seconds, _ = cellhop_build(image, _fresh("ch-st-"))
                    times["uv_cold"].append(seconds)
                else:
                    times["pip_cold"].append(pip_venv_build(None))
            os.environ["UV_CACHE_DIR"] = str(uv_cache)
            for who in order:  # warm download caches, new image
                if who == "uv":
                    times["uv_warm"].append(cellhop_build(image, _fresh("ch-st-"))[0])
                else:
                    times["pip_warm"].append(pip_venv_build(pip_cache))
            store = _fresh("ch-st-")  # rebuild after changing the last step, against its cold build
            seconds, _ = cellhop_build(image.run_commands(f"echo round {r}"), store)
            times["cold_full"].append(seconds)
            seconds, info = cellhop_build(image.run_commands(f"echo round {r} changed"), store)
            assert info["built"] == 1, info
            times["rebuild"].append(seconds)
            store = _fresh("ch-st-")
            seconds, _ = cellhop_build(image.pip_install("six==1.16.0"), store)
            times["cold_full_pip"].append(seconds)
            seconds, info = cellhop_build(image.pip_install("six==1.17.0"), store)
            assert info["built"] == 1, info
            times["rebuild_pip"].append(seconds)
        hit_store = Images(scratch / "warmup-store")
        spec = image.to_json()
        hit_store.build(spec)
        hits = []
        for _ in range(args.hits):
            t0 = time.perf_counter()
            info = hit_store.build(spec)
            hits.append(time.perf_counter() - t0)
            assert info["built"] == 0
    finally:
        if saved_uv_cache is None:
            os.environ.pop("UV_CACHE_DIR", None)
        else:
            os.environ["UV_CACHE_DIR"] = saved_uv_cache
        for path in Path("/tmp").glob("ch-uvc-*"):
            shutil.rmtree(path, ignore_errors=True)
        for path in Path("/tmp").glob("ch-st-*"):
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)

    m = {k: median(v) for k, v in times.items()}
    hit_ms = median(hits) * 1e3
    rows = [
        {"figure": f"cold build, image with {PACKAGE} (empty download caches)", "cellhop (uv)": f"{m['uv_cold']:.2f} s",
         "baseline": f"{m['pip_cold']:.2f} s (venv + pip)", "ratio": f"{m['pip_cold'] / m['uv_cold']:.1f}x faster"},
        {"figure": f"new image with {PACKAGE}, download caches warm", "cellhop (uv)": f"{m['uv_warm']:.2f} s",
         "baseline": f"{m['pip_warm']:.2f} s (venv + pip)", "ratio": f"{m['pip_warm'] / m['uv_warm']:.1f}x faster"},
        {"figure": "cache hit (every layer built)", "cellhop (uv)": f"{hit_ms:.1f} ms (p90 {p90(hits) * 1e3:.1f})",
         "baseline": f"aim < {CACHE_HIT_AIM_MS:.0f} ms", "ratio": "met" if hit_ms < CACHE_HIT_AIM_MS else "NOT met"},
        {"figure": "rebuild after changing the last step (run_commands)", "cellhop (uv)": f"{m['rebuild']:.2f} s",
         "baseline": f"{m['cold_full']:.2f} s (cold build of it)",
         "ratio": f"{m['rebuild'] / m['cold_full']:.2f} of a cold build"},
        {"figure": "rebuild after changing the last step (pip_install)", "cellhop (uv)": f"{m['rebuild_pip']:.2f} s",
         "baseline": f"{m['cold_full_pip']:.2f} s (cold build of it)",
         "ratio": f"{m['rebuild_pip'] / m['cold_full_pip']:.2f} of a cold build"},
    ]
    print(f"\nImage builds (median of {args.n} rounds; cache hit: median of {args.hits})\n")
    print_table(rows, ["figure", "cellhop (uv)", "baseline", "ratio"])
    path = write_results("images", {
        "package": PACKAGE, "rounds": args.n,
        "seconds": {k: summary(v) for k, v in times.items()},
        "cache_hit_ms": summary(hits, 1e3),
        "ratios": {"pip_over_uv_cold": m["pip_cold"] / m["uv_cold"], "pip_over_uv_warm": m["pip_warm"] / m["uv_warm"],
                   "rebuild_over_cold": m["rebuild"] / m["cold_full"],
                   "rebuild_over_cold_pip_install": m["rebuild_pip"] / m["cold_full_pip"]},
        "cache_hit_aim_ms": CACHE_HIT_AIM_MS, "cache_hit_aim_met": hit_ms < CACHE_HIT_AIM_MS,
        "table": rows,
    })
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
