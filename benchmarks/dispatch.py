"""Dispatch figures of cellhop (issue 3), beside a plain local cell, ipyparallel and Ray.

    python benchmarks/dispatch.py            # full run (~70 s on 2 cores)
    python benchmarks/dispatch.py --quick    # fewer repetitions
    python benchmarks/dispatch.py --ray      # the Ray runtime beside the local one and plain Ray

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
  GB/s = 512 MiB / seconds, GB = 10^9 bytes.
- Functions: `cellhop.remote(gpu="H100")` in this process; warm `f.remote(1)`
  against a Ray actor method call; `f.map(range(2000))` over two containers
  (two simulated H100s) against Ray tasks and an ipyparallel load-balanced
  map over two engines.

The systems are measured one after another (cellhop and ipyparallel first,
Ray last, alone), on a fresh JUPYTER_RUNTIME_DIR and a simulated GPU
inventory (CELLHOP_SIMULATED_GPUS, default "H100:2,A10G:2"). Every process
started here is stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

# Before anything of cellhop or Jupyter is imported: a fresh runtime dir and the simulated GPUs.
_RUNTIME_DIR = tempfile.mkdtemp(prefix="ch-", dir="/tmp")
os.environ["JUPYTER_RUNTIME_DIR"] = _RUNTIME_DIR
os.environ.setdefault("CELLHOP_SIMULATED_GPUS", "H100:2,A10G:2")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median, p90, print_table, summary, timed, write_results  # noqa: E402

ARRAY_BYTES = 256 * 2**20
MOVED = 2 * ARRAY_BYTES  # sent and returned
GB = 1e9
MAP_N = 2000
COLUMNS = ["figure", "cellhop", "peer", "peer name", "ratio", "aim", "met"]


def log(msg: str) -> None:
    print(f"[dispatch {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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


def ratio_text(value: float, better: str) -> str:
    return f"{value:.2f}x ({better} is better)"


def yes_no(ok: bool) -> str:
    return "yes" if ok else "NO"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--ray", action="store_true",
                        help="the Ray runtime (a two-node local Ray cluster) beside the local runtime and plain Ray")
    args = parser.parse_args(argv)
    if args.ray:
        return ray_main(args)
    reps = dict(latency=30, transfer=2, map=1, ipp_map=1) if args.quick else \
        dict(latency=200, transfer=8, map=5, ipp_map=2)

    import numpy as np

    t_start = time.perf_counter()
    m: dict = {}  # raw measurements, seconds
    info: dict = {}
    leftovers: list = []
    with contextlib.ExitStack() as stack:
        stack.callback(_stop_leftover_children, leftovers)
        stack.callback(shutil.rmtree, _RUNTIME_DIR, True)

        # -- ipyparallel: one cluster of two engines for %%px (engine 0), push/pull (engine 0), map (both)
        import ipyparallel as ipp

        log("starting ipyparallel cluster (2 engines)")
        cluster = ipp.Cluster(n=2, log_level=logging.WARNING)
        stack.callback(_quietly, cluster.stop_cluster_sync)
        rc = cluster.start_and_connect_sync()
        stack.callback(_quietly, rc.close)
        rc.wait_for_engines(2, timeout=60)
        client_args = {"profile_dir": cluster.profile_dir, "cluster_id": cluster.cluster_id}

        # -- cellhop's control plane of this process is stopped whatever happens
        from cellhop.kernel.control_client import reset_control_plane

        stack.callback(_quietly, reset_control_plane)

        # -- cells ----------------------------------------------------------------------------
        log("starting the notebook kernel")
        kernel = Kernel()
        with contextlib.ExitStack() as kstack:
            kstack.callback(kernel.close)
            kernel.run("%load_ext cellhop")
            kstack.callback(_quietly, kernel.run, "%unload_ext cellhop")
            kernel.run("%gpu H100")
            kernel.run("import json, numpy as np, ipyparallel as ipp\n"
                       f"rc = ipp.Client(**json.loads({json.dumps(json.dumps(client_args))}))\n"
                       "rc.wait_for_engines(2, timeout=60)\n"
                       "rc[0].activate()")
            kstack.callback(_quietly, kernel.run, "rc.close()")

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
            kernel.run("%%remote --no-pull\ndel a, b")
            kernel.run("del a, b")
        log("notebook kernel stopped")

        # -- ipyparallel push/pull and memcpy ceiling (this process) ---------------------------
        a = np.ones(ARRAY_BYTES // 8)
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
        del dst

        # -- functions --------------------------------------------------------------------------
        import cellhop

        def ident(x):
            return x

        f = cellhop.remote(gpu="H100")(ident)
        stack.callback(_quietly, f.shutdown)
        t0 = time.perf_counter()
        if f.remote(1) != 1:
            raise RuntimeError("f.remote(1) did not return 1")
        info["first_f_remote_s"] = time.perf_counter() - t0
        log(f"first f.remote(1) (starts a container) took {info['first_f_remote_s'] * 1e3:.0f} ms; "
            f"timing {reps['latency']} warm calls")
        m["f_remote"] = timed(lambda: f.remote(1), reps["latency"], warmup=10)

        expected = list(range(MAP_N))
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

        lview = rc.load_balanced_view()
        lview.map_sync(ident, range(100))  # warm
        log(f"timing {reps['ipp_map']} ipyparallel load-balanced maps of {MAP_N} over 2 engines")

        def ipp_map():
            assert lview.map_sync(ident, range(MAP_N)) == expected

        m["map_ipp"] = timed(ipp_map, reps["ipp_map"])
        rc.close()
        cluster.stop_cluster_sync()
        reset_control_plane()

        # -- Ray (alone) ---------------------------------------------------------------------------
        import ray

        log("starting Ray")
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=2 * 2**30,
                 logging_level=logging.ERROR, log_to_driver=False)
        stack.callback(_quietly, ray.shutdown)

        actor, task = _plain_ray_echo(ray)
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

    info["wall_s"] = time.perf_counter() - t_start
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
                        "memcpy = np.copyto there and back",
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
        "<= 3 ms overhead", overhead <= 3.0,
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
        "Ray actor echo(a)", c / gbps["xfer_ray"], "higher", "within reach of Ray (read: >= 0.5x)",
        c / gbps["xfer_ray"] >= 0.5, {"cellhop_gbps": c, "peer_gbps": gbps["xfer_ray"]})
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
        rate["map_cellhop_chunk1"] / rate["map_ray"], "higher", "reference (no aim)", "n/a",
        {"cellhop_per_s": rate["map_cellhop_chunk1"], "peer_per_s": rate["map_ray"]})
    return rows, fig


def ray_main(args) -> int:
    """Dispatch on the Ray runtime beside the local runtime and plain Ray calls, all in one run.

    A two-node Ray cluster on this host (tests/ray_cluster.py: H100 on 127.0.0.2, A10G on
    127.0.0.3, simulated). Two notebook kernels, one per runtime, time the same cells
    interleaved round by round; this process times `f.remote(1)` on each runtime and a plain
    Ray actor call on the same cluster, and `.map` on each runtime against Ray tasks.
    """
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from ray_cluster import DRIVER_ENV, RayCluster

    reps = dict(latency=30, transfer=2, map=1) if args.quick else dict(latency=150, transfer=5, map=3)
    m: dict = {}
    info: dict = {}
    t_start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, _RUNTIME_DIR, True)
        log("starting a two-node Ray cluster (head 127.0.0.2 H100, node 127.0.0.3 A10G)")
        t0 = time.perf_counter()
        cluster = RayCluster.start()
        stack.callback(cluster.stop)
        info["cluster_start_s"] = time.perf_counter() - t0
        os.environ.update({k: cluster.env[k] for k in DRIVER_ENV})
        ray_args = ("--Cellhop.runtime=ray", f"--Cellhop.ray_address={cluster.address}")

        from cellhop.kernel.control_client import reset_control_plane, set_control_plane
        from cellhop.kernel.embedded_control_plane import EmbeddedControlPlane
        from cellhop.server_ext.config import Cellhop

        stack.callback(_quietly, reset_control_plane)
        kernels = {}
        for name, extra in (("local", ()), ("ray", ray_args)):
            log(f"starting the notebook kernel on the {name} runtime")
            k = kernels[name] = Kernel(extra)
            stack.callback(_quietly, k.close)
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
            _quietly(kernel.run, "%unload_ext cellhop")
            kernel.close()

        # -- plain Ray on the same cluster, from this process (its connection is reused below)
        import ray

        ray.init(address=cluster.address, logging_level=logging.ERROR, log_to_driver=False)
        stack.callback(_quietly, ray.shutdown)

        actor, task = _plain_ray_echo(ray, num_cpus=0)
        log(f"timing {reps['latency']} plain Ray actor calls and {MAP_N} Ray tasks")
        m["ray_actor_call"] = timed(lambda: ray.get(actor.f.remote(1)), reps["latency"], warmup=10)
        expected = list(range(MAP_N))

        def ray_tasks():
            assert ray.get([task.remote(i) for i in range(MAP_N)]) == expected

        m["map_ray_tasks"] = timed(ray_tasks, reps["map"], warmup=1)
        ray.kill(actor)

        # -- cellhop.remote in this process, on each runtime
        import cellhop

        def ident(x):
            return x

        for name, config in (("local", Cellhop()), ("ray", Cellhop(runtime="ray", ray_address=cluster.address))):
            set_control_plane(EmbeddedControlPlane(config))
            f = cellhop.remote(gpu=None, max_containers=2)(ident)
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

    info["wall_s"] = time.perf_counter() - t_start
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


def _plain_ray_echo(ray, **actor_options):
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


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except Exception as exc:  # cleanup goes on
        log(f"cleanup: {getattr(fn, '__name__', fn)} failed: {type(exc).__name__}: {exc}")


def _stop_leftover_children(report: list) -> None:
    """Every process this benchmark started is gone by now; stop (by pid) and report any that is not."""
    try:
        import psutil
    except ImportError:
        return
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


if __name__ == "__main__":
    sys.exit(main())
