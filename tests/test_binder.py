"""binder/ as repo2docker runs it, without Docker: apt.txt names the sandbox's tools, requirements.txt
installs cellhop with the lab extra, postBuild runs in the repository with a fresh HOME, and then
`jupyter lab` started as BinderHub starts it (a base_url and a token, no browser) answers
GET cellhop/api/gpus with the simulated GPUs: the demo has something to run on.

Not repeated here: the apt and pip installs themselves (they change this host; this suite runs on the
cellhop they would install, and tests/test_server_install.py installs it the way pip does)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from server_process import ServerProcess

from cellhop.server_ext.container_network import find_slirp4netns
from cellhop.server_ext.sandbox import find_bubblewrap

REPO = Path(__file__).resolve().parent.parent
BINDER = REPO / "binder"

pytestmark = pytest.mark.timeout(300)


def test_apt_and_requirements_name_what_cellhop_needs():
    assert set(BINDER.joinpath("apt.txt").read_text().split()) == {"bubblewrap", "slirp4netns"}
    assert find_bubblewrap() and find_slirp4netns()  # this host has what apt.txt installs
    [requirement] = [line.strip() for line in BINDER.joinpath("requirements.txt").read_text().splitlines()
                     if line.strip() and not line.startswith("#")]
    assert requirement == "-e .[lab]"  # repo2docker runs pip in the repository's root
    assert "lab" in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_after_postbuild_the_server_binder_starts_serves_the_simulated_gpus(tmp_path, runtime_root):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "CELLHOP_SIMULATED", "CELLHOP_CONTROL"))}
    env.update(HOME=str(home), JUPYTER_RUNTIME_DIR=str(runtime_root))  # short: ipc socket paths live there
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # this environment's `jupyter`
    for _ in range(2):  # a rebuild runs it again: the setting is written once
        built = subprocess.run(["bash", str(BINDER / "postBuild")], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=120)
        assert built.returncode == 0, built.stdout + built.stderr

    server = ServerProcess(runtime_root, simulated_gpus=None, env=env)
    # BinderHub's launch: the single-user server under a base_url with a token. --allow-root only because
    # this suite may run as root (binder's user is not); nothing else beyond what binder passes.
    server.argv = [sys.executable, "-m", "jupyterlab", "--ip=127.0.0.1", f"--port={server.port}", "--no-browser",
                   "--ServerApp.base_url=/user/someone/", f"--IdentityProvider.token={server.token}",
                   f"--ServerApp.root_dir={REPO}", "--allow-root"]
    server.start = _start_under_base_url(server)
    with server:
        status, body = server.request("GET", "/user/someone/cellhop/api/gpus")
        assert status == 200, body
        assert body["simulated"] and [g["type"] for g in body["gpus"]] == ["H100", "H100", "A10G"], body
    for written in home.rglob("*"):
        if written.is_file():
            assert written.read_text(errors="replace").count("simulated_gpus") <= 1, written


def _start_under_base_url(server: ServerProcess):
    """ServerProcess.start, waiting on the cellhop API under the base_url."""
    import time

    def start(timeout: float = 90):
        server.root_dir.mkdir(parents=True, exist_ok=True)
        log = open(server.log_path, "ab")
        server.proc = subprocess.Popen(server.argv, env=server.env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {server.proc.returncode}:\n{server.log()[-3000:]}")
            try:
                if server.request("GET", "/user/someone/cellhop/api/gpus")[0] == 200:
                    return server
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not answer within {timeout} s:\n{server.log()[-3000:]}")
    return start
