"""Dispatch figures of cellhop (issue 3), beside a plain local cell, ipyparallel and Ray.

    python benchmarks/dispatch.py            # full run (~70 s on 2 cores)
    python benchmarks/dispatch.py --quick    # fewer repetitions
    python benchmarks/dispatch.py --ray      # the Ray runtime beside the local one and plain Ray

Two benchmarks, one command: dispatch_local.py (cells, arrays and functions on the
local runtime beside a plain cell, ipyparallel and Ray; results/dispatch-<date>.json)
and, with --ray, dispatch_ray.py (the Ray runtime beside the local one and plain Ray
on a two-node cluster; results/dispatch-ray-<date>.json). Each module's docstring
says what it measures and how. Both run on a fresh JUPYTER_RUNTIME_DIR and a
simulated GPU inventory (CELLHOP_SIMULATED_GPUS, default "H100:2,A10G:2"); every
process started is stopped at the end.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import fresh_runtime_dir  # noqa: E402

# Before anything of cellhop or Jupyter is imported: a fresh runtime dir and the simulated GPUs.
RUNTIME_DIR = fresh_runtime_dir("H100:2,A10G:2")

import argparse  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--ray", action="store_true",
                        help="the Ray runtime (a two-node local Ray cluster) beside the local runtime and plain Ray")
    args = parser.parse_args(argv)
    if args.ray:
        from dispatch_ray import run
    else:
        from dispatch_local import run
    return run(args, RUNTIME_DIR)


if __name__ == "__main__":
    sys.exit(main())
