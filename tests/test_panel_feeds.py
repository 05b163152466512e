"""What the panel reads, from a real jupyter_server: volume, secret and image changes go out on the event
stream (the panel's lists follow it, no reload; no names or values in the event)."""

from __future__ import annotations

import asyncio
import json

import pytest

pytestmark = pytest.mark.timeout(180)


async def next_of_type(ws, kind: str, timeout: float = 30.0) -> dict:
    async def read():
        while True:
            text = await ws.read_message()
            assert text is not None, "the event stream closed"
            event = json.loads(text)
            if event["type"] == kind:
                return event

    return await asyncio.wait_for(read(), timeout)


async def test_volume_secret_and_image_changes_go_out_on_the_event_stream(jp_fetch, jp_ws_fetch):
    ws = await jp_ws_fetch("cellhop", "api", "events")
    r = await jp_fetch("cellhop", "api", "volumes", method="POST", body=json.dumps({"name": "feeds-vol"}))
    assert r.code == 201
    assert await next_of_type(ws, "volume") == {"type": "volume", "change": "post"}
    r = await jp_fetch("cellhop", "api", "secrets", method="POST",
                       body=json.dumps({"name": "feeds-secret", "values": {"TOKEN": "feeds-value-9931"}}))
    assert r.code == 201
    event = await next_of_type(ws, "secret")
    assert event == {"type": "secret", "change": "post"}  # nothing of the secret, not even its name
    r = await jp_fetch("cellhop", "api", "volumes", "feeds-vol", method="DELETE")
    assert r.code == 200
    assert (await next_of_type(ws, "volume"))["change"] == "delete"
    r = await jp_fetch("cellhop", "api", "images", "prune", method="POST", body=json.dumps({}))
    assert r.code == 200
    assert (await next_of_type(ws, "image"))["change"] == "post"
    # a refused change says nothing
    r = await jp_fetch("cellhop", "api", "volumes", method="POST", body=json.dumps({"name": "../x"}),
                       raise_error=False)
    assert r.code >= 400
    ws.close()



async def test_gpu_kernels_in_the_launcher_have_a_logo_that_says_gpu(jp_fetch):
    specs = json.loads((await jp_fetch("api", "kernelspecs")).body)["kernelspecs"]
    for name, label in (("cellhop-h100", "H100"), ("cellhop-a10g", "A10G")):
        assert specs[name]["resources"].get("logo-svg"), specs[name]["resources"]  # the launcher takes it first
        svg = (await jp_fetch("kernelspecs", name, "logo-svg.svg")).body.decode()
        assert ">GPU</text>" in svg and f">{label}</text>" in svg, svg
        assert (await jp_fetch("kernelspecs", name, "logo-64x64.png")).code == 200
    assert "logo-svg" not in specs["python3"]["resources"] or \
        ">GPU<" not in (await jp_fetch("kernelspecs", "python3", "logo-svg.svg")).body.decode()
