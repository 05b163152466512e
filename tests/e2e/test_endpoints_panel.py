"""End to end in a real browser: the sidebar's Endpoints section (labextension/src/endpoints.ts). An endpoint
deployed over REST (PUT endpoints/{name}, as a notebook's deploy does) shows with its URL (copied by its button);
one call through real HTTP to a real container and the event stream brings its request count; its logs show
what the function printed; Delete (through the confirmation) deletes it on the server.
Screenshot: tests/artifacts/sidebar-endpoints.png.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest
from browser_lab import TOKEN, needs_chromium, screenshot

pytestmark = [pytest.mark.timeout(240), needs_chromium]

PANEL = "#cellhop-panel"
ENDPOINTS = f"{PANEL} [data-section='endpoints']"


def test_endpoints_section(lab, page):
    import cloudpickle

    from cellhop.kernel.endpoint import Endpoint

    def shout(word):
        print("shouting", word)  # to the container's log
        return {"loud": word.upper()}

    spec = Endpoint(shout, max_containers=1, scaledown=120).spec()
    deployed = lab.api("endpoints/shout?" + urllib.parse.urlencode({"spec": json.dumps(spec)}), "PUT",
                       cloudpickle.dumps(shout))
    assert deployed["version"] == 1

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(f"{lab.url}lab?reset&token={TOKEN}")
    page.click(".jp-SideBar .lm-TabBar-tab[data-id='cellhop-panel']")
    page.wait_for_selector(f"{PANEL} .jp-CellhopPanel-status[data-status='connected']")

    row = page.locator(f"{ENDPOINTS} .jp-CellhopEndpoints-endpoint[data-name='shout']")
    row.wait_for()
    url = f"{lab.url}cellhop/endpoints/shout/"
    assert row.locator("[data-value='url']").inner_text() == url
    assert "0 running" in row.inner_text()  # nothing started before the first request (min_containers=0)
    row.locator("[data-action='endpoint-copy']").click()
    page.locator(f"{ENDPOINTS} [data-action='endpoint-copy'][data-copied='true']").wait_for()
    assert page.evaluate("() => navigator.clipboard.readText()") == url

    request = urllib.request.Request(url, data=json.dumps({"word": "hi"}).encode(), method="POST",
                                     headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        assert json.loads(answer.read()) == {"loud": "HI"}

    # the figures come on the event stream (an event may first show it queued, not yet measured): one request,
    # answered, one container running, a latency measured
    called = page.locator(f"{ENDPOINTS} .jp-CellhopEndpoints-endpoint[data-name='shout'][data-requests='1']"
                          ).filter(has_not_text="p50 –")
    called.wait_for(timeout=60_000)
    traffic = called.locator("[data-value='traffic']").inner_text()
    assert traffic.startswith("0 in flight") and traffic.endswith("1 request · 0 errors"), traffic
    assert "1 running" in called.inner_text()

    called.locator("[data-action='endpoint-logs']").click()
    logs = page.locator(f"{ENDPOINTS} .jp-CellhopEndpoints-endpoint[data-name='shout'] .jp-CellhopRuns-logs")
    logs.wait_for()
    assert "shouting hi" in logs.inner_text()
    screenshot(page, "sidebar-endpoints.png")

    page.locator(f"{ENDPOINTS} .jp-CellhopEndpoints-endpoint[data-name='shout'] "
                 "[data-action='endpoint-delete']").click()
    page.click(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    row.wait_for(state="detached")
    assert lab.api("endpoints")["endpoints"] == []
    page.locator(f"{ENDPOINTS} .jp-CellhopPanel-empty:has-text('No endpoints')").wait_for()
