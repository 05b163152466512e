"""End to end in a real browser: JupyterLab with cellhop (simulated GPUs), its sidebar panel in
Debian's Chromium driven by Playwright.

A notebook runs a %%remote cell; the panel shows the GPUs (simulated, live metrics) and the
running container with its notebook; the container is stopped from the panel; the server
restarts and the panel's event stream comes back without a reload. Screenshots are saved in
tests/artifacts/.
"""

from __future__ import annotations

import pytest
from browser_lab import TOKEN, needs_chromium, screenshot, wait_kernel_idle

pytestmark = [pytest.mark.timeout(300), needs_chromium]


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
    # exited containers are collapsed under "N exited" (their reasons and logs a click away)
    page.click("#cellhop-panel details.jp-CellhopPanel-exited > summary")
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
