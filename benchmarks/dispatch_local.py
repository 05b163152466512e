"""Dispatch on the local runtime, beside a plain local cell, ipyparallel and Ray (`python benchmarks/dispatch.py`).

Everything goes over the wire as a user would drive it:

- Cells: a real ipykernel started with jupyter_client runs `%load_ext cellhop`
  and `%gpu H100`; this process times `kc.execute_interactive(...)` (execute
  request until reply and IOPub idle) of `x = 1` as a plain cell, as a warm
  `%%remote` cell (its container started by an untimed first call), and as a
  `%%px` cell on one ipyparallel engine (the same kernel holds an
  ipyparallel Client connected to the cluster this process started, with
  `rc[0].activate()`). The three are interleaved round by round.
- 256 MiB: in that kernel `a = np.ones(256*2**20//8)` and the cell
  `%%remote\\nb = a` (a goes, b comes back: 512 MiB moved); ipyparallel
  `push` + `pull` of the same array on one engine; a Ray actor method that
  returns its argument; numpy `copyto` there and back as the ceiling.
  GB/s = 512 MiB / seconds, GB = 10^9 bytes. On the local runtime values of
  1 MiB or more travel through memory shared with the container (sealed
  memfds, kernel/shared_buffers.py): `a` is copied once into a segment the
  container maps; `b`, the same array unchanged, goes back as that segment.
- Functions: `cellhop.remote(gpu="H100")` in this process; warm `f.remote(1)`
  against a Ray actor method call; `f.map(range(2000))` over two containers
  (two simulated H100s) against Ray tasks and an ipyparallel load-balanced
  map over two engines.

The systems are measured one after another: the cells side by side
(cellhop's and ipyparallel's, interleaved round by round), ipyparallel's
transfer and map, then cellhop's functions once ipyparallel is stopped, Ray
last: a call and a map of each system are timed with no other system's
processes running.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time

from _common import (CellError, Kernel, logger, median, p90, plain_ray_echo, print_table, quietly, ratio_text,
                     stop_leftover_children, summary, timed, write_results, yes_no)

ARRAY_BYTES = 256 * 2**20
MOVED = 2 * ARRAY_BYTES  # sent and returned
GB = 1e9
MAP_N = 2000
COLUMNS = ["figure", "cellhop", "peer", "peer name", "ratio", "aim", "met"]

log = logger("dispatch")


def run(args, runtime_dir: str) -> int:
    reps = dict(latency=30, transfer=2, map=1, ipp_map=1) if args.quick else \
        dict(latency=200, transfer=8, map=5, ipp_map=2)

    import numpy as np

    t_start = time.perf_counter()
    m: dict = {}  # raw measurements, seconds
    info: dict = {}
    leftovers: list = []
    with contextlib.ExitStack() as stack:
        stack.callback(stop_leftover_children, log, leftovers)
        stack.callback(shutil.rmtree, runtime_dir, True)

        # -- ipyparallel: one cluster of two engines for %%px (engine 0), push/pull (engine 0), map (both)
        import ipyparallel as ipp

        log("starting ipyparallel cluster (2 engines)")
        cluster = ipp.Cluster(n=2, log_level=logging.WARNING)
        stack.callback(quietly, log, cluster.stop_cluster_sync)
        rc = cluster.start_and_connect_sync()
        stack.callback(quietly, log, rc.close)
        rc.wait_for_engines(2, timeout=60)
        client_args = {"profile_dir": cluster.profile_dir, "cluster_id": cluster.cluster_id}

        # -- cellhop's control plane of this process is stopped whatever happens
        from cellhop.kernel.control_client import reset_control_plane

        stack.callback(quietly, log, reset_control_plane)

        _cells(m, info, reps, rc, client_args)
        a = np.ones(ARRAY_BYTES // 8)
        _ipp_transfer_and_memcpy(m, reps, rc, a)
        expected = list(range(MAP_N))

        ident = _identity()
        lview = rc.load_balanced_view()
        lview.map_sync(ident, range(100))  # warm
        log(f"timing {reps['ipp_map']} ipyparallel load-balanced maps of {MAP_N} over 2 engines")

        def ipp_map():
            assert lview.map_sync(ident, range(MAP_N)) == expected

        m["map_ipp"] = timed(ipp_map, reps["ipp_map"])
        rc.close()
        cluster.stop_cluster_sync()

        _functions(m, info, reps, stack, expected)  # alone, as Ray is measured alone
        reset_control_plane()

        _plain_ray(m, reps, stack, a, expected)

    info["wall_s"] = time.perf_counter() - t_start
    return _report(args, reps, m, info, leftovers)


def _identity():
    """A function that returns its argument, made so that it travels by value: cloudpickle pickles a
    module's own functions by reference, ipyparallel imports a function's module on the engine, and
    neither a container nor an engine can import this module (as `__main__`'s it needs no import)."""

    def ident(x):
        return x

    ident.__module__ = "__main__"  # ipyparallel's canning imports a function's module on the engine
    return ident


def _cells(m: dict, info: dict, reps: dict, rc, client_args: dict) -> None:
    """Plain, %%remote and %%px cells of one notebook kernel, round by round; 256 MiB through %%remote."""
    log("starting the notebook kernel")
    kernel = Kernel()
    with contextlib.ExitStack() as kstack:
        kstack.callback(kernel.close)
        kernel.run("%load_ext cellhop")
        kstack.callback(quietly, log, kernel.run, "%unload_ext cellhop")
        kernel.run("%gpu H100")
        kernel.run("import json, numpy as np, ipyparallel as ipp\n"
                   f"rc = ipp.Client(**json.loads({json.dumps(json.dumps(client_args))}))\n"
                   "rc.wait_for_engines(2, timeout=60)\n"
                   "rc[0].activate()")
        kstack.callback(quietly, log, kernel.run, "rc.close()")

        t0 = time.perf_counter()
        kernel.run("%%remote\nx = 1")
        info["first_remote_cell_s"] = time.perf_counter() - t0  # starts the container
        log(f"container started by the first %%remote cell in {info['first_remote_cell_s'] * 1e3:.0f} ms")

        cells = {"local": "x = 1", "remote": "%%remote\nx = 1", "px": "%%px\nx = 1"}
        for code in cells.values():  # warm every path
            for _ in range(5):
                kernel.run(code)
        log(f"timing {reps['latency']} rounds of local / %%remote / %%px cells")
        times: dict = {k: [] for k in cells}
        for _ in range(reps["latency"]):
            for key, code in cells.items():
                t0 = time.perf_counter()
                kernel.run(code)
                times[key].append(time.perf_counter() - t0)
        m["cell_local"], m["cell_remote"], m["cell_px"] = times["local"], times["remote"], times["px"]
        if rc[0].pull("x", block=True) != 1:
            raise CellError("%%px did not run x = 1 on engine 0")
        kernel.run("%%remote\ny = x + 1")
        if kernel.value("y") != "2":
            raise CellError("y did not come back from the %%remote cell")

        # 256 MiB through a %%remote cell
        log(f"256 MiB through %%remote ({reps['transfer']} + 1 warm-up)")
        kernel.run(f"a = np.ones({ARRAY_BYTES // 8})")
        m["xfer_cellhop"] = timed(lambda: kernel.run("%%remote\nb = a", timeout=300),
                                  reps["transfer"], warmup=1)
        if kernel.value("(b.nbytes, float(b[0]), float(b[-1]), b is a)") != f"({ARRAY_BYTES}, 1.0, 1.0, False)":
            raise CellError("b did not come back intact from the %%remote cell")
        info["shared_memory"] = kernel.value(
            "all(s.shared.channel is not None and not s.shared.channel.broken for s in "
            "__import__('cellhop.kernel.extension', fromlist=['x']).remote_cells(get_ipython()).pool.sessions()"
            ".values())") == "True"
        kernel.run("%%remote --no-pull\ndel a, b")
        kernel.run("del a, b")
    log("notebook kernel stopped")


def _ipp_transfer_and_memcpy(m: dict, reps: dict, rc, a) -> None:
    """256 MiB through ipyparallel's push and pull (this process), and the memcpy ceiling."""
    import numpy as np

    view = rc[0]

    def ipp_roundtrip():
        view.push({"a": a}, block=True)
        back = view.pull("a", block=True)
        assert back.nbytes == ARRAY_BYTES

    log(f"256 MiB ipyparallel push+pull ({reps['transfer']} + 1 warm-up)")
    m["xfer_ipp"] = timed(ipp_roundtrip, reps["transfer"], warmup=1)
    view.execute("del a", block=True)

    dst = np.empty_like(a)

    def memcpy_roundtrip():
        np.copyto(dst, a)
        np.copyto(a, dst)

    m["xfer_memcpy"] = timed(memcpy_roundtrip, max(5, reps["transfer"]), warmup=1)


def _functions(m: dict, info: dict, reps: dict, stack, expected: list) -> None:
    """cellhop.remote in this process: warm f.remote(1), f.map over two containers."""
    import cellhop

    f = cellhop.remote(gpu="H100")(_identity())
    stack.callback(quietly, log, f.shutdown)
    t0 = time.perf_counter()
    if f.remote(1) != 1:
        raise RuntimeError("f.remote(1) did not return 1")
    info["first_f_remote_s"] = time.perf_counter() - t0
    log(f"first f.remote(1) (starts a container) took {info['first_f_remote_s'] * 1e3:.0f} ms; "
        f"timing {reps['latency']} warm calls")
    m["f_remote"] = timed(lambda: f.remote(1), reps["latency"], warmup=10)

    t0 = time.perf_counter()
    if f.map(range(MAP_N), progress=False) != expected:
        raise RuntimeError("f.map returned wrong results")
    info["first_map_s"] = time.perf_counter() - t0
    info["map_containers"] = len(f._live_sessions())
    log(f"f.map over {info['map_containers']} containers; timing {reps['map']} maps of {MAP_N}")

    def cellhop_map():
        assert f.map(range(MAP_N), progress=False) == expected

    m["map_cellhop"] = timed(cellhop_map, reps["map"])

    def cellhop_map_unbatched():  # one call per message, as Ray tasks and ipyparallel's map send them
        assert f.map(range(MAP_N), progress=False, chunk_size=1) == expected

    m["map_cellhop_chunk1"] = timed(cellhop_map_unbatched, reps["ipp_map"])
    f.shutdown()


def _plain_ray(m: dict, reps: dict, stack, a, expected: list) -> None:
    """Ray alone: actor calls, tasks, 256 MiB through an actor."""
    import ray

    log("starting Ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=2 * 2**30,
             logging_level=logging.ERROR, log_to_driver=False)
    stack.callback(quietly, log, ray.shutdown)

    actor, task = plain_ray_echo(ray)
    log(f"timing {reps['latency']} Ray actor calls, Ray tasks, 256 MiB through an actor")
    m["ray_actor_call"] = timed(lambda: ray.get(actor.f.remote(1)), reps["latency"], warmup=10)

    def ray_tasks():
        assert ray.get([task.remote(i) for i in range(MAP_N)]) == expected

    m["map_ray"] = timed(ray_tasks, reps["map"], warmup=1)

    def ray_echo():
        back = ray.get(actor.echo.remote(a))
        assert back.nbytes == ARRAY_BYTES
        del back

    m["xfer_ray"] = timed(ray_echo, reps["transfer"], warmup=1)
    ray.kill(actor)
    ray.shutdown()


def _figures(m: dict) -> tuple[list[dict], dict]:
    ms = {k: median(v) * 1e3 for k, v in m.items()}
    gbps = {k: MOVED / median(m[k]) / GB for k in ("xfer_cellhop", "xfer_ipp", "xfer_ray", "xfer_memcpy")}
    rate = {k: MAP_N / median(m[k]) for k in ("map_cellhop", "map_cellhop_chunk1", "map_ray", "map_ipp")}
    overhead = ms["cell_remote"] - ms["cell_local"]
    rows, fig = [], {}

    def add(key, figure, cellhop, peer, peer_name, ratio, better, aim, met, values):
        rows.append({"figure": figure, "cellhop": cellhop, "peer": peer, "peer name": peer_name,
                     "ratio": ratio_text(ratio, better), "aim": aim,
                     "met": met if isinstance(met, str) else yes_no(met)})
        fig[key] = {**values, "ratio": ratio, "better": better, "aim": aim,
                    "met": None if isinstance(met, str) else bool(met)}

    add("remote_cell_overhead", "trivial cell x = 1, warm: %%remote overhead over local",
        f"+{overhead:.2f} ms ({ms['cell_remote']:.2f} ms cell)", f"{ms['cell_local']:.2f} ms",
        "same cell run locally (ipykernel)", ms["cell_remote"] / ms["cell_local"], "lower",
        "<= 2 ms overhead", overhead <= 2.0,
        {"overhead_ms": overhead, "remote_cell_ms": ms["cell_remote"], "local_cell_ms": ms["cell_local"]})
    add("remote_cell_vs_px", "trivial cell x = 1, warm: whole cell",
        f"{ms['cell_remote']:.2f} ms", f"{ms['cell_px']:.2f} ms", "ipyparallel %%px, 1 engine",
        ms["cell_remote"] / ms["cell_px"], "lower", "faster than %%px", ms["cell_remote"] < ms["cell_px"],
        {"cellhop_ms": ms["cell_remote"], "peer_ms": ms["cell_px"]})
    add("f_remote_vs_ray_actor", "f.remote(1) trivial function, warm",
        f"{ms['f_remote']:.3f} ms", f"{ms['ray_actor_call']:.3f} ms", "Ray actor method call",
        ms["f_remote"] / ms["ray_actor_call"], "lower", "no slower than Ray",
        ms["f_remote"] <= ms["ray_actor_call"], {"cellhop_ms": ms["f_remote"], "peer_ms": ms["ray_actor_call"]})
    c = gbps["xfer_cellhop"]
    add("array_vs_ipp", "256 MiB array sent + returned (%%remote b = a)", f"{c:.2f} GB/s",
        f"{gbps['xfer_ipp']:.2f} GB/s", "ipyparallel push + pull", c / gbps["xfer_ipp"], "higher",
        ">= 2 GB/s and ahead of ipyparallel", c >= 2.0 and c > gbps["xfer_ipp"],
        {"cellhop_gbps": c, "peer_gbps": gbps["xfer_ipp"]})
    add("array_vs_ray", "256 MiB array sent + returned", f"{c:.2f} GB/s", f"{gbps['xfer_ray']:.2f} GB/s",
        "Ray actor echo(a)", c / gbps["xfer_ray"], "higher", ">= 2 GB/s and no slower than Ray",
        c >= 2.0 and c >= gbps["xfer_ray"], {"cellhop_gbps": c, "peer_gbps": gbps["xfer_ray"]})
    add("array_vs_memcpy", "256 MiB array sent + returned", f"{c:.2f} GB/s", f"{gbps['xfer_memcpy']:.2f} GB/s",
        "numpy copyto there and back", c / gbps["xfer_memcpy"], "higher", "ceiling (reference)", "n/a",
        {"cellhop_gbps": c, "peer_gbps": gbps["xfer_memcpy"]})
    add("map_vs_ray_tasks", f".map of {MAP_N} trivial calls, 2 containers",
        f"{rate['map_cellhop']:,.0f} calls/s", f"{rate['map_ray']:,.0f} tasks/s", "Ray tasks (2 CPUs)",
        rate["map_cellhop"] / rate["map_ray"], "higher", "above Ray's tasks/s",
        rate["map_cellhop"] > rate["map_ray"], {"cellhop_per_s": rate["map_cellhop"], "peer_per_s": rate["map_ray"]})
    add("map_vs_ipp", f".map of {MAP_N} trivial calls, 2 containers",
        f"{rate['map_cellhop']:,.0f} calls/s", f"{rate['map_ipp']:,.0f} calls/s",
        "ipyparallel load-balanced map, 2 engines", rate["map_cellhop"] / rate["map_ipp"], "higher",
        "reference (no aim)", "n/a", {"cellhop_per_s": rate["map_cellhop"], "peer_per_s": rate["map_ipp"]})
    add("map_unbatched_vs_ray_tasks", ".map chunk_size=1 (one call a message), 2 containers",
        f"{rate['map_cellhop_chunk1']:,.0f} calls/s", f"{rate['map_ray']:,.0f} tasks/s", "Ray tasks (2 CPUs)",
        rate["map_cellhop_chunk1"] / rate["map_ray"], "higher", "above Ray's tasks/s",
        rate["map_cellhop_chunk1"] > rate["map_ray"],
        {"cellhop_per_s": rate["map_cellhop_chunk1"], "peer_per_s": rate["map_ray"]})
    return rows, fig


def _report(args, reps: dict, m: dict, info: dict, leftovers: list) -> int:
    rows, figures = _figures(m)
    print()
    print_table(rows, COLUMNS)
    print()
    print(f"cold: first %%remote cell {info['first_remote_cell_s'] * 1e3:.0f} ms (container start), "
          f"first f.remote {info['first_f_remote_s'] * 1e3:.0f} ms; f.map used {info['map_containers']} "
          f"containers; whole run {info['wall_s']:.0f} s")
    tails = {k: {"p90_ms": p90(m[k]) * 1e3, "max_ms": max(m[k]) * 1e3, "over_1s": sum(x > 1.0 for x in m[k])}
             for k in ("cell_local", "cell_remote", "cell_px", "f_remote", "ray_actor_call")}
    info["latency_tails"] = tails
    print("latency tails (p90 / max, calls over 1 s): " + "; ".join(
        f"{k} {v['p90_ms']:.2f} / {v['max_ms']:.1f} ms, {v['over_1s']}" for k, v in tails.items()))
    if leftovers:
        print("leftover processes that had to be stopped: " + ", ".join(leftovers))
    path = write_results("dispatch", {
        "quick": args.quick,
        "repetitions": reps,
        "simulated_gpus": os.environ.get("CELLHOP_SIMULATED_GPUS"),
        "method": {
            "cells": "kc.execute_interactive round trip from the benchmark process to a real ipykernel "
                     "(reply and IOPub idle); local, %%remote and %%px interleaved round by round",
            "px": "%%px on engine 0 of a 2-engine ipyparallel cluster, via rc[0].activate() in the same kernel",
            "transfer": "512 MiB moved (256 MiB numpy array sent and returned); GB = 1e9 bytes; "
                        "memcpy = np.copyto there and back; cellhop's local runtime: through shared memory "
                        "(a copied once into a sealed memfd, b = a unchanged goes back as the same segment)",
            "map": f"{MAP_N} trivial calls; cellhop .map over two containers (default chunking: calls are "
                   "batched per message; chunk_size=1 shown for reference), Ray tasks (num_cpus=2), "
                   "ipyparallel load-balanced map over two engines (one task a call)",
        },
        "figures": figures,
        "table": rows,
        "measurements": {k: summary(v, 1e3) | {"unit": "ms"} for k, v in m.items()},
        "info": info,
        "leftover_processes": leftovers,
    })
    print(f"results: {path}")
    return 0
