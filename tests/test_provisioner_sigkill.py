"""A real `jupyter server` with a GPU kernel, killed with SIGKILL: its container dies with it, its
GPU lease goes with it, and the server started again finds nothing of them left: no container
process, no lease, no container folder, no kernel. Started with another inventory, its launcher
no longer offers the GPU type that is gone."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from processes import container_kernel_pids, wait_until

from cellhop.server_ext.leases import read_locked

pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`jupyter server --allow-root` in its own Jupyter folders, with cellhop and a simulated inventory."""

    def __init__(self, root: Path, simulated_gpus: str):
        self.root, self.port, self.token = root, _free_port(), secrets.token_hex(16)
        config_dir = root / f"config-{self.port}"
        config_dir.mkdir()
        (config_dir / "jupyter_server_config.json").write_text(json.dumps({
            "ServerApp": {"jpserver_extensions": {"cellhop": True}, "port": self.port, "ip": "127.0.0.1",
                          "open_browser": False, "root_dir": str(root / "notebooks"), "port_retries": 0},
            "IdentityProvider": {"token": self.token},
            "Cellhop": {"simulated_gpus": simulated_gpus, "runtime_root": str(root / "rt"), "idle_timeout": 0},
        }))
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config_dir), "JUPYTER_DATA_DIR": str(root / "data"),
               "JUPYTER_RUNTIME_DIR": str(root / "jrt"), "JUPYTER_PATH": "", "JUPYTER_CONFIG_PATH": ""}
        env.pop("CELLHOP_SIMULATED_GPUS", None)
        self.log = open(root / f"server-{self.port}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "jupyter_server", "--allow-root"], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._up, timeout=30, what=f"the server on port {self.port} (log: {self.log.name})")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the server exited: {Path(self.log.name).read_text()[-2000:]}")
        try:
            self.call("GET", "api/status")
            return True
        except (urllib.error.URLError, ConnectionError):
            return False

    def call(self, method: str, path: str, body: dict | None = None):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            return json.loads(r.read() or b"null")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def root():
    path = Path(tempfile.mkdtemp(prefix="ch-", dir="/tmp"))
    (path / "notebooks").mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_server_killed_with_sigkill_leaves_no_container_or_lease_behind(root):
    lease = root / "rt" / "leases" / "GPU-simulated-h100-0.lock"
    first = Server(root, "H100:1")
    try:
        specs = first.call("GET", "api/kernelspecs")["kernelspecs"]
        assert specs["cellhop-h100"]["spec"]["display_name"] == "Python 3 · H100 (simulated)"
        kernel = first.call("POST", "api/kernels", {"name": "cellhop-h100", "path": ""})
        [container] = first.call("GET", "cellhop/api/containers")["containers"]
        assert container["phase"] == "ready" and kernel["id"][:8] in container["owner"]
        assert container_kernel_pids(root / "rt"), "the kernel's container should be running"
        assert read_locked(lease)["container"] == container["id"]
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
    finally:
        first.stop()
    wait_until(lambda: not container_kernel_pids(root / "rt"), timeout=15,
               what="the container to die with its server")
    assert read_locked(lease) is None  # the lease died with its holder

    second = Server(root, "A10G:1")  # the H100 is gone from this host
    try:
        assert second.call("GET", "api/kernels") == []
        assert second.call("GET", "cellhop/api/containers")["containers"] == []
        assert not list((root / "rt" / "containers").iterdir())  # the dead server's folder was reaped
        assert not container_kernel_pids(root / "rt") and read_locked(lease) is None
        specs = second.call("GET", "api/kernelspecs")["kernelspecs"]
        assert "cellhop-a10g" in specs and "cellhop-h100" not in specs
    finally:
        second.stop()
