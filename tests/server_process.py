"""A real `jupyter server` (or `cellhop serve`) in a subprocess, for tests that kill, restart or
point other processes at it. `ServerProcess.api()` calls the cellhop API with the server's token."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortTaken(RuntimeError):
    """The server's port was taken (by another process) between choosing it and the server binding it."""


class ServerProcess:
    """`argv_head` is the command before the options, e.g. ["jupyter", "server"] or ["cellhop", "serve"]."""

    def __init__(self, runtime_root: Path, simulated_gpus: str | None = "H100:1", env: dict | None = None,
                 argv_head: list[str] | None = None, extra_args: list[str] = (), port: int | None = None,
                 token: str | None = None):
        self.port = port or free_port()
        self.port_chosen = port is None  # chosen here: another one where it was taken meanwhile
        self.token = token or secrets.token_hex(16)
        self.runtime_root = runtime_root
        self.log_path = runtime_root / f"server-{self.port}.log"
        # the notebooks' folder: beside cellhop's runtime files, never holding them (a container may work in it)
        self.root_dir = runtime_root / "notebooks"
        self.env = {**os.environ, **(env or {})}
        self.env.pop("CELLHOP_SIMULATED_GPUS", None)
        head = argv_head or [sys.executable, "-m", "jupyter", "server"]
        # a port chosen here: port_retries=0, so one taken meanwhile fails the start (and start() chooses again)
        # rather than the server moving to another port; a test that gives the port decides for itself
        retries = ["--ServerApp.port_retries=0"] if self.port_chosen and not any(
            a.startswith("--ServerApp.port_retries") for a in extra_args) else []
        self.argv = [*head, f"--port={self.port}", *retries, "--ip=127.0.0.1", "--no-browser", "--allow-root",
                     f"--IdentityProvider.token={self.token}", "--ServerApp.jpserver_extensions=cellhop=True",
                     f"--ServerApp.root_dir={self.root_dir}", f"--Cellhop.runtime_root={runtime_root}",
                     "--Cellhop.idle_timeout=0", *extra_args]
        if simulated_gpus:
            self.argv.append(f"--Cellhop.simulated_gpus={simulated_gpus}")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 60) -> ServerProcess:
        for attempt in range(3):
            try:
                return self._start_once(timeout)
            except PortTaken:
                if not self.port_chosen or attempt == 2:
                    raise
                old, self.port = self.port, free_port()
                self.argv = [f"--port={self.port}" if a == f"--port={old}" else a for a in self.argv]
                self.log_path = self.runtime_root / f"server-{self.port}.log"
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> ServerProcess:
        self.root_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if f"port {self.port} is already in use" in self.log().lower():
                    raise PortTaken(self.port)
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                status, _ = self.api("GET", "gpus", timeout=5)  # short: whatever else holds the port may not answer
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server did not answer within {timeout} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, method: str, path: str, body: dict | None = None, timeout: float = 60) -> tuple[int, dict]:
        """A cellhop API call (`path` under /cellhop/api/) with the server's token."""
        return self.request(method, "/cellhop/api/" + path, body, timeout)

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 60) -> tuple[int, dict]:
        """Any route of the server, with its token; the status and the JSON answer."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None,
                         headers={"Authorization": f"token {self.token}"})
            response = conn.getresponse()
            raw = response.read()
            return response.status, (json.loads(raw) if raw else {})
        finally:
            conn.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `sig` to the server alone (not its process group) and wait for it to end."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(signal.SIGTERM)
