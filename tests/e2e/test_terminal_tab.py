"""In a real browser: a container's terminal and its live log, from cellhop's panel in JupyterLab.

The panel's "Terminal" button on a running container opens a JupyterLab terminal tab whose shell runs
inside that container: typed in the browser, `echo $CUDA_VISIBLE_DEVICES` shows the container's GPU (and
writes it into the container's working folder, read here on the host). A terminal asked for with
{"open": true} (what `%gpu --terminal` sends) opens as a tab by itself. The log view follows the
container's log as it grows, with no refresh, filters it by a search and downloads it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from browser_lab import TOKEN, needs_chromium, screenshot

pytestmark = [pytest.mark.timeout(300), needs_chromium]

# a line into the container's log: through its kernel's stdout, from inside the container
TO_LOG = r"""
import os, sys
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            if b"container_kernel" in open(f"/proc/{pid}/cmdline", "rb").read():
                with open(f"/proc/{pid}/fd/1", "w") as out:
                    out.write(sys.argv[1] + "\n")
                break
        except OSError:
            pass
"""

TERMINAL_TEXT = """() => {
    const widget = window.jupyterapp.shell.currentWidget;
    const term = widget && widget.content && widget.content._term;
    if (!term) { return ''; }
    const buffer = term.buffer.active;
    const lines = [];
    for (let i = 0; i < buffer.length; i++) { lines.push(buffer.getLine(i).translateToString(true)); }
    return lines.join('\\n');
}"""


def _exec(lab, cid: str, argv: list[str]) -> list[dict]:
    body = lab.request(f"containers/{cid}/exec", "POST", {"argv": argv})
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


def _wait_file(path: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} was not written"
        time.sleep(0.1)
    return path.read_text().strip()


def test_a_terminal_tab_runs_inside_the_container_and_the_log_follows(lab, page, tmp_path):
    container = lab.api("containers", "POST", {"spec": {"gpu": "H100", "owner": "browser-test"}})
    cid, uuid = container["id"], container["gpus"][0]["uuid"]
    page.goto(f"{lab.url}lab?reset&token={TOKEN}")
    page.click(".jp-SideBar .lm-TabBar-tab[data-id='cellhop-panel']")
    row = page.locator(f"#cellhop-panel .jp-CellhopPanel-container[data-id='{cid}']")
    row.wait_for()
    row.locator("button[data-action='terminal']").click()
    page.wait_for_selector(".jp-Terminal .xterm", state="visible")
    page.wait_for_function(f"() => ({TERMINAL_TEXT})().includes('work$')")  # the shell's prompt: connected
    page.click(".jp-Terminal .xterm")
    page.keyboard.type("echo $CUDA_VISIBLE_DEVICES > seen.txt; echo SHOWN-$CUDA_VISIBLE_DEVICES-$(id -u)\n")
    seen = lab.runtime / "containers" / cid / "sandbox" / "work" / "seen.txt"  # its working folder, on the host
    assert _wait_file(seen) == uuid
    page.wait_for_function(f"() => ({TERMINAL_TEXT})().includes('SHOWN-{uuid}-65534')")
    screenshot(page, "terminal-tab.png")

    # what %gpu --terminal asks: the tab opens by itself (the panel hears the event)
    tabs = page.locator(".jp-Terminal").count()
    made = lab.api(f"containers/{cid}/terminal", "POST", {"open": True})
    page.wait_for_function(f"() => document.querySelectorAll('.jp-Terminal').length > {tabs}")
    page.wait_for_function(f"() => window.jupyterapp.shell.currentWidget.content.session.name === '{made['name']}'")

    # the log view follows the log as it grows
    _exec(lab, cid, [sys.executable, "-c", TO_LOG, "early line"])
    row.locator("button[data-action='logs']").click()
    log = page.locator(f"#cellhop-logs-{cid} pre")
    page.wait_for_selector(f"#cellhop-logs-{cid} pre:has-text('early line')")
    for n in range(2):
        _exec(lab, cid, [sys.executable, "-c", TO_LOG, f"grown line {n}"])
        page.wait_for_selector(f"#cellhop-logs-{cid} pre:has-text('grown line {n}')")  # no refresh clicked
    page.fill(f"#cellhop-logs-{cid} .jp-CellhopLogs-search", "grown line 1")
    page.wait_for_function(f"""() => {{
        const pre = document.querySelector('#cellhop-logs-{cid} pre');
        return pre && pre.textContent.trim() === 'grown line 1';
    }}""")
    with page.expect_download() as download:
        page.click(f"#cellhop-logs-{cid} .jp-Toolbar [title^='Download the log']")
    saved = tmp_path / "log.txt"
    download.value.save_as(saved)
    assert "early line" in saved.read_text() and "grown line 1" in saved.read_text()
    screenshot(page, "log-follow.png")
    assert "early line" not in log.inner_text()  # the search shows only the matching lines
