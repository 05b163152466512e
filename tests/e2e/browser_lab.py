"""What the browser tests share: a JupyterLab server with cellhop (simulated GPUs) in a
subprocess, and helpers for the page (screenshots, waiting on kernel idle).

The server loads this checkout's built panel (labextension/dist, when built) ahead of any
other install of it, so the browser drives the panel of the code under test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
LAB_DIST = Path(__file__).resolve().parent.parent.parent / "labextension" / "dist"
TOKEN = "cellhop-e2e-token"
BASE = "/ch-e2e/"  # a base_url, as behind JupyterHub's /user/<name>/ prefix
GPUS = "H100:2,A10G:1"
NOTEBOOK = {
    "cells": [
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "%gpu H100"},  # kernels of a cellhop server load it themselves
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": "%%remote\nimport os, time\nt_end = time.time() + 1\nwhile time.time() < t_end: pass\n"
                   "print('remote pid', os.getpid())"},
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4, "nbformat_minor": 5,
}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/run does) to run the browser test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server in a subprocess (as root: --allow-root), cellhop enabled, simulated GPUs.

    Its user settings (the theme, say) live in the runtime folder, not in ~/.jupyter."""

    def __init__(self, root: Path, runtime: Path, port: int):
        self.root, self.runtime, self.port = root, runtime, port
        self.url = f"http://127.0.0.1:{port}{BASE}"
        self.proc: subprocess.Popen | None = None
        self.log = runtime / "lab.log"

    def _jupyter_path(self) -> str | None:
        """A data folder whose labextensions/ holds this checkout's build of the panel. CI always builds
        it (.ci/run): a missing build is a setup problem, said as such rather than as a missing sidebar."""
        if not (LAB_DIST / "package.json").is_file():
            pytest.fail("the JupyterLab panel is not built (labextension/dist/package.json is missing), so the "
                        "browser tests have no sidebar to drive: build it with `cd labextension && npm install && "
                        "npm run build` (.ci/run does; `pip install -e .` does where Node.js >= 20.19 is present)",
                        pytrace=False)
        name = json.loads((LAB_DIST / "package.json").read_text())["name"]
        data = self.runtime / "jupyter-data"
        link = data / "labextensions" / name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(LAB_DIST, target_is_directory=True)
        return str(data)

    def start(self) -> None:
        """Start it; where its port was taken before it bound it (port_retries=0: it stops rather than
        move where the tests do not look), again on another port, at most twice."""
        for attempt in range(3):
            if self._start_once():
                return
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}{BASE}"
        raise AssertionError(f"JupyterLab found no free port:\n{self.log.read_text()[-3000:]}")

    def _start_once(self) -> bool:
        """True once it answers; False where its port was taken."""
        env = {**os.environ, "CELLHOP_SIMULATED_GPUS": GPUS, "JUPYTER_RUNTIME_DIR": str(self.runtime),
               "JUPYTER_PLATFORM_DIRS": "1"}
        for name in ("CELLHOP_CONTROL_URL", "CELLHOP_CONTROL_TOKEN", "JPY_PARENT_PID"):
            env.pop(name, None)
        data = self._jupyter_path()
        if data:
            env["JUPYTER_PATH"] = os.pathsep.join(p for p in (data, os.environ.get("JUPYTER_PATH")) if p)
        args = [sys.executable, "-m", "jupyter", "lab", "--allow-root", "--no-browser",
                f"--port={self.port}", "--ServerApp.port_retries=0", "--ip=127.0.0.1", f"--ServerApp.base_url={BASE}",
                f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={self.root}",
                "--ServerApp.jpserver_extensions=cellhop=True",
                f"--Cellhop.runtime_root={self.runtime}", "--Cellhop.idle_timeout=0",
                f"--Cellhop.state_dir={self.runtime / 'state'}",
                "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                f"--LabApp.workspaces_dir={self.runtime / 'workspaces'}",
                f"--LabApp.user_settings_dir={self.runtime / 'user-settings'}"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.api("gpus")
                return True
            except OSError:
                if self.proc.poll() is not None and f"port {self.port} is already in use" in \
                        self.log.read_text(errors="replace").lower():
                    return False
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"JupyterLab did not start:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.2)

    def request(self, path: str, method: str = "GET", body: dict | bytes | None = None) -> bytes:
        """`{base_url}cellhop/api/<path>` with the token; a JSON body for a dict, raw bytes as given."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(f"{self.url}cellhop/api/{path}", method=method, data=data,
                                         headers={"Authorization": f"token {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def api(self, path: str, method: str = "GET", body: dict | bytes | None = None) -> dict:
        return json.loads(self.request(path, method, body))

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the server stops its kernels and containers
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


def wait_kernel_idle(page) -> None:
    """The current notebook's kernel is connected and idle (JupyterLab's own state, not a sleep)."""
    page.wait_for_function("""() => {
        const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
        const kernel = widget && widget.sessionContext && widget.sessionContext.session
            && widget.sessionContext.session.kernel;
        return Boolean(kernel && kernel.status === 'idle' && kernel.connectionStatus === 'connected');
    }""")
