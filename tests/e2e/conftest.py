"""Fixtures of the browser tests: `lab` (a JupyterLab server with cellhop, see browser_lab.Lab)
and `page` (a page of Debian's Chromium, driven by Playwright)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from browser_lab import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, NOTEBOOK, Lab, free_port


@pytest.fixture
def lab(request):
    runtime = Path(tempfile.mkdtemp(prefix="ch-", dir="/tmp"))
    root = runtime / "nb"
    root.mkdir()
    (root / "gpu-demo.ipynb").write_text(json.dumps(NOTEBOOK))
    server = Lab(root, runtime, free_port())
    server.start()
    yield server
    server.stop()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stem = request.node.module.__name__.removeprefix("test_").replace("_", "-")
    shutil.copy(server.log, ARTIFACTS / f"{stem}-jupyterlab.log")
    shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install '.[test]')")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        yield pg
        context.close()
        browser.close()
