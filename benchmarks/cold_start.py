"""Cold start: request to a ready container kernel, beside a plain ipykernel started with jupyter_client.

    python benchmarks/cold_start.py          # 15 rounds
    python benchmarks/cold_start.py --n 40

In one run, round by round (the order rotating, after one untimed warm-up
round of each), four starts are timed:

- plain: `KernelManager.start_kernel()` of the native python3 kernel, then a
  client's `wait_for_ready()`: the baseline issue 2 names. Note that
  wait_for_ready also waits out 0.2 s of IOPub silence after the
  kernel_info_reply;
- plain, same readiness: the same start, ready at the first
  kernel_info_reply (what ContainerManager calls ready), for a like-for-like
  ratio;
- container: `ContainerManager.start()` of a container holding a simulated
  H100 (inventory "H100:1", a fresh runtime folder), which returns when the
  container kernel answers kernel_info_request: scheduling, the sandbox
  (bubblewrap, when installed) and the kernel's start included;
- container, unsandboxed: the same with c.Cellhop.sandbox = "none", which
  shows what bubblewrap itself costs;
- claimed (issue 14): the same request on a control plane that keeps one
  standby container (c.Cellhop.standby = 1; each round waits, untimed, until
  one is ready): queueing for the GPU, claiming the standby, making its GPU
  visible and telling its kernel, to a ready, GPU-pinned container;
- provisioned: a whole kernel on a GPU container, "start kernel" to "kernel
  ready" exactly as for the plain kernel (`KernelManager.start_kernel()` then
  `wait_for_ready()`), with a cellhop kernelspec (`Python 3 · H100`) whose
  provisioner queues for a simulated H100 on an embedded control plane and
  starts the container kernel under bubblewrap. Its ratio to the plain
  kernel is the issue 5 figure.

Then first_cell.py's measurement: the first `%%remote` cell of a fresh
notebook, end to end, with a standby and without.

Each kernel is stopped, untimed, before the next start. Prints medians and
p90s, the ratios container/plain, and whether the aim of issue 2 is met
(container ready within 1.2x a plain kernel's start); writes
benchmarks/results/cold_start-<date>.json.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import first_cell  # noqa: E402
from _common import host_info, median, p90, write_results  # noqa: E402

AIM = 1.2  # container start / plain kernel start, at most
CLAIM_AIM_S = 0.100  # a request to a ready, GPU-pinned container claimed from a warm standby, at most
DEVICE = "cpu-only host (no GPU)"


def plain_kernel_start(readiness: str = "wait_for_ready") -> float:
    """Seconds from start_kernel() to ready; the kernel is then shut down.

    readiness "wait_for_ready": jupyter_client's client.wait_for_ready();
    "kernel_info": the first kernel_info_reply, as ContainerManager counts ready.
    """
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    started = time.perf_counter()
    km.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # as the container's go to its log
    if readiness == "wait_for_ready":
        return _until_client_ready(km, started)
    try:
        _wait_kernel_info(km.get_connection_info())
        return time.perf_counter() - started
    finally:
        km.shutdown_kernel(now=True)


def _until_client_ready(km, started: float) -> float:
    """Seconds from `started` until a client of `km` is ready (wait_for_ready); then shut the kernel down."""
    try:
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=60)
            return time.perf_counter() - started
        finally:
            kc.stop_channels()
    finally:
        km.shutdown_kernel(now=True)


class ProvisionedStarts:
    """Whole kernels through the cellhop provisioner: a kernelspec for a simulated H100 in a temporary
    kernels folder, an embedded control plane in a fresh runtime folder (this process's, as in
    jupyter console or nbclient)."""

    def __init__(self):
        from jupyter_client.kernelspec import KernelSpecManager

        from cellhop.kernel.control_client import set_control_plane
        from cellhop.kernel.embedded_control_plane import EmbeddedControlPlane
        from cellhop.server_ext.kernelspecs import write_kernelspec
        from cellhop.server_ext.config import Cellhop

        self.root = tempfile.mkdtemp(prefix="ch-bench-", dir="/tmp")
        write_kernelspec(Path(self.root) / "kernels" / "cellhop-h100", "H100")
        self.specs = KernelSpecManager(kernel_dirs=[str(Path(self.root) / "kernels")])
        self.control = EmbeddedControlPlane(Cellhop(simulated_gpus="H100:1", runtime_root=self.root + "/rt",
                                                    standby=0, workdir_roots=[self.root]))
        set_control_plane(self.control)
        self.cwd = Path(self.root) / "notebooks"
        self.cwd.mkdir()

    def __call__(self) -> float:
        from jupyter_client.manager import KernelManager

        km = KernelManager(kernel_name="cellhop-h100", kernel_spec_manager=self.specs)
        km.cellhop_control = self.control  # as the server hands its control plane to its kernels' managers
        started = time.perf_counter()
        km.start_kernel(cwd=str(self.cwd))
        return _until_client_ready(km, started)

    def close(self) -> None:
        from cellhop.kernel.control_client import set_control_plane

        set_control_plane(None)
        self.control.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _wait_kernel_info(info: dict, timeout: float = 60) -> None:
    """Send kernel_info_request (again each second) until it is answered, as ContainerManager does."""
    from cellhop.wire import KernelConnection

    conn = KernelConnection(info, channels=("shell",))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg_id = conn.send("shell", "kernel_info_request", {})
            resend = time.monotonic() + 1.0
            while time.monotonic() < resend:
                reply = conn.recv("shell", timeout=0.02)
                if reply is not None and reply.parent_id == msg_id:
                    return
        raise TimeoutError("the plain kernel did not answer kernel_info_request")
    finally:
        conn.close()


class ContainerStarts:
    """Container starts through one ContainerManager on a simulated H100, in a fresh runtime folder."""

    def __init__(self, sandbox: str = "auto", standby: int = 0):
        from cellhop.server_ext.config import Cellhop
        from cellhop.server_ext.container_manager import ContainerManager

        self.root = tempfile.mkdtemp(prefix="ch-bench-", dir="/tmp")  # short: ipc socket paths live here
        self.manager = ContainerManager(Cellhop(simulated_gpus="H100:1", runtime_root=self.root, sandbox=sandbox,
                                                standby=standby))
        self.phases: list[dict] = []
        self.sandboxed = False
        self.claimed = 0

    def __call__(self) -> float:
        from cellhop.container import ContainerSpec, Phase

        pool = self.manager.standby
        deadline = time.monotonic() + 60
        while pool is not None and not any(v["ready"] for v in pool.view()):  # untimed: a standby is ready
            if time.monotonic() > deadline:
                raise RuntimeError("no standby container became ready within 60 s")
            time.sleep(0.02)
        started = time.perf_counter()
        container = self.manager.start(ContainerSpec(gpu="H100", owner="cold-start benchmark"))
        elapsed = time.perf_counter() - started
        queued, starting, ready = (container.phase_time(p) for p in (Phase.QUEUED, Phase.STARTING, Phase.READY))
        self.phases.append({"scheduling": starting - queued, "launch_to_ready": ready - starting})
        self.sandboxed = container.sandboxed
        self.claimed += container.claimed_from is not None
        self.manager.stop(container.id)
        self.manager.remove(container.id)
        return elapsed

    def close(self) -> None:
        self.manager.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _stats(xs: list[float]) -> dict:
    return {"median": median(xs), "p90": p90(xs), "samples": xs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=15, help="timed rounds (default 15)")
    parser.add_argument("--no-write", action="store_true", help="print only; write no results file")
    parser.add_argument("--name", default="cold_start",
                        help="results file name before the date (default cold_start: results/cold_start-<date>.json)")
    parser.add_argument("--first-cell-rounds", type=int, default=5,
                        help="rounds of the first-%%%%remote-cell measurement (benchmarks/first_cell.py)")
    parser.add_argument("--no-first-cell", action="store_true", help="skip the first-cell measurement")
    args = parser.parse_args(argv)

    sandboxed, unsandboxed, provisioned = ContainerStarts(), ContainerStarts(sandbox="none"), ProvisionedStarts()
    claimed = ContainerStarts(standby=1)
    starts = {
        "claimed": claimed,
        "plain": plain_kernel_start,
        "plain_same_readiness": lambda: plain_kernel_start("kernel_info"),
        "container": sandboxed,
        "container_unsandboxed": unsandboxed,
        "provisioned": provisioned,
    }
    times: dict[str, list[float]] = {name: [] for name in starts}
    try:
        for start in starts.values():  # warm-up, untimed: imports and page cache
            start()
        sandboxed.phases.clear()
        names = list(starts)
        for round_ in range(args.n):
            turn = round_ % len(names)
            for name in names[turn:] + names[:turn]:  # rotate who goes first
                times[name].append(starts[name]())
            print(f"round {round_ + 1:2d}/{args.n}: " + "   ".join(
                f"{name} {times[name][-1] * 1e3:4.0f} ms" for name in names), flush=True)
    finally:
        sandboxed.close()
        unsandboxed.close()
        provisioned.close()
        claimed.close()
    if claimed.claimed < args.n + 1:
        raise RuntimeError(f"only {claimed.claimed} of {args.n + 1} starts claimed a standby")
    first = None if args.no_first_cell else first_cell.measure(args.first_cell_rounds)

    med = {name: median(xs) for name, xs in times.items()}
    ratio = med["container"] / med["plain"]
    like_for_like = med["container"] / med["plain_same_readiness"]
    met = ratio <= AIM
    scheduling = median([p["scheduling"] for p in sandboxed.phases])
    launch = median([p["launch_to_ready"] for p in sandboxed.phases])
    labels = {
        "plain": "plain ipykernel, jupyter_client wait_for_ready",
        "plain_same_readiness": "plain ipykernel, first kernel_info_reply",
        "claimed": "cellhop container claimed from a warm standby",
        "container": "cellhop container to ready" + ("" if sandboxed.sandboxed else " (bubblewrap MISSING)"),
        "container_unsandboxed": "cellhop container, sandbox='none'",
        "provisioned": "cellhop kernel (provisioner), wait_for_ready",
    }
    host = host_info()
    print()
    print(f"cold start, {args.n} rounds, {DEVICE}, {host['cpu_count']} CPUs, Python {host['python']}")
    for name, label in labels.items():
        print(f"  {label:<48} median {med[name] * 1e3:5.0f} ms   p90 {p90(times[name]) * 1e3:5.0f} ms")
    print(f"    container: scheduling {scheduling * 1e3:.1f} ms, launch to ready {launch * 1e3:.0f} ms (medians)")
    print(f"  ratio container / plain (the issue's baseline):         {ratio:.2f}x")
    print(f"  ratio container / plain with the same readiness test:   {like_for_like:.2f}x")
    provisioned_ratio = med["provisioned"] / med["plain"]
    print(f"  ratio cellhop kernel / plain kernel, start to ready:      {provisioned_ratio:.2f}x")
    print(f"  bubblewrap's cost (container / unsandboxed container):  "
          f"{med['container'] / med['container_unsandboxed']:.2f}x")
    claim_met = med["claimed"] <= CLAIM_AIM_S
    print(f"  claim from a warm standby to a ready, GPU-pinned container: median {med['claimed'] * 1e3:.1f} ms, "
          f"{med['container'] / med['claimed']:.0f}x faster than a fresh start in this run "
          f"(aim <= {CLAIM_AIM_S * 1e3:.0f} ms: {'MET' if claim_met else 'NOT MET'})")
    if first is not None:
        first_cell.report(first)
    print(f"  aim (container ready within {AIM}x of a plain kernel's start): "
          + ("MET" if met else "NOT MET")
          + f"; like for like {'also within' if like_for_like <= AIM else 'NOT within'} {AIM}x")

    if not args.no_write:
        path = write_results(args.name, {
            "device": DEVICE,
            "rounds": args.n,
            "sandboxed": sandboxed.sandboxed,
            "seconds": {name: _stats(xs) for name, xs in times.items()},
            "container_phases_median_s": {"scheduling": scheduling, "launch_to_ready": launch},
            "ratio_container_to_plain": ratio,
            "ratio_container_to_plain_same_readiness": like_for_like,
            "ratio_sandboxed_to_unsandboxed": med["container"] / med["container_unsandboxed"],
            "ratio_provisioned_kernel_to_plain": provisioned_ratio,
            "aim_ratio": AIM,
            "aim_met": met,
            "claim_from_standby_median_s": med["claimed"],
            "claim_aim_s": CLAIM_AIM_S,
            "claim_aim_met": claim_met,
            "ratio_fresh_start_to_claim": med["container"] / med["claimed"],
            "first_remote_cell": first,
        })
        print(f"  written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
