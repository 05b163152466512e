"""Load-once classes (issue 14): `cellhop.cls` whose enter sleeps 2 s, 100 calls over two containers.

    python benchmarks/classes.py            # results/classes-<date>.json
    python benchmarks/classes.py --quick    # fewer repetitions of the warm call

Everything runs in this process as a script would drive cellhop (its own
embedded control plane, local runtime, bubblewrap containers, two simulated
H100s, a fresh JUPYTER_RUNTIME_DIR):

- cold map: `Model().predict.map(range(100))` with nothing warm: two
  containers start, each makes the instance and runs its enter (a 2 s
  sleep, standing in for loading weights) once, then takes its share of the
  100 calls. Timed from the call to the last result; how many times enter
  ran is counted inside the containers (each call returns its container's
  count), never inferred from timing.
- warm map: the same map again, the instances loaded (no enter at all).
- warm call: `Model().predict.remote(1)` on the loaded instance, beside a
  warm `cellhop.remote` function call (the same path without a class).
- the alternative without a class (loading in every call) would take
  100 x 2 s / 2 containers = 100 s; it is computed, not run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import fresh_runtime_dir  # noqa: E402

RUNTIME_DIR = fresh_runtime_dir("H100:2")  # before anything of cellhop or Jupyter is imported

from _common import (logger, median, print_table, quietly, stop_leftover_children, summary, timed,  # noqa: E402
                     write_results, yes_no)

ENTER_SECONDS = 2.0
CALLS = 100
CONTAINERS = 2
log = logger("classes")


def make_model():
    import cellhop

    @cellhop.cls(gpu="H100", max_containers=CONTAINERS)
    class Model:
        @cellhop.enter
        def load(self):
            import builtins

            time.sleep(ENTER_SECONDS)  # loading weights
            builtins.CELLHOP_BENCH_ENTERS = getattr(builtins, "CELLHOP_BENCH_ENTERS", 0) + 1

        def predict(self, x):
            import builtins

            return os.environ["CELLHOP_CONTAINER_ID"], builtins.CELLHOP_BENCH_ENTERS, 2 * x

    return Model


def enters_of(results) -> dict:
    """{container: how many times enter ran there}, from what the calls returned."""
    found: dict = {}
    for container, enters, _ in results:
        found[container] = max(enters, found.get(container, 0))
    return found


def run(args) -> int:
    import cellhop
    from cellhop.kernel.control_client import reset_control_plane

    leftovers: list = []
    with contextlib.ExitStack() as stack:
        stack.callback(stop_leftover_children, log, leftovers)
        stack.callback(shutil.rmtree, RUNTIME_DIR, True)
        stack.callback(quietly, log, reset_control_plane)
        Model = make_model()
        stack.callback(quietly, log, Model.shutdown)
        expected = [2 * x for x in range(CALLS)]

        log(f"cold map: {CALLS} calls over {CONTAINERS} containers, enter sleeps {ENTER_SECONDS:g} s")
        t0 = time.perf_counter()
        cold = Model().predict.map(range(CALLS), progress=False)
        cold_s = time.perf_counter() - t0
        assert [r[2] for r in cold] == expected
        cold_enters = enters_of(cold)

        log("warm map: the same, instances loaded")
        t0 = time.perf_counter()
        warm = Model().predict.map(range(CALLS), progress=False)
        warm_s = time.perf_counter() - t0
        assert [r[2] for r in warm] == expected
        warm_enters = enters_of(warm)

        reps = 30 if args.quick else 200
        log(f"warm calls: {reps} of Model().predict.remote(1), and of a cellhop.remote function")
        method_s = timed(lambda: Model().predict.remote(1), reps, warmup=3)

        Model.shutdown()  # its H100s, for the function's container

        @cellhop.remote(gpu="H100")
        def plain(x):
            return 2 * x

        stack.callback(quietly, log, plain.shutdown)
        function_s = timed(lambda: plain.remote(1), reps, warmup=3)

    total_enters = sum(cold_enters.values())
    rows = [
        {"figure": f"cold map, {CALLS} calls", "seconds": f"{cold_s:.2f}", "containers": len(cold_enters),
         "enter ran": total_enters},
        {"figure": f"warm map, {CALLS} calls", "seconds": f"{warm_s:.2f}", "containers": len(warm_enters),
         "enter ran": sum(warm_enters.values())},
        {"figure": "without a class (enter in every call), computed", "seconds": f"{CALLS * ENTER_SECONDS / CONTAINERS:.0f}",
         "containers": CONTAINERS, "enter ran": CALLS},
        {"figure": "warm Model().predict.remote(1), median ms", "seconds": f"{median(method_s) * 1e3:.2f} ms"},
        {"figure": "warm cellhop.remote f.remote(1), median ms", "seconds": f"{median(function_s) * 1e3:.2f} ms"},
    ]
    print_table(rows, ["figure", "seconds", "containers", "enter ran"])
    met = total_enters == CONTAINERS and sum(warm_enters.values()) == CONTAINERS
    print(f"enter ran {total_enters} times for {CALLS} calls over {len(cold_enters)} containers "
          f"(aim: {CONTAINERS}, not {CALLS}): {yes_no(met)}", flush=True)
    path = write_results("classes", {
        "calls": CALLS, "containers": CONTAINERS, "enter_seconds": ENTER_SECONDS,
        "cold_map_seconds": cold_s, "warm_map_seconds": warm_s,
        "enter_ran": total_enters, "enter_ran_by_container": cold_enters,
        "enter_ran_after_warm_map": sum(warm_enters.values()),
        "without_class_seconds_computed": CALLS * ENTER_SECONDS / CONTAINERS,
        "warm_method_call_ms": summary(method_s, 1e3), "warm_function_call_ms": summary(function_s, 1e3),
        "aim_met": met, "leftover_processes": leftovers,
    })
    log(f"wrote {path}")
    return 0 if met else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions of the warm call")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
