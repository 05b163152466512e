"""The provisioner's loopback tunnel to a kernel that speaks CurveZMQ (a whole GPU kernel on a Ray
node): jupyter_client's own client works through it, while the kernel itself refuses plain clients."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import zmq
from blocking_client import stdout_until_idle

from cellhop.kernel.curve_tunnel import CurveTunnel
from cellhop.wire import KernelConnection

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


def _wait_ready(info: dict, timeout: float = 60.0) -> dict:
    """Wait until the kernel answers (on a busy machine it takes seconds; jupyter_client's heartbeat
    check would call it dead meanwhile)."""
    conn = KernelConnection(info, channels=("shell",))
    try:
        conn.request("shell", "kernel_info_request", {}, timeout=timeout)
    finally:
        conn.close()
    return info


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
    yield _wait_ready({**info, "curve_serverkey": public.decode()})
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


def _input_through(local_info: dict) -> None:
    """`input()` in the kernel behind `local_info`, answered by jupyter_client's stdin channel."""
    from jupyter_client import BlockingKernelClient

    kc = BlockingKernelClient()
    kc.load_connection_info(local_info)
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=30)
        msg_id = kc.execute("answer = input('name? ')\nprint('got', answer)", allow_stdin=True)
        request = kc.get_stdin_msg(timeout=15)  # before the fix: never came (stdin addressed elsewhere)
        assert request["msg_type"] == "input_request" and request["content"]["prompt"] == "name? "
        kc.input("cellhop")
        assert stdout_until_idle(kc, msg_id, timeout=15).strip() == "got cellhop"
        assert kc.get_shell_msg(timeout=15)["content"]["status"] == "ok"
    finally:
        kc.stop_channels()


def test_input_works_through_the_tunnel(curve_kernel):
    """The kernel sends input_request on stdin to the identity of the shell request: the tunnel's shell
    and stdin sockets must share it (as jupyter_client's own do)."""
    tunnel = CurveTunnel(curve_kernel)
    try:
        _input_through(tunnel.local_info)
    finally:
        tunnel.close()


def _start_guarded(tmp_path):
    """A container kernel as a Ray node runs it (curve_tunnel.serve_kernel): CurveZMQ, and a ZAP
    authenticator admitting only the client key pair its connection file names. (process, info)"""
    from cellhop.wire import ALLOWED_CLIENTS, CLIENT_PUBLIC, CLIENT_SECRET

    public, secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    info = {"transport": "tcp", "ip": "127.0.0.1", "key": "0123456789abcdef", "signature_scheme": "hmac-sha256",
            **{f"{c}_port": p for c, p in zip(CHANNELS, _ports(5))}}
    (tmp_path / "kernel.json").write_text(json.dumps(
        {**info, "curve_publickey": public.decode(), "curve_secretkey": secret.decode(),
         ALLOWED_CLIENTS: [client_public.decode()]}))
    proc = subprocess.Popen([sys.executable, "-m", "cellhop.kernel.curve_tunnel", "-f", str(tmp_path / "kernel.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return proc, _wait_ready({**info, "curve_serverkey": public.decode(), CLIENT_PUBLIC: client_public.decode(),
                                  CLIENT_SECRET: client_secret.decode()})
    except BaseException:
        proc.kill()
        proc.wait()
        raise


@pytest.fixture
def guarded_kernel(tmp_path):
    proc, info = _start_guarded(tmp_path)
    yield info
    proc.kill()
    proc.wait()


def test_a_guarded_kernel_shuts_down(tmp_path):
    """The authenticator's sockets do not keep the kernel's contexts (and so the process) alive."""
    proc, info = _start_guarded(tmp_path)
    try:
        conn = KernelConnection(info, channels=("control",))
        assert conn.request("control", "shutdown_request", {"restart": False}, timeout=20).content["status"] == "ok"
        conn.close()
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()


def test_the_kernel_admits_only_its_client_key(guarded_kernel):
    from cellhop.wire import CLIENT_PUBLIC, CLIENT_SECRET

    right = KernelConnection(guarded_kernel, channels=("shell", "iopub"))
    try:
        assert right.request("shell", "kernel_info_request", {}, timeout=30).type == "kernel_info_reply"
        other_public, other_secret = (k.decode() for k in zmq.curve_keypair())
        # knows the server's public key (it travels through Ray) but not the client pair: nothing at all
        for info in ({**guarded_kernel, CLIENT_PUBLIC: other_public, CLIENT_SECRET: other_secret},
                     {k: v for k, v in guarded_kernel.items() if k not in (CLIENT_PUBLIC, CLIENT_SECRET)}):
            stranger = KernelConnection(info, channels=("shell", "iopub"))
            try:
                stranger.send("shell", "kernel_info_request", {})
                assert stranger.recv("shell", timeout=3.0) is None
                # the right client's request makes the kernel publish (busy, idle): not to the stranger
                assert right.request("shell", "kernel_info_request", {}, timeout=30).type == "kernel_info_reply"
                assert right.recv("iopub", timeout=5.0) is not None
                assert stranger.recv("iopub", timeout=2.0) is None
            finally:
                stranger.close()
    finally:
        right.close()
    # the right client still works, through the tunnel too (jupyter_client, input() included)
    tunnel = CurveTunnel(guarded_kernel)
    try:
        assert not set(tunnel.local_info) & {CLIENT_PUBLIC, CLIENT_SECRET, "curve_serverkey"}
        _input_through(tunnel.local_info)
    finally:
        tunnel.close()
