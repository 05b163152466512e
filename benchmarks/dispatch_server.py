"""Dispatch with the control plane in a server: a kernel that talks to `cellhop serve` over HTTP.

`dispatch.py` measures the embedded control plane (no HTTP at all); this one measures what a
notebook in JupyterLab pays: a warm `%%remote x = 1` beside the same cell run locally (the plain
kernel's own round trip, in the same kernel), the cell timed inside the kernel (no client round
trip), and a warm `f.remote(1)`. A warm cell or call should make no request to the control plane,
so these figures should sit near the embedded ones.

    python benchmarks/dispatch_server.py [--quick]

Results go to benchmarks/results/dispatch_server-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: str, port: int, token: str, env: dict) -> subprocess.Popen:
    """`cellhop serve` on loopback over a simulated inventory (labelled so), ready to answer."""
    log = open(Path(root) / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "cellhop.server_ext.cli", "serve", f"--port={port}", "--ip=127.0.0.1", "--allow-root",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", f"--Cellhop.runtime_root={root}",
         "--Cellhop.simulated_gpus=H100:2", "--Cellhop.idle_timeout=0"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/cellhop/api/gpus",
                                     headers={"Authorization": f"token {token}"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(request, timeout=2)
            return server
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.2)
    server.kill()
    raise SystemExit(f"cellhop serve did not answer; see {root}/server.log")


class Kernel:
    """A plain ipykernel whose cellhop reaches the server through CELLHOP_CONTROL_URL/TOKEN."""

    def __init__(self, env: dict):
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(env=env, startup_timeout=60)

    def run(self, code: str) -> str:
        out: list[str] = []

        def hook(msg):
            if msg["msg_type"] == "stream":
                out.append(msg["content"].get("text", ""))

        reply = self.kc.execute_interactive(code, timeout=120, output_hook=hook)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"{code!r} failed: {reply['content']}")
        return "".join(out)

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def measure(kernel: Kernel, n: int) -> dict:
    kernel.run("%load_ext cellhop")
    kernel.run("%gpu H100")
    kernel.run("%%remote\nx = 1")  # the container starts: not measured
    kernel.run("import cellhop\ndef ident(x):\n    return x\nf = cellhop.remote(gpu='H100')(ident)\nf.remote(1)")
    for _ in range(5):
        kernel.run("x = 1")
        kernel.run("%%remote\nx = 1")
    inside = json.loads(kernel.run(
        "import json, time\nts = []\n"
        f"for _ in range({n}):\n"
        "    t = time.perf_counter(); get_ipython().run_cell_magic('remote', '', 'x = 1'); "
        "ts.append(time.perf_counter() - t)\nprint(json.dumps(ts))"))
    local, remote = [], []
    for _ in range(n):
        t = time.perf_counter()
        kernel.run("x = 1")
        local.append(time.perf_counter() - t)
        t = time.perf_counter()
        kernel.run("%%remote\nx = 1")
        remote.append(time.perf_counter() - t)
    calls = json.loads(kernel.run(
        "import json, time\nts = []\n"
        f"for _ in range({2 * n}):\n"
        "    t = time.perf_counter(); f.remote(1); ts.append(time.perf_counter() - t)\nprint(json.dumps(ts))"))
    ms = lambda xs: statistics.median(xs) * 1e3  # noqa: E731
    return {"local_cell_ms": ms(local), "remote_cell_ms": ms(remote), "overhead_ms": ms(remote) - ms(local),
            "remote_cell_in_kernel_ms": ms(inside), "f_remote_ms": ms(calls), "samples": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="ch-", dir="/tmp")  # short: ipc socket paths live under it
    env = {k: v for k, v in os.environ.items() if k != "CELLHOP_SIMULATED_GPUS"}
    env["JUPYTER_RUNTIME_DIR"] = f"{root}/jrt"
    port, token = _free_port(), secrets.token_hex(16)
    server = start_server(root, port, token, env)
    kernel = None
    try:
        kernel = Kernel({**env, "CELLHOP_CONTROL_URL": f"http://127.0.0.1:{port}/", "CELLHOP_CONTROL_TOKEN": token})
        figures = measure(kernel, 15 if args.quick else 60)
    finally:
        if kernel is not None:
            kernel.close()
        server.terminate()
        server.wait(30)
        shutil.rmtree(root, ignore_errors=True)
    print("GPUs: simulated inventory (H100:2); containers are real sandboxed kernels")
    print(f"warm %%remote x = 1 (server mode): {figures['remote_cell_ms']:.2f} ms against a local cell's "
          f"{figures['local_cell_ms']:.2f} ms: +{figures['overhead_ms']:.2f} ms "
          f"({figures['remote_cell_ms'] / figures['local_cell_ms']:.2f}x)")
    print(f"the same cell timed inside the kernel: {figures['remote_cell_in_kernel_ms']:.2f} ms")
    print(f"warm f.remote(1) (server mode): {figures['f_remote_ms']:.2f} ms")
    out = Path(__file__).parent / "results" / f"dispatch_server-{time.strftime('%Y-%m-%d')}.json"
    if not args.quick:
        out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "host": "cpu-only, simulated GPUs",
                                   **figures}, indent=2) + "\n")
        print(f"results: {out}")


if __name__ == "__main__":
    main()
