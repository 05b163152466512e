"""The `cellhop` command as a newcomer types it: `cellhop demo --port N` and `cellhop serve --port N`
(options in Jupyter's space-separated form too), as root without --allow-root; the demo announces and
serves the simulated inventory on a host without GPUs; an installed (non-editable) cellhop opens a copy
of the demo in the user's folder, never the one inside the environment.

Real servers in subprocesses with a fresh HOME; each is stopped at the end."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from server_process import ServerProcess, free_port

from cellhop.server_ext.cli import demo_notebook
from cellhop.server_ext.gpu_inventory import load_inventory

pytestmark = pytest.mark.timeout(300)
CLI = [sys.executable, "-m", "cellhop.server_ext.cli"]


def _server(runtime_root, tmp_path, argv_tail: list[str]) -> ServerProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"HOME": str(home), "JUPYTER_RUNTIME_DIR": str(runtime_root), "JUPYTER_CONFIG_DIR": str(home / ".jupyter"),
           "JUPYTER_DATA_DIR": str(home / "data")}
    server = ServerProcess(runtime_root, simulated_gpus=None, env=env)
    for name in [k for k in server.env if k.startswith("CELLHOP_CONTROL")]:
        del server.env[name]
    # the command as typed, not ServerProcess's own options (it would add --allow-root)
    server.argv = [*CLI, *argv_tail, "--port", str(server.port), "--ip", "127.0.0.1", "--no-browser",
                   f"--IdentityProvider.token={server.token}"]
    return server


def test_cellhop_serve_takes_jupyters_options_and_runs_as_root(runtime_root, tmp_path):
    server = _server(runtime_root, tmp_path, ["serve", "--Cellhop.simulated_gpus", "A10G:1",
                                              f"--Cellhop.runtime_root={runtime_root}"])
    server.root_dir.mkdir(parents=True, exist_ok=True)
    server.argv += ["--ServerApp.root_dir", str(server.root_dir)]
    with server:
        status, body = server.api("GET", "gpus")
        assert status == 200 and [g["type"] for g in body["gpus"]] == ["A10G"], body
    if os.geteuid() == 0:
        assert "passing --allow-root" in server.log()


@pytest.mark.skipif(bool(load_inventory(environ={}).gpus), reason="this host has GPUs: the demo would use them")
def test_cellhop_demo_with_a_space_separated_port_serves_the_demo_on_the_simulated_inventory(runtime_root, tmp_path):
    server = _server(runtime_root, tmp_path, ["demo"])
    with server:
        status, body = server.api("GET", "gpus")
        assert status == 200 and body["simulated"], body
        assert [g["type"] for g in body["gpus"]] == ["H100", "H100", "A10G"], body
        status, notebook = server.request("GET", "/api/contents/demo.ipynb?content=0")
        assert status == 200 and notebook["type"] == "notebook", notebook
    log = server.log()
    assert "SIMULATED inventory (H100:2,A10G:1)" in log and "the GPUs are not" in log, log[-3000:]


def test_an_installed_demo_opens_as_a_copy_in_the_users_folder(tmp_path):
    prefix, package, home = tmp_path / "venv", tmp_path / "venv" / "site-packages" / "cellhop", tmp_path / "home"
    installed = prefix / "share" / "cellhop" / "examples" / "demo.ipynb"
    installed.parent.mkdir(parents=True)
    installed.write_text('{"installed": 1}')
    package.mkdir(parents=True)
    notebook, note = demo_notebook(package, prefix, home)
    assert notebook == home / "cellhop-demo" / "demo.ipynb" and notebook.read_text() == '{"installed": 1}'
    assert str(notebook) in note
    notebook.write_text('{"edited": 1}')  # the user's edits stay theirs
    again, note = demo_notebook(package, prefix, home)
    assert again == notebook and again.read_text() == '{"edited": 1}' and "your copy" in note
    assert installed.read_text() == '{"installed": 1}'

    checkout = tmp_path / "checkout"  # from a source checkout (editable install): the checkout's own
    (checkout / "examples").mkdir(parents=True)
    (checkout / "examples" / "demo.ipynb").write_text("{}")
    assert demo_notebook(checkout / "cellhop", prefix, home) == (checkout / "examples" / "demo.ipynb", None)
    assert Path(installed).is_file()
