"""Dispatch on the Ray runtime beside the local runtime and plain Ray calls, all in one run
(`python benchmarks/dispatch.py --ray`).

A two-node Ray cluster on this host (tests/ray_cluster.py: H100 on 127.0.0.2, A10G on
127.0.0.3, simulated). Two notebook kernels, one per runtime, time the same cells
interleaved round by round; this process times `f.remote(1)` on each runtime and a plain
Ray actor call on the same cluster, and `.map` on each runtime against Ray tasks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time

from _common import (CellError, Kernel, logger, median, plain_ray_echo, print_table, quietly, ratio_text, summary,
                     timed, write_results)
from dispatch_local import ARRAY_BYTES, COLUMNS, GB, MAP_N, MOVED, _identity

log = logger("dispatch")


def run(args, runtime_dir: str) -> int:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from ray_cluster import DRIVER_ENV, RayCluster

    reps = dict(latency=30, transfer=2, map=1) if args.quick else dict(latency=150, transfer=5, map=3)
    m: dict = {}
    info: dict = {}
    t_start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, runtime_dir, True)
        log("starting a two-node Ray cluster (head 127.0.0.2 H100, node 127.0.0.3 A10G)")
        t0 = time.perf_counter()
        cluster = RayCluster.start()
        stack.callback(cluster.stop)
        info["cluster_start_s"] = time.perf_counter() - t0
        os.environ.update({k: cluster.env[k] for k in DRIVER_ENV})

        from cellhop.kernel.control_client import reset_control_plane

        stack.callback(quietly, log, reset_control_plane)
        _cells(m, info, reps, stack, cluster.address)
        expected = list(range(MAP_N))
        _plain_ray(m, reps, stack, cluster.address, expected)
        _functions(m, info, reps, cluster.address, expected)

    info["wall_s"] = time.perf_counter() - t_start
    return _report(args, reps, m, info)


def _cells(m: dict, info: dict, reps: dict, stack, address: str) -> None:
    """The same cells in two notebook kernels, one per runtime, round by round; 256 MiB through each."""
    ray_args = ("--RayRuntime.address=" + address, "--Cellhop.runtime=ray")
    kernels = {}
    for name, extra in (("local", ()), ("ray", ray_args)):
        log(f"starting the notebook kernel on the {name} runtime")
        k = kernels[name] = Kernel(extra)
        stack.callback(quietly, log, k.close)
        k.run("%load_ext cellhop")
        k.run("%gpu H100\nimport numpy as np")
        t0 = time.perf_counter()
        k.run("%%remote\nx = 1")
        info[f"first_remote_cell_{name}_s"] = time.perf_counter() - t0
    cells = {"cell_local": (kernels["local"], "x = 1"), "cell_remote_local": (kernels["local"], "%%remote\nx = 1"),
             "cell_remote_ray": (kernels["ray"], "%%remote\nx = 1")}
    for kernel, code in cells.values():
        for _ in range(5):
            kernel.run(code)
    log(f"timing {reps['latency']} rounds of local / %%remote (local runtime) / %%remote (Ray runtime) cells")
    times = {k: [] for k in cells}
    for _ in range(reps["latency"]):
        for key, (kernel, code) in cells.items():
            t0 = time.perf_counter()
            kernel.run(code)
            times[key].append(time.perf_counter() - t0)
    m.update(times)
    log(f"256 MiB through %%remote on each runtime ({reps['transfer']} + 1 warm-up)")
    for name, kernel in kernels.items():
        kernel.run(f"a = np.ones({ARRAY_BYTES // 8})")
        m[f"xfer_{name}"] = timed(lambda k=kernel: k.run("%%remote\nb = a", timeout=300), reps["transfer"], warmup=1)
        if kernel.value("(b.nbytes, float(b[-1]))") != f"({ARRAY_BYTES}, 1.0)":
            raise CellError(f"b did not come back intact on the {name} runtime")
        kernel.run("%%remote --no-pull\ndel a, b")
        kernel.run("del a, b")
    for kernel in kernels.values():  # before this process's own measurements
        quietly(log, kernel.run, "%unload_ext cellhop")
        kernel.close()


def _plain_ray(m: dict, reps: dict, stack, address: str, expected: list) -> None:
    """Plain Ray on the same cluster, from this process (its connection is reused by _functions)."""
    import ray

    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    stack.callback(quietly, log, ray.shutdown)

    actor, task = plain_ray_echo(ray, num_cpus=0)
    log(f"timing {reps['latency']} plain Ray actor calls and {MAP_N} Ray tasks")
    m["ray_actor_call"] = timed(lambda: ray.get(actor.f.remote(1)), reps["latency"], warmup=10)

    def ray_tasks():
        assert ray.get([task.remote(i) for i in range(MAP_N)]) == expected

    m["map_ray_tasks"] = timed(ray_tasks, reps["map"], warmup=1)
    ray.kill(actor)


def _functions(m: dict, info: dict, reps: dict, address: str, expected: list) -> None:
    """cellhop.remote in this process, on each runtime."""
    import cellhop
    from cellhop.kernel.control_client import reset_control_plane, set_control_plane
    from cellhop.kernel.embedded_control_plane import EmbeddedControlPlane
    from cellhop.server_ext.config import Cellhop
    from traitlets.config import Config

    on_ray = Config()
    on_ray.Cellhop.runtime = "ray"
    on_ray.RayRuntime.address = address
    for name, config in (("local", Cellhop()), ("ray", Cellhop(config=on_ray))):
        set_control_plane(EmbeddedControlPlane(config))
        f = cellhop.remote(gpu=None, max_containers=2)(_identity())
        t0 = time.perf_counter()
        assert f.remote(1) == 1
        info[f"first_f_remote_{name}_s"] = time.perf_counter() - t0
        log(f"timing {reps['latency']} warm f.remote(1) and {reps['map']} maps of {MAP_N} on the {name} runtime")
        m[f"f_remote_{name}"] = timed(lambda: f.remote(1), reps["latency"], warmup=10)
        assert f.map(range(MAP_N), progress=False) == expected
        info[f"map_containers_{name}"] = len(f._live_sessions())
        m[f"map_{name}"] = timed(lambda: f.map(range(MAP_N), progress=False), reps["map"])
        f.shutdown()
        reset_control_plane()


def _report(args, reps: dict, m: dict, info: dict) -> int:
    ms = {k: median(v) * 1e3 for k, v in m.items()}
    gbps = {k: MOVED / median(m[k]) / GB for k in ("xfer_local", "xfer_ray")}
    rate = {k: MAP_N / median(m[k]) for k in ("map_local", "map_ray", "map_ray_tasks")}
    rows, fig = [], {}

    def add(key, figure, ray_value, peer, peer_name, ratio, better, values):
        rows.append({"figure": figure, "cellhop": ray_value, "peer": peer, "peer name": peer_name,
                     "ratio": ratio_text(ratio, better), "aim": "reference", "met": "n/a"})
        fig[key] = {**values, "ratio": ratio, "better": better}

    add("remote_cell_ray_vs_local_runtime", "trivial %%remote cell x = 1, warm, Ray runtime",
        f"{ms['cell_remote_ray']:.2f} ms", f"{ms['cell_remote_local']:.2f} ms", "same cell, local runtime",
        ms["cell_remote_ray"] / ms["cell_remote_local"], "lower",
        {"ray_ms": ms["cell_remote_ray"], "local_runtime_ms": ms["cell_remote_local"], "plain_local_cell_ms": ms["cell_local"],
         "ray_overhead_over_plain_cell_ms": ms["cell_remote_ray"] - ms["cell_local"]})
    add("f_remote_ray_vs_local_runtime", "f.remote(1), warm, Ray runtime", f"{ms['f_remote_ray']:.3f} ms",
        f"{ms['f_remote_local']:.3f} ms", "f.remote(1), local runtime", ms["f_remote_ray"] / ms["f_remote_local"],
        "lower", {"ray_ms": ms["f_remote_ray"], "local_runtime_ms": ms["f_remote_local"]})
    add("f_remote_ray_vs_plain_ray", "f.remote(1), warm, Ray runtime", f"{ms['f_remote_ray']:.3f} ms",
        f"{ms['ray_actor_call']:.3f} ms", "plain Ray actor call, same cluster",
        ms["f_remote_ray"] / ms["ray_actor_call"], "lower",
        {"ray_ms": ms["f_remote_ray"], "plain_ray_ms": ms["ray_actor_call"]})
    add("array_ray_vs_local_runtime", "256 MiB sent + returned (%%remote b = a), Ray runtime",
        f"{gbps['xfer_ray']:.2f} GB/s", f"{gbps['xfer_local']:.2f} GB/s", "local runtime (ipc)",
        gbps["xfer_ray"] / gbps["xfer_local"], "higher", {"ray_gbps": gbps["xfer_ray"], "local_runtime_gbps": gbps["xfer_local"]})
    add("map_ray_vs_local_runtime", f".map of {MAP_N} trivial calls, 2 CPU containers, Ray runtime",
        f"{rate['map_ray']:,.0f} calls/s", f"{rate['map_local']:,.0f} calls/s", "local runtime",
        rate["map_ray"] / rate["map_local"], "higher", {"ray_per_s": rate["map_ray"], "local_runtime_per_s": rate["map_local"]})
    add("map_ray_vs_ray_tasks", f".map of {MAP_N} trivial calls, 2 CPU containers, Ray runtime",
        f"{rate['map_ray']:,.0f} calls/s", f"{rate['map_ray_tasks']:,.0f} tasks/s", "plain Ray tasks, same cluster",
        rate["map_ray"] / rate["map_ray_tasks"], "higher", {"ray_per_s": rate["map_ray"], "plain_ray_per_s": rate["map_ray_tasks"]})
    print()
    print_table(rows, COLUMNS)
    print(f"cold: first %%remote cell {info['first_remote_cell_local_s'] * 1e3:.0f} ms local runtime, "
          f"{info['first_remote_cell_ray_s'] * 1e3:.0f} ms Ray runtime; cluster start {info['cluster_start_s']:.0f} s; "
          f"whole run {info['wall_s']:.0f} s")
    path = write_results("dispatch-ray", {
        "quick": args.quick, "repetitions": reps,
        "method": {
            "cluster": "two Ray nodes on this host (127.0.0.2 with GPU=1 accelerator_type:H100, 127.0.0.3 with "
                       "GPU=1 accelerator_type:A10G; simulated GPUs), started by this run",
            "cells": "kc.execute_interactive round trips to two real ipykernels (one per runtime), interleaved "
                     "round by round; the Ray runtime's container kernel is a Ray actor's child on its node, "
                     "reached over TCP with CurveZMQ; the local runtime's over ipc",
            "functions": "cellhop.remote(gpu=None, max_containers=2) in this process on each runtime; plain Ray (num_cpus=1 tasks, 8 logical CPUs): "
                         "an actor method call and Ray tasks on the same cluster from this process",
        },
        "figures": fig, "table": rows,
        "measurements": {k: summary(v, 1e3) | {"unit": "ms"} for k, v in m.items()},
        "info": info,
    })
    print(f"results: {path}")
    return 0
