"""The first `%%remote` cell of a fresh notebook, end to end: a standby claimed, or a container started.

    python benchmarks/first_cell.py --n 5     # also run by cold_start.py, in the same run

Each round starts a new notebook kernel (untimed) with cellhop loaded on its
embedded control plane over a simulated H100 ("H100:1"), waits (untimed) until
that control plane's standby container is ready, then times its first cell,
`%%remote` with `x = 1`, from the execute_request to the kernel's idle: what a
user waits for. Beside it, in the same rounds: the same first cell with
c.Cellhop.standby = 0 (the container starts for the cell), and a plain local
`x = 1` cell of the same kernel (the floor).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median  # noqa: E402

AIM_S = 0.150  # first %%remote cell with a standby, end to end, at most


def _run(kc, code: str, timeout: float = 120) -> float:
    """Seconds from sending `code` to the kernel's idle after it; raises if the cell failed."""
    started = time.perf_counter()
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=lambda msg: None)
    elapsed = time.perf_counter() - started
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"cell failed: {reply['content'].get('ename')}: {reply['content'].get('evalue')}")
    return elapsed


def one_round(standby: bool) -> dict:
    """{'first_remote': s, 'local': s} of one fresh notebook kernel."""
    from jupyter_client.manager import start_new_kernel

    runtime = tempfile.mkdtemp(prefix="ch-fc-", dir="/tmp")
    env = {**os.environ, "CELLHOP_SIMULATED_GPUS": "H100:1", "JUPYTER_RUNTIME_DIR": runtime,
           "CELLHOP_STANDBY": "1" if standby else "0"}
    km, kc = start_new_kernel(env=env, startup_timeout=60)
    try:
        _run(kc, "%load_ext cellhop")
        if standby:
            deadline = time.monotonic() + 60
            probe = "import cellhop as _c\nassert any(s['ready'] for s in _c.control_plane().standby())"
            while True:
                reply = kc.execute_interactive(probe, timeout=30, output_hook=lambda msg: None)
                if reply["content"]["status"] == "ok":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("no standby became ready within 60 s")
                time.sleep(0.1)
        local = _run(kc, "x = 1")
        first = _run(kc, "%%remote\nx = 1")
        return {"first_remote": first, "local": local}
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
        shutil.rmtree(runtime, ignore_errors=True)


def measure(n: int) -> dict:
    """n rounds of each (alternating), medians and samples."""
    samples = {"standby": [], "fresh": [], "local": []}
    one_round(True)  # warm-up, untimed: imports and page cache
    for i in range(n):
        for standby in ((True, False) if i % 2 == 0 else (False, True)):
            got = one_round(standby)
            samples["standby" if standby else "fresh"].append(got["first_remote"])
            samples["local"].append(got["local"])
        print(f"first cell round {i + 1}/{n}: with a standby {samples['standby'][-1] * 1e3:.0f} ms, "
              f"fresh start {samples['fresh'][-1] * 1e3:.0f} ms", flush=True)
    med = {k: median(v) for k, v in samples.items()}
    return {"median_s": med, "samples": samples, "aim_s": AIM_S, "aim_met": med["standby"] <= AIM_S,
            "ratio_fresh_to_standby": med["fresh"] / med["standby"]}


def report(result: dict) -> None:
    med = result["median_s"]
    print(f"  first %%remote cell of a fresh notebook, with a standby  median {med['standby'] * 1e3:5.0f} ms"
          f"   (aim <= {AIM_S * 1e3:.0f} ms: {'MET' if result['aim_met'] else 'NOT MET'})")
    print(f"  first %%remote cell, no standby (container starts)      median {med['fresh'] * 1e3:5.0f} ms"
          f"   ({result['ratio_fresh_to_standby']:.1f}x the standby's)")
    print(f"  a local cell of the same kernel                          median {med['local'] * 1e3:5.1f} ms")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5)
    report(measure(parser.parse_args().n))
