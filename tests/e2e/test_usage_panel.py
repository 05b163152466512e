"""End to end in a real browser: the sidebar's Usage section (labextension/src/usageview.ts, issue 20). With
c.Cellhop.gpu_prices = {"H100": 3.6}, a container holding a simulated H100 (started over REST) shows as this
user's GPU-hours today and this month with their cost, the GPU held now; held at ~0% busy past
c.Cellhop.idle_holder_after (2 s here, sampled every 0.5 s), its row gets the idle-holder badge with the
server's reason, the Usage section names it and the user is warned. Screenshot: tests/artifacts/sidebar-usage.png.
"""

from __future__ import annotations

import json
import re

import pytest
from browser_lab import TOKEN, needs_chromium, screenshot

pytestmark = [pytest.mark.timeout(180), needs_chromium]

PANEL = "#cellhop-panel"
USAGE = f"{PANEL} [data-section='usage']"
SETTINGS = {"gpu_prices": {"H100": 3.6}, "idle_holder_after": 2.0, "usage_sample_interval": 0.5}


@pytest.fixture
def usage_settings(tmp_path, monkeypatch):
    """The c.Cellhop settings of this test, in a config folder the Lab server reads (JUPYTER_CONFIG_PATH)."""
    folder = tmp_path / "jupyter-config"
    folder.mkdir()
    (folder / "jupyter_server_config.json").write_text(json.dumps({"Cellhop": SETTINGS}))
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(folder))


@pytest.fixture
def lab(usage_settings, lab):
    return lab


def test_usage_section_and_idle_holder_badge(lab, page):
    answer = lab.api("usage")  # the server took the prices: the panel shows what this says
    assert answer["prices"] == {"H100": 3.6}, answer
    container = lab.api("containers", "POST", {"spec": {"gpu": "H100", "owner": "browser-test"}})
    cid = container["id"]

    page.goto(f"{lab.url}lab?reset&token={TOKEN}")
    page.click(".jp-SideBar .lm-TabBar-tab[data-id='cellhop-panel']")
    page.wait_for_selector(f"{PANEL} .jp-CellhopPanel-status[data-status='connected']")

    today = page.locator(f"{USAGE} [data-value='today']")
    today.wait_for()
    text = today.inner_text()
    assert re.fullmatch(r"Today: [0-9.]+ GPU-h · cost (<0\.01|\d+\.\d\d)", text), text
    assert page.locator(f"{USAGE} [data-value='month']").inner_text().startswith("This month: ")
    assert "prices per GPU-hour: H100 3.6" in today.get_attribute("title")
    page.locator(f"{USAGE} [data-value='held']:has-text('Holding 1 GPU now')").wait_for(timeout=30_000)

    # ~0% busy for 2 s: the server flags it, its event brings the badge with the reason
    badge = page.locator(f"{PANEL} .jp-CellhopPanel-container[data-id='{cid}'] [data-badge='idle-holder']")
    badge.wait_for(timeout=60_000)
    reason = badge.get_attribute("title")
    assert re.search(r"held H100 for .* at \d+% busy", reason), reason
    row = page.locator(f"{PANEL} .jp-CellhopPanel-container[data-id='{cid}']")
    assert reason in row.locator(".jp-CellhopPanel-idleHolder").inner_text()
    idle = page.locator(f"{USAGE} [data-value='idle-holders']")
    idle.wait_for()
    assert cid[:8] in idle.inner_text() and reason in idle.inner_text()
    page.locator(f".Toastify__toast:has-text('{cid[:8]}'):has-text('is an idle GPU holder')").wait_for()
    assert lab.api("containers/" + cid)["idle_holder"] == reason
    screenshot(page, "sidebar-usage.png")

    # stopped: no longer an idle holder, no GPU held (the Refresh button reads GET usage again)
    lab.api(f"containers/{cid}/stop", "POST")
    idle.wait_for(state="detached")
    page.click(f"{USAGE} .jp-CellhopPanel-sectionHeader button")
    page.locator(f"{USAGE} [data-value='held']:has-text('Holding 0 GPUs now')").wait_for()
