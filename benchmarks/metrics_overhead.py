"""CPU cost of the GPU metric stream in the server, with one client at 1 Hz and at 10 Hz.

A real `jupyter server` with the cellhop extension runs in a subprocess; this
process is the one WebSocket client (`cellhop/api/events`). The figure is the
server process's CPU time (all its threads, from /proc) over the window,
as a percent of one core, minus the same server idle with no client.

Two sources of samples, same run:
- nvml: the real NVML code path (nvidia-ml-py) over the fake libnvidia-ml the
  tests build (8 devices). No GPU is needed, but a real driver's queries take
  longer than the fake's; on a GPU host, pass --real-nvml to use the real one.
- simulated: a simulated inventory (8 cards), one held by a running container,
  whose readings come from /proc.

Aim (issue 4): under 1% of one core at 1 Hz.

    python benchmarks/metrics_overhead.py [--seconds 20] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _common import host_info, print_table, write_results  # noqa: E402
from server_process import ServerProcess  # noqa: E402

FAKE_DEVICES = ";".join(["NVIDIA H100 80GB HBM3:81559:0"] * 8)
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def build_fake_nvml(folder: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise SystemExit("gcc is needed to build the fake libnvidia-ml (apt-get install gcc)")
    source = HERE.parent / "tests" / "fake_nvml" / "fake_nvml.c"
    subprocess.run([gcc, "-shared", "-fPIC", "-O1", "-o", str(folder / "libnvidia-ml.so.1"), str(source)],
                   check=True)
    return folder


async def listen(server: ServerProcess, interval: float | None, seconds: float) -> tuple[float, int]:
    """(server CPU % of one core, metric samples received) over `seconds` with one client
    at `interval` (None: no client at all)."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    ws = None
    if interval is not None:
        request = HTTPRequest(f"ws://127.0.0.1:{server.port}/cellhop/api/events?interval={interval}",
                              headers={"Authorization": f"token {server.token}"})
        ws = await websocket_connect(request)
        await ws.read_message()  # hello
        await asyncio.sleep(1.0)  # settle
    samples = 0
    start_cpu, start = cpu_seconds(server.proc.pid), time.monotonic()
    deadline = start + seconds
    while (left := deadline - time.monotonic()) > 0:
        if ws is None:
            await asyncio.sleep(left)
            continue
        try:
            text = await asyncio.wait_for(ws.read_message(), left)
        except asyncio.TimeoutError:
            break
        if text and json.loads(text)["type"] == "metrics":
            samples += 1
    used = cpu_seconds(server.proc.pid) - start_cpu
    wall = time.monotonic() - start
    if ws is not None:
        ws.close()
    return used / wall * 100.0, samples


def measure(label: str, server: ServerProcess, seconds: float) -> list[dict]:
    rows = []
    idle, _ = asyncio.run(listen(server, None, seconds))
    for hz in (1, 10):
        percent, samples = asyncio.run(listen(server, 1.0 / hz, seconds))
        rows.append({"source": label, "rate": f"{hz} Hz", "samples": samples,
                     "server CPU %": round(percent, 3), "idle CPU %": round(idle, 3),
                     "stream CPU % of a core": round(max(0.0, percent - idle), 3)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each window")
    parser.add_argument("--real-nvml", action="store_true", help="use this host's NVML (a GPU host)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="ch-", dir="/tmp") as tmp:
        root = Path(tmp)
        if args.real_nvml:
            env, label = {}, "nvml (this host's GPUs)"
        else:
            env = {"LD_LIBRARY_PATH": str(build_fake_nvml(root)), "FAKE_NVML_DEVICES": FAKE_DEVICES}
            label = "nvml (fake libnvidia-ml, 8 GPUs)"
        with ServerProcess(root, simulated_gpus=None, env=env) as server:
            rows += measure(label, server, args.seconds)
        with ServerProcess(root, simulated_gpus="H100:8") as server:
            status, body = server.api("POST", "containers", {"spec": {"gpu": "H100", "owner": "benchmark"}})
            assert status == 201, body
            rows += measure("simulated (8 GPUs, 1 held)", server, args.seconds)

    print("GPU metric stream: CPU of the server process, one WebSocket client")
    print_table(rows, ["source", "rate", "samples", "server CPU %", "idle CPU %", "stream CPU % of a core"])
    at_1hz = [r["stream CPU % of a core"] for r in rows if r["rate"] == "1 Hz"]
    verdict = "met" if max(at_1hz) < 1.0 else "MISSED"
    print(f"aim: under 1% of one core at 1 Hz -> {verdict} (worst {max(at_1hz):.3f}%)")
    if not args.no_write:
        path = write_results("metrics_overhead", {"host": host_info(), "seconds": args.seconds, "rows": rows,
                                                  "aim_1hz_under_1pct": verdict})
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
