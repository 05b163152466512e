"""Kernels reach the control plane on the port the server really listens on.

jupyter_server loads its extensions before it binds its port, and it may still move to another
one then (the configured port is taken and port_retries lets it try the next). A real server in
a subprocess whose configured port is taken: its kernels must get the port it moved to, so a
`%%remote` cell works with no setup (the kernel loads cellhop on its own).
"""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest
from jupyter_client.blocking import BlockingKernelClient
from processes import container_kernel_pids, wait_until
from server_process import ServerProcess, free_port

pytestmark = pytest.mark.timeout(180)


class MovedServer(ServerProcess):
    """A ServerProcess that finds the port the server moved to (its jpserver-<pid>.json says)."""

    def start(self, timeout: float = 60) -> MovedServer:
        self.root_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        import subprocess

        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        info = self.runtime_dir / f"jpserver-{self.proc.pid}.json"
        deadline = time.monotonic() + timeout
        while not info.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start within {timeout} s:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        time.sleep(0.2)  # written whole
        self.port = json.loads(info.read_text())["port"]
        return self

    @property
    def runtime_dir(self):
        return self.runtime_root / "jrt"


def wait_for_ready(kc: BlockingKernelClient, server: ServerProcess, timeout: float = 60) -> None:
    """Until the kernel answers kernel_info on shell and its status for that request reaches us on
    IOPub: a SUB socket only hears what is published after it has joined, so a reply on shell
    alone does not say the next cell's output will reach us (jupyter_client's own wait needs the
    heartbeat of a kernel it manages)."""
    from queue import Empty

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg_id = kc.kernel_info()
        try:
            while kc.get_shell_msg(timeout=2)["parent_header"].get("msg_id") != msg_id:
                pass
        except Empty:
            continue
        try:
            while kc.get_iopub_msg(timeout=1)["parent_header"].get("msg_id") != msg_id:
                pass
            return
        except Empty:
            continue  # IOPub had not joined yet when the kernel published; ask again
    raise AssertionError(f"the kernel did not answer within {timeout} s; the server's log:\n{server.log()[-4000:]}")


def execute(kc: BlockingKernelClient, code: str, timeout: float = 90) -> tuple[dict, str]:
    out = []

    def hook(msg):
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))

    reply = kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    return reply["content"], "".join(out)


def test_a_server_that_moved_off_a_taken_port_hands_its_kernels_the_port_it_listens_on(runtime_root):
    taken = free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", taken))
    blocker.listen()
    (runtime_root / "jrt").mkdir()
    server = MovedServer(runtime_root, port=taken, extra_args=["--ServerApp.port_retries=5"],
                         env={"JUPYTER_RUNTIME_DIR": str(runtime_root / "jrt")})
    try:
        server.start()
        assert server.port != taken, server.log()[-2000:]
        assert f"The port {taken} is already in use" in server.log()
        blocker.close()  # a kernel still pointed at the old port now fails at once instead of hanging
        status, gpus = server.request("GET", "/cellhop/api/gpus")
        assert status == 200 and gpus["simulated"], gpus

        status, kernel = server.request("POST", "/api/kernels", {"name": "python3", "path": ""}, timeout=90)
        assert status == 201, kernel
        kc = BlockingKernelClient()
        kc.load_connection_file(str(server.runtime_dir / f"kernel-{kernel['id']}.json"))
        kc.start_channels()
        try:
            wait_for_ready(kc, server)
            content, out = execute(kc, "import os\nprint(os.environ['CELLHOP_CONTROL_URL'])")
            assert content["status"] == "ok", out
            assert out.strip() == f"http://127.0.0.1:{server.port}/", out
            content, out = execute(kc, "%%remote --gpu H100\nimport os\nx = 6 * 7\n"
                                       "print('on', os.environ['CELLHOP_GPU_TYPE'])")
            assert content["status"] == "ok", out
            assert "on H100" in out, out
            content, out = execute(kc, "print(x)")
            assert out.strip() == "42", out
        finally:
            kc.stop_channels()
        _, listed = server.request("GET", "/cellhop/api/containers")
        assert [c["phase"] for c in listed["containers"]] == ["ready"]
        status, _ = server.request("DELETE", f"/api/kernels/{kernel['id']}")
        assert status == 204
    finally:
        blocker.close()
        server.stop(signal.SIGTERM)
    wait_until(lambda: not container_kernel_pids(runtime_root), timeout=15, what="the kernel's container to stop")
