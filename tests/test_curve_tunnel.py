"""The provisioner's loopback tunnel to a kernel that speaks CurveZMQ (a whole GPU kernel on a Ray
node): jupyter_client's own client works through it, while the kernel itself refuses plain clients."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import zmq

from cellhop.kernel.curve_tunnel import CurveTunnel
from cellhop.kernel.wire import KernelConnection

pytestmark = pytest.mark.timeout(90)
CHANNELS = ("shell", "iopub", "stdin", "control", "hb")


def _ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture
def curve_kernel(tmp_path):
    """An ipykernel listening with CurveZMQ; yields the connection info a client gets (no secret key)."""
    public, secret = zmq.curve_keypair()
    info = {"transport": "tcp", "ip": "127.0.0.1", "key": "0123456789abcdef", "signature_scheme": "hmac-sha256",
            **{f"{c}_port": p for c, p in zip(CHANNELS, _ports(5))}}
    (tmp_path / "kernel.json").write_text(json.dumps(
        {**info, "curve_publickey": public.decode(), "curve_secretkey": secret.decode()}))
    proc = subprocess.Popen([sys.executable, "-m", "ipykernel_launcher", "-f", str(tmp_path / "kernel.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield {**info, "curve_serverkey": public.decode()}
    proc.kill()
    proc.wait()


def test_jupyter_client_runs_code_through_the_tunnel(curve_kernel):
    from jupyter_client import BlockingKernelClient

    tunnel = CurveTunnel(curve_kernel)
    try:
        local = tunnel.local_info
        assert local["ip"] == "127.0.0.1" and "curve_serverkey" not in local
        assert {local[f"{c}_port"] for c in CHANNELS}.isdisjoint({curve_kernel[f"{c}_port"] for c in CHANNELS})
        assert tunnel.leads_to(curve_kernel)
        kc = BlockingKernelClient()
        kc.load_connection_info(local)
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=30)  # heartbeat and shell through the tunnel
            out = []
            reply = kc.execute_interactive("print(6 * 7)", timeout=30,
                                           output_hook=lambda m: out.append(m["content"].get("text", "")))
            assert reply["content"]["status"] == "ok" and "".join(out).strip() == "42"  # iopub too
        finally:
            kc.stop_channels()
    finally:
        tunnel.close()


def test_the_kernel_itself_answers_no_plain_client(curve_kernel):
    plain = KernelConnection({k: v for k, v in curve_kernel.items() if k != "curve_serverkey"}, channels=("shell",))
    try:
        plain.send("shell", "kernel_info_request", {})
        assert plain.recv("shell", timeout=2.0) is None
    finally:
        plain.close()
    encrypted = KernelConnection(curve_kernel, channels=("shell",))
    try:
        encrypted.send("shell", "kernel_info_request", {})
        assert encrypted.recv("shell", timeout=20.0).type == "kernel_info_reply"
    finally:
        encrypted.close()
