"""The control plane as a process: a real `jupyter server` (and `cellhop serve`) in a subprocess.

When the server stops, its containers stop (after a SIGKILL: tests/test_faults.py); `cellhop serve`
runs headless for a kernel that was not started by it; GPU metrics come from NVML (through the fake
libnvidia-ml) with unsupported readings left out.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import sys

import pytest
from kernel_fixtures import start_cellhop_kernel
from processes import container_kernel_pids, wait_until
from server_process import ServerProcess

pytestmark = pytest.mark.timeout(180)


def start_container(server, gpu="H100") -> dict:
    status, body = server.api("POST", "containers", {"spec": {"gpu": gpu, "owner": "lifecycle test"}})
    assert status == 201, body
    return body


def test_stopping_the_server_stops_its_containers_and_frees_their_gpus(runtime_root):
    server = ServerProcess(runtime_root).start()
    container = start_container(server)
    assert wait_until(lambda: container_kernel_pids(runtime_root), timeout=10, what="the container kernel")
    assert server.stop(signal.SIGTERM) is not None
    assert not container_kernel_pids(runtime_root)  # stopped before the server exited
    with ServerProcess(runtime_root) as again:
        _, gpus = again.api("GET", "gpus")
        assert [g["holder"] for g in gpus["gpus"]] == [None]
        assert container["id"] not in json.dumps(again.api("GET", "containers")[1])


def test_cellhops_own_log_records_are_in_the_servers_log_in_its_format(runtime_root):
    """Records of cellhop's modules (the `cellhop` logger) go through the server's log: before, nothing
    configured that logger, so its warnings came out bare and its info records not at all."""
    with ServerProcess(runtime_root) as server:
        start_container(server)
        log = server.log()
    stamp = r"\[I \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} cellhop\] "
    assert re.search(stamp + "cellhop: container limits on this host: ", log), log[-3000:]


def test_cellhop_serve_runs_headless_for_a_kernel_it_did_not_start(runtime_root, monkeypatch):
    cli = shutil.which("cellhop")
    head = [cli, "serve"] if cli else [sys.executable, "-m", "cellhop.server_ext.cli", "serve"]
    with ServerProcess(runtime_root, argv_head=head) as server:
        assert "headless control plane" in server.log()
        monkeypatch.setenv("CELLHOP_CONTROL_URL", server.url)
        monkeypatch.setenv("CELLHOP_CONTROL_TOKEN", server.token)
        with start_cellhop_kernel() as kernel:
            shown = kernel.ok("%gpu H100").stdout
            assert "via the cellhop server at 127.0.0.1" in shown and "simulated" in shown
            ran = kernel.ok("%%remote\nimport os\nanswer = os.environ['CELLHOP_GPU_TYPE']")
            assert kernel.ok("print(answer)").stdout.strip() == "H100", ran
            _, listed = server.api("GET", "containers")
            [container] = listed["containers"]
            assert container["phase"] == "ready" and container["gpus"][0]["type"] == "H100"
        wait_until(lambda: server.api("GET", f"containers/{container['id']}")[1]["phase"] == "exited",
                   timeout=15, what="the kernel's container to stop when the kernel shut down")


async def _metric_samples(server, count: int) -> list[dict]:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    request = HTTPRequest(f"ws://127.0.0.1:{server.port}/cellhop/api/events?interval=0.2",
                          headers={"Authorization": f"token {server.token}"})
    ws = await websocket_connect(request)
    samples = []
    while len(samples) < count:
        event = json.loads(await asyncio.wait_for(ws.read_message(), 10))
        if event["type"] == "metrics":
            samples.append(event)
    ws.close()
    return samples


def test_nvml_metrics_stream_with_unsupported_readings_left_out(runtime_root, fake_nvml_dir):
    env = {"LD_LIBRARY_PATH": str(fake_nvml_dir),
           "FAKE_NVML_DEVICES": "NVIDIA H100 80GB HBM3:81559:0;NVIDIA A100-SXM4-40GB:40960:na:nopower+noprocs"}
    with ServerProcess(runtime_root, simulated_gpus=None, env=env) as server:
        _, gpus = server.api("GET", "gpus")
        assert [g["type"] for g in gpus["gpus"]] == ["H100", "A100-40GB"] and gpus["simulated"] is False
        samples = asyncio.run(_metric_samples(server, 3))
    h100, a100 = samples[-1]["gpus"]
    assert "simulated" not in h100
    assert (h100["utilization"], h100["power_w"], h100["temperature_c"]) == (40, 250.0, 50)
    assert h100["memory_used"] == 2**30 and h100["processes"] == [{"pid": 4242, "used_memory": 2**30}]
    assert a100["utilization"] == 41 and a100["temperature_c"] == 51
    assert "power_w" not in a100 and "processes" not in a100  # not supported by that card: left out


def test_a_kernels_event_subscription_follows_the_server_across_a_restart(runtime_root):
    import threading
    import time

    from cellhop.kernel.http_control_plane import HttpControlPlane

    server = ServerProcess(runtime_root).start()
    events, lock = [], threading.Lock()

    def listener(event):
        with lock:
            events.append(event)

    def kinds():
        with lock:
            return [e["type"] for e in events]

    client = HttpControlPlane(server.url, server.token)
    sub = client.subscribe(listener, metrics_interval=0.2)
    try:
        wait_until(lambda: kinds().count("metrics") >= 3, timeout=15, what="metric samples over HTTP")
        assert kinds()[0] == "hello"
        sub.pause()
        time.sleep(0.5)  # samples already on their way arrive
        paused_at = kinds().count("metrics")
        time.sleep(1.0)  # on purpose: the paused stream must stay (nearly) quiet; 5 samples if it were not
        assert kinds().count("metrics") <= paused_at + 2  # one more late one allowed on a loaded runner
        sub.resume()
        wait_until(lambda: kinds().count("metrics") >= paused_at + 3, timeout=10, what="samples after resume")
        server.stop(signal.SIGTERM)
        hellos = kinds().count("hello")
        server = ServerProcess(runtime_root, port=server.port, token=server.token).start()
        wait_until(lambda: kinds().count("hello") > hellos, timeout=20, what="the stream to reconnect")
        container = start_container(server)
        wait_until(lambda: any(e["type"] == "container" and e["id"] == container["id"] for e in list(events)),
                   timeout=10, what="lifecycle events after the reconnect")
    finally:
        sub.close()
        server.stop(signal.SIGTERM)
