"""End to end in a real browser: the panel a newcomer meets (issue 19, item 6, and the GPU queue of item 2).

One JupyterLab with cellhop (simulated H100:2, A10G), Debian's Chromium driven by Playwright:
a holder's tooltip names its notebook; sparklines are drawn wide enough to read; the "ready" badge
reads in the dark theme; a GPU kernel of the launcher that waits for a GPU says who holds it, with a
way to cancel; a stopped container is collapsed out of the way and not red; its log view does not
say "(the log is empty)"; a volume and a secret made elsewhere appear without a reload; a file's
"Download" label is whole; GPU kernels have a launcher icon that says GPU. Screenshots go to
tests/artifacts/ (panel-*.png).
"""

from __future__ import annotations

import pytest
from browser_lab import TOKEN, needs_chromium, screenshot, wait_kernel_idle

pytestmark = [pytest.mark.timeout(420), needs_chromium]

PANEL = "#cellhop-panel"

CONTRAST_JS = """(selector) => {
    const el = document.querySelector(selector);
    const rgb = css => css.match(/[\\d.]+/g).slice(0, 3).map(Number);
    const lum = ([r, g, b]) => {
        const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
        return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const style = getComputedStyle(el);
    const a = lum(rgb(style.color)), b = lum(rgb(style.backgroundColor));
    return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""


def test_the_panel_a_newcomer_meets(lab, page):
    page.goto(f"{lab.url}lab/tree/gpu-demo.ipynb?reset&token={TOKEN}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", state="visible")
    wait_kernel_idle(page)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    page.wait_for_selector(".jp-OutputArea-output:has-text('remote pid')")
    wait_kernel_idle(page)
    [container] = lab.api("containers")["containers"]
    cid, held_uuid = container["id"], container["gpus"][0]["uuid"]

    page.click(".jp-SideBar .lm-TabBar-tab[data-id='cellhop-panel']")
    page.wait_for_selector(f"{PANEL} .jp-CellhopPanel-status[data-status='connected']")
    row = page.locator(f"{PANEL} .jp-CellhopPanel-container[data-id='{cid}']")
    row.wait_for()

    # the holder of a GPU: a tooltip with its notebook, kernel and container in full
    holder = page.locator(f"{PANEL} .jp-CellhopPanel-gpu[data-uuid='{held_uuid}'] .jp-CellhopPanel-holder")
    page.wait_for_function(f"""() => {{
        const el = document.querySelector("{PANEL} .jp-CellhopPanel-gpu[data-uuid='{held_uuid}'] .jp-CellhopPanel-holder");
        return el && (el.getAttribute('title') || '').includes('gpu-demo.ipynb');
    }}""")
    title = holder.get_attribute("title")
    assert f"container {cid}" in title and "%%remote" in title, title
    assert "gpu-demo.ipynb" in holder.inner_text()

    # sparklines: a few samples already draw a line of readable width, in a box of readable height
    page.wait_for_function(f"""() => {{
        const line = document.querySelector("{PANEL} .jp-CellhopPanel-gpu[data-uuid='{held_uuid}'] "
                                            + ".jp-CellhopPanel-util .jp-CellhopPanel-sparkLine");
        return line && line.getBoundingClientRect().width >= 40;
    }}""", timeout=90_000)
    box = page.locator(f"{PANEL} .jp-CellhopPanel-gpu[data-uuid='{held_uuid}'] .jp-CellhopPanel-util svg").bounding_box()
    assert box["height"] >= 26 and box["width"] >= 150, box
    screenshot(page, "panel-sparklines.png")

    # the "ready" badge reads in both themes (WCAG AA: contrast 4.5 at least)
    badge = f"{PANEL} .jp-CellhopPanel-container[data-id='{cid}'] .jp-CellhopPanel-phase"
    assert page.evaluate(CONTRAST_JS, badge) >= 4.5
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_selector("body[data-jp-theme-light='false']", state="attached")
    page.wait_for_function(f"() => getComputedStyle(document.querySelector('{PANEL}')).backgroundColor !== 'rgb(255, 255, 255)'")
    assert page.evaluate(CONTRAST_JS, badge) >= 4.5
    screenshot(page, "panel-dark.png")
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
    page.wait_for_selector("body[data-jp-theme-light='true']", state="attached")

    # a GPU kernel from the launcher waits for both H100s (the notebook holds one): JupyterLab says who
    # holds it and where it is in the queue, and offers to cancel
    page.evaluate("() => { window.__kernelStart = null; window.jupyterapp.serviceManager.sessions.startNew("
                  "{ path: 'queued.ipynb', name: 'queued.ipynb', type: 'notebook', kernel: { name: 'cellhop-h100x2' } })"
                  ".then(() => { window.__kernelStart = 'started'; }, e => { window.__kernelStart = 'failed: ' + e.message; }); }")
    toast = page.locator(".jp-toast-message:has-text('waits for a GPU')")
    toast.wait_for(timeout=90_000)
    text = toast.inner_text()
    assert "next in line" in text and "gpu-demo.ipynb" in text and "H100:2" in text, text
    screenshot(page, "panel-queued-kernel.png")
    page.locator(".Toastify__toast:has-text('waits for a GPU') button:has-text('Cancel the kernel start')").click()
    toast.wait_for(state="detached", timeout=60_000)
    page.wait_for_function("() => window.__kernelStart !== null", timeout=60_000)
    outcome = page.evaluate("() => window.__kernelStart")
    assert outcome.startswith("failed"), outcome  # the start was called off: JupyterLab says it failed
    queued = [c for c in lab.api("containers")["containers"] if c["label"].startswith("kernel ")]
    assert queued and all(c["phase"] == "exited" for c in queued), queued

    # a stopped container: collapsed under "N exited", its reason not red
    lab.api(f"containers/{cid}/stop", "POST", {"reason": "make room"})
    exited = page.locator(f"{PANEL} details.jp-CellhopPanel-exited")
    exited.wait_for()
    assert exited.get_attribute("open") is None  # out of the way until opened
    summary = exited.locator("summary")
    assert summary.inner_text().strip().endswith("exited") and "failed" not in summary.inner_text()
    exited.locator("summary").click()
    reason = exited.locator(f".jp-CellhopPanel-container[data-id='{cid}'] .jp-CellhopPanel-exit")
    reason.wait_for()
    assert reason.get_attribute("data-failed") == "false"
    error_color = page.evaluate("() => getComputedStyle(document.body).getPropertyValue('--jp-error-color1').trim()")
    color = reason.evaluate("el => getComputedStyle(el).color")
    probe = page.evaluate("(c) => { const d = document.createElement('div'); d.style.color = c; document.body.append(d);"
                          " const v = getComputedStyle(d).color; d.remove(); return v; }", error_color)
    assert color != probe, (color, probe)
    screenshot(page, "panel-exited.png")

    # its log view says what the log is, never "(the log is empty)"
    exited.locator(f".jp-CellhopPanel-container[data-id='{cid}'] button[data-action='logs']").click()
    log = page.locator(f"#cellhop-logs-{cid} pre")
    log.wait_for()
    page.wait_for_function(f"() => document.querySelector('#cellhop-logs-{cid} pre').textContent.length > 0")
    assert "(the log is empty)" not in log.inner_text()
    page.evaluate("() => window.jupyterapp.shell.activateById('cellhop-panel')")

    # a volume and a secret made elsewhere (a notebook, the API) appear without a reload
    lab.api("volumes", "POST", {"name": "made-elsewhere"})
    volume = page.locator(f"{PANEL} [data-section='volumes'] .jp-CellhopVolumes-volume[data-name='made-elsewhere']")
    volume.wait_for(timeout=30_000)
    lab.api("secrets", "POST", {"name": "made-elsewhere", "values": {"K": "v-e2e-panel-5521"}})
    page.locator(f"{PANEL} [data-section='secrets'] .jp-CellhopSecrets-secret[data-name='made-elsewhere']").wait_for(
        timeout=30_000)

    # a file's Download label is whole
    lab.request("volumes/made-elsewhere/upload?path=weights.safetensors", "PUT", b"x" * 1000)
    volume.locator(".jp-CellhopVolumes-open").click()
    download = page.locator(f"{PANEL} .jp-CellhopVolumes-entry[data-path='weights.safetensors'] [data-action='download']")
    download.wait_for()
    assert download.inner_text().strip() == "Download"
    assert download.evaluate("el => el.scrollWidth <= el.clientWidth + 1 && el.getBoundingClientRect().width > 0")
    assert download.evaluate("el => getComputedStyle(el).textOverflow") != "ellipsis"
    download.scroll_into_view_if_needed()
    screenshot(page, "panel-volume.png")

    # ... and in the VolumeBrowser widget of a notebook: every button's label whole
    page.locator(".lm-TabBar-tab:has-text('gpu-demo.ipynb')").click()
    wait_kernel_idle(page)
    page.evaluate("""() => {
        const app = window.jupyterapp;
        return app.commands.execute('notebook:insert-cell-below').then(() => {
            const cell = app.shell.currentWidget.content.activeCell;
            cell.model.sharedModel.setSource(
                'from cellhop.widgets import VolumeBrowser\\nVolumeBrowser("made-elsewhere")');
            return app.commands.execute('notebook:run-cell');
        });
    }""")
    widget_download = page.locator(".jp-OutputArea-output .widget-button:has-text('Download')")
    widget_download.wait_for(timeout=60_000)
    for label in ("Download", "Delete", "Refresh", "Make folder"):
        button = page.locator(f".jp-OutputArea-output .widget-button:has-text('{label}')").first
        assert button.evaluate("el => el.scrollWidth <= el.clientWidth"), label
    widget_download.scroll_into_view_if_needed()
    screenshot(page, "panel-volume-browser.png")

    # the launcher: GPU kernels carry an icon that says GPU, not Python's
    page.evaluate("() => window.jupyterapp.commands.execute('launcher:create')")
    card = page.locator(".jp-LauncherCard[data-category='Notebook'][title*='H100 (simulated)'] img").first
    card.wait_for()
    src = card.get_attribute("src")
    assert "cellhop-h100" in src and "logo-svg" in src, src
    screenshot(page, "panel-launcher.png")
