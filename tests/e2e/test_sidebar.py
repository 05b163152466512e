"""End to end in a real browser: JupyterLab with cellhop (simulated GPUs), its sidebar panel in
Debian's Chromium driven by Playwright.

A notebook runs a %%remote cell; the panel shows the GPUs (simulated, live metrics) and the
running container with its notebook; the container is stopped from the panel; the server
restarts and the panel's event stream comes back without a reload. Screenshots are saved in
tests/artifacts/.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
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

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is missing: `apt-get install chromium` (.ci/run does) to run the browser test"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server in a subprocess (as root: --allow-root), cellhop enabled, simulated GPUs."""

    def __init__(self, root: Path, runtime: Path, port: int):
        self.root, self.runtime, self.port = root, runtime, port
        self.url = f"http://127.0.0.1:{port}{BASE}"
        self.proc: subprocess.Popen | None = None
        self.log = runtime / "lab.log"

    def start(self) -> None:
        env = {**os.environ, "CELLHOP_SIMULATED_GPUS": GPUS, "JUPYTER_RUNTIME_DIR": str(self.runtime),
               "JUPYTER_PLATFORM_DIRS": "1"}
        for name in ("CELLHOP_CONTROL_URL", "CELLHOP_CONTROL_TOKEN", "JPY_PARENT_PID"):
            env.pop(name, None)
        args = [sys.executable, "-m", "jupyter", "lab", "--allow-root", "--no-browser",
                f"--port={self.port}", "--ip=127.0.0.1", f"--ServerApp.base_url={BASE}",
                f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={self.root}",
                "--ServerApp.jpserver_extensions=cellhop=True",
                f"--Cellhop.runtime_root={self.runtime}", "--Cellhop.idle_timeout=0",
                "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                f"--LabApp.workspaces_dir={self.runtime / 'workspaces'}"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.api("gpus")
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"JupyterLab did not start:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.2)

    def api(self, path: str, method: str = "GET") -> dict:
        request = urllib.request.Request(f"{self.url}cellhop/api/{path}", method=method,
                                         headers={"Authorization": f"token {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the server stops its kernels and containers
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def lab():
    runtime = Path(tempfile.mkdtemp(prefix="ch-", dir="/tmp"))
    root = runtime / "nb"
    root.mkdir()
    (root / "gpu-demo.ipynb").write_text(json.dumps(NOTEBOOK))
    server = Lab(root, runtime, free_port())
    server.start()
    yield server
    server.stop()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(server.log, ARTIFACTS / "sidebar-jupyterlab.log")
    shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install '.[test]')")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        yield pg
        context.close()
        browser.close()


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


def test_sidebar_shows_gpus_and_containers_and_stops_one(lab, page):
    page.goto(f"{lab.url}lab/tree/gpu-demo.ipynb?reset&token={TOKEN}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", state="visible")
    wait_kernel_idle(page)

    # the panel: a tab in the left sidebar
    page.click(".jp-SideBar .lm-TabBar-tab[data-id='cellhop-panel']")
    panel = page.locator("#cellhop-panel")
    panel.wait_for(state="visible")
    page.wait_for_selector("#cellhop-panel .jp-CellhopPanel-status[data-status='connected']")
    gpus = panel.locator(".jp-CellhopPanel-gpu")
    gpus.nth(2).wait_for()
    assert gpus.count() == 3
    names = [n.strip() for n in panel.locator(".jp-CellhopPanel-gpuName").all_inner_texts()]
    assert names == ["[0] H100", "[1] H100", "[2] A10G"]
    assert panel.locator(".jp-CellhopPanel-gpu .jp-CellhopPanel-badge").count() == 3  # simulated, said so
    assert "Simulated inventory" in panel.locator(".jp-CellhopPanel-note").inner_text()
    assert "No containers" in panel.locator(".jp-CellhopPanel-containers").inner_text()
    # live metrics: free simulated cards read 0 %
    page.wait_for_function("""() => [...document.querySelectorAll('#cellhop-panel [data-value="util"]')]
                                        .every(e => e.textContent === '0%')""")

    # a %%remote cell starts this notebook's container
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    page.wait_for_selector(".jp-OutputArea-output:has-text('remote pid')")
    wait_kernel_idle(page)
    containers = lab.api("containers")["containers"]
    assert len(containers) == 1, containers
    cid = containers[0]["id"]
    held_uuid = containers[0]["gpus"][0]["uuid"]

    row = panel.locator(f".jp-CellhopPanel-container[data-id='{cid}']")
    row.wait_for()
    assert row.get_attribute("data-phase") == "ready"
    assert "H100 (simulated)" in row.inner_text()
    assert "gpu-demo.ipynb" in row.locator(".jp-CellhopPanel-owner").inner_text()  # its notebook
    held = panel.locator(f".jp-CellhopPanel-gpu[data-uuid='{held_uuid}']")
    assert held.get_attribute("data-held") == "true"
    assert cid[:8] in held.locator(".jp-CellhopPanel-holder").inner_text()
    # the container's real memory shows as the simulated card's memory, with a sparkline drawn
    page.wait_for_function(f"""() => {{
        const row = document.querySelector("#cellhop-panel .jp-CellhopPanel-gpu[data-uuid='{held_uuid}']");
        const mem = row && row.querySelector('[data-value="mem"]');
        const path = row && row.querySelector('.jp-CellhopPanel-mem path');
        return mem && /MiB|GiB/.test(mem.textContent.split('/')[0]) && path && path.getAttribute('d').includes('L');
    }}""")
    shot = screenshot(page, "sidebar.png")
    assert shot.stat().st_size > 10_000

    # stop it from the panel (with the confirmation dialog)
    row.locator("button[data-action='stop']").click()
    page.click(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    page.wait_for_selector(f"#cellhop-panel .jp-CellhopPanel-container[data-id='{cid}'][data-phase='exited']")
    assert lab.api(f"containers/{cid}")["phase"] == "exited"
    assert panel.locator(f".jp-CellhopPanel-gpu[data-uuid='{held_uuid}']").get_attribute("data-held") == "false"
    assert panel.locator(f".jp-CellhopPanel-container[data-id='{cid}'] button[data-action='stop']").is_disabled()
    screenshot(page, "sidebar-stopped.png")

    # its log opens in the main area
    panel.locator(f".jp-CellhopPanel-container[data-id='{cid}'] button[data-action='logs']").click()
    page.wait_for_selector(f"#cellhop-logs-{cid} pre")

    # the server restarts: the panel's stream reconnects by itself, no reload
    page.evaluate("window.__cellhopNoReload = true")
    lab.stop()
    page.wait_for_selector("#cellhop-panel .jp-CellhopPanel-status[data-status='reconnecting']")
    lab.start()
    page.wait_for_selector("#cellhop-panel .jp-CellhopPanel-status[data-status='connected']", timeout=60_000)
    assert page.evaluate("window.__cellhopNoReload") is True  # same page, not reloaded
    # the new server's hello: its three GPUs again, none held, the old container gone
    page.wait_for_function("""() => document.querySelectorAll('#cellhop-panel .jp-CellhopPanel-gpu').length === 3
        && !document.querySelector('#cellhop-panel .jp-CellhopPanel-container')""")
    screenshot(page, "sidebar-reconnected.png")
