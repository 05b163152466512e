"""End to end in a real browser: the sidebar's Runs and Schedules sections (labextension/src/runs.ts) over the
runs the server owns. A notebook run submitted over REST shows as succeeded, its executed notebook downloads
from the panel; a running one is cancelled from the panel (the confirmation, then the event stream brings the
status); a schedule is paused and deleted from the panel; the "Run Notebook on GPU" command runs the open
notebook, unsaved edits included, on the GPU asked for. Screenshot: tests/artifacts/sidebar-runs.png.
"""

from __future__ import annotations

import json

import pytest
from browser_lab import TOKEN, needs_chromium, screenshot

pytestmark = [pytest.mark.timeout(300), needs_chromium]

PANEL = "#cellhop-panel"
RUNS = f"{PANEL} [data-section='runs']"
SCHEDULES = f"{PANEL} [data-section='schedules']"


def notebook(*sources: str) -> dict:
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
            "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": s, "outputs": [],
                       "execution_count": None} for i, s in enumerate(sources)]}


def test_runs_and_schedules_sections(lab, page):
    quick = lab.api("runs", "POST", {"notebook": notebook("print('from the panel test')"), "name": "quick.ipynb"})
    slow = lab.api("runs", "POST", {"notebook": notebook("import time; time.sleep(300)"), "name": "slow.ipynb"})
    schedule = lab.api("schedules", "POST", {"notebook": notebook("1"), "name": "nightly.ipynb", "cron": "0 3 * * *"})

    page.goto(f"{lab.url}lab?reset&token={TOKEN}")
    page.click(".jp-SideBar .lm-TabBar-tab[data-id='cellhop-panel']")
    page.wait_for_selector(f"{PANEL} .jp-CellhopPanel-status[data-status='connected']")

    done = page.locator(f"{RUNS} .jp-CellhopRuns-run[data-id='{quick['id']}'][data-status='succeeded']")
    done.wait_for(timeout=120_000)  # the panel follows the run's events
    assert "notebook quick.ipynb" in done.inner_text()
    with page.expect_download() as info:
        done.locator("[data-action='run-result']").click()
    assert info.value.suggested_filename == "quick.out.ipynb"
    with open(info.value.path()) as f:
        executed = json.load(f)
    assert "".join(executed["cells"][0]["outputs"][0]["text"]) == "from the panel test\n"

    running = page.locator(f"{RUNS} .jp-CellhopRuns-run[data-id='{slow['id']}'][data-status='running']")
    running.wait_for(timeout=120_000)
    running.locator("[data-action='run-logs']").click()
    page.locator(f"{RUNS} .jp-CellhopRuns-run[data-id='{slow['id']}'] .jp-CellhopRuns-logs").wait_for()
    screenshot(page, "sidebar-runs.png")
    running.locator("[data-action='run-cancel']").click()
    page.click(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    page.locator(f"{RUNS} .jp-CellhopRuns-run[data-id='{slow['id']}'][data-status='cancelled']").wait_for(
        timeout=60_000)
    assert lab.api(f"runs/{slow['id']}")["status"] == "cancelled"

    row = page.locator(f"{SCHEDULES} .jp-CellhopRuns-schedule[data-id='{schedule['id']}']")
    row.wait_for()
    assert "cron 0 3 * * *" in row.inner_text()
    row.locator("[data-action='schedule-pause']").click()
    page.locator(f"{SCHEDULES} .jp-CellhopRuns-schedule[data-id='{schedule['id']}'][data-paused='true']").wait_for()
    assert lab.api(f"schedules/{schedule['id']}")["paused"] is True
    page.locator(f"{SCHEDULES} .jp-CellhopRuns-schedule[data-id='{schedule['id']}'] "
                 "[data-action='schedule-delete']").click()
    page.click(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    row.wait_for(state="detached")
    assert lab.api("schedules")["schedules"] == []

    # "Run Notebook on GPU" on the open notebook: what the editor holds, on the GPU typed in the dialog
    job = notebook("import os\nprint('visible', os.environ.get('CUDA_VISIBLE_DEVICES') is not None)")
    (lab.root / "job.ipynb").write_text(json.dumps(job))
    page.goto(f"{lab.url}lab/tree/job.ipynb?token={TOKEN}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", state="visible")
    # the notebook names no kernel: Lab may ask for one; no kernel is needed to run it on a GPU
    picker = page.locator(".jp-Dialog:has-text('Select Kernel')")
    try:
        picker.wait_for(timeout=5_000)
        picker.locator(".jp-Dialog-button.jp-mod-reject").click()
        picker.wait_for(state="detached")
    except Exception:  # not asked (a kernel preference was already made): nothing to dismiss
        pass
    page.evaluate("() => { window.jupyterapp.commands.execute('cellhop:run-notebook-on-gpu'); }")
    asked = page.locator(".jp-Dialog:has-text('on a GPU')")  # ours, whatever else Lab may be asking
    asked.locator("input").wait_for()
    assert asked.locator("input").input_value() == "H100"
    asked.locator(".jp-Dialog-button.jp-mod-accept").click()
    row = page.locator(f"{RUNS} .jp-CellhopRuns-run[data-status='succeeded']:has-text('notebook job.ipynb')")
    row.wait_for(timeout=120_000)
    assert "H100" in row.inner_text()
    run = next(r for r in lab.api("runs")["runs"] if r["name"] == "job.ipynb")
    result = lab.api(f"runs/{run['id']}")["result"]
    assert "".join(result["cells"][0]["outputs"][0]["text"]) == "visible True\n"
