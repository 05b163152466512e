"""The images routes of the control plane API, in a real jupyter_server: build (plain and streamed),
list, one image, its log, delete, prune, errors; and HttpControlPlane.build_image against it."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile

import pytest

from cellhop.server_ext.api.base import KERNEL_TOKEN_SETTING
from cellhop.errors import ImageBuildError
from cellhop.image_spec import Image
from cellhop.server_ext.kernel_tokens import token_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def state_dir():
    path = tempfile.mkdtemp(prefix="ch-ia-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def jp_server_config(runtime_root, state_dir):
    return {
        "ServerApp": {"jpserver_extensions": {"cellhop": True}},
        "Cellhop": {"simulated_gpus": "H100:1", "runtime_root": str(runtime_root), "state_dir": state_dir,
                    "idle_timeout": 0},
    }


async def call(jp_fetch, method, path, body=None, headers=None, params=None):
    kwargs = {"method": method, "raise_error": False, "headers": dict(headers or {}), "params": params}
    if body is not None or method in ("POST", "PUT"):
        kwargs["body"] = json.dumps(body or {})
    r = await jp_fetch("cellhop", "api", *path.split("/"), **kwargs)
    return r.code, (json.loads(r.body) if r.body and not params else r.body)


async def test_build_list_log_delete_and_prune_through_the_api(jp_fetch, jp_serverapp):
    seen = []
    subscription = jp_serverapp.web_app.settings["cellhop_control_plane"].subscribe(seen.append)
    spec = Image.current().env({"CHTEST": "api"}).to_json()
    status, built = await call(jp_fetch, "POST", "images", {"spec": spec})
    assert status == 201 and built["built"] == 2 and built["key"]
    for _ in range(50):  # the event stream delivers on its own thread
        if any(e.get("type") == "image" and e.get("event") == "done" for e in seen):
            break
        await asyncio.sleep(0.05)
    subscription.close()
    assert [e["event"] for e in seen if e.get("type") == "image" and "event" in e][0] == "plan"
    assert any(e.get("type") == "image" and e.get("event") == "done" and e["image"] == built["key"] for e in seen)
    key = built["key"]
    r = await jp_fetch("cellhop", "api", "images", method="POST", params={"events": "1"},
                       body=json.dumps({"spec": spec}))
    lines = [json.loads(line) for line in r.body.decode().splitlines()]
    assert lines[0]["type"] == "image" and lines[0]["event"] == "plan"
    assert [s["state"] for s in lines[0]["steps"]] == ["cached", "cached"]
    assert lines[-1]["type"] == "built" and lines[-1]["image"]["key"] == key and lines[-1]["image"]["built"] == 0

    status, listed = await call(jp_fetch, "GET", "images")
    assert status == 200 and [i["key"] for i in listed["images"]] == [key]
    assert listed["images"][0]["size"] > 0 and listed["images"][0]["last_used"]
    status, one = await call(jp_fetch, "GET", f"images/{key}")
    assert status == 200 and one["spec"] == spec
    status, log = await call(jp_fetch, "GET", f"images/{key}/log")
    assert status == 200 and "=> Step 2: env({'CHTEST': 'api'})" in log["log"]

    status, pruned = await call(jp_fetch, "POST", "images/prune", {})
    assert status == 200 and pruned == {"images": [], "layers": []}
    status, deleted = await call(jp_fetch, "DELETE", f"images/{key}")
    assert status == 200 and deleted["deleted"] == key and len(deleted["layers_removed"]) == 2
    status, gone = await call(jp_fetch, "GET", f"images/{key}")
    assert status == 404 and gone["error"] == "ImageNotFound" and key in gone["message"]


async def test_bad_requests_and_failed_builds_say_what_was_wrong(jp_fetch):
    status, body = await call(jp_fetch, "POST", "images", {"spec": {"base": {"kind": "docker"}}})
    assert status == 400 and "use 'current' or 'python'" in body["message"]
    status, body = await call(jp_fetch, "POST", "images", {"image": {}})
    assert status == 400 and "unknown field" in body["message"]
    status, body = await call(jp_fetch, "POST", "images/prune", {"unused_for": "soon"})
    assert status == 400 and "seconds" in body["message"]
    status, body = await call(jp_fetch, "GET", "images", headers={"Authorization": ""})
    assert status == 403
    failing = Image.current().run_commands("echo broken; exit 4").to_json()
    r = await jp_fetch("cellhop", "api", "images", method="POST", params={"events": "1"},
                       body=json.dumps({"spec": failing}))
    lines = [json.loads(line) for line in r.body.decode().splitlines()]
    assert any(e.get("event") == "log" and e["line"] == "broken" for e in lines)
    assert lines[-1]["type"] == "error" and lines[-1]["error"] == "ImageBuildError"
    assert "exit code 4" in lines[-1]["message"]


async def test_http_control_plane_builds_images_through_the_server(jp_fetch, jp_serverapp, jp_http_port,
                                                                  jp_base_url):  # jp_fetch: the server listens
    from cellhop.kernel.http_control_plane import HttpControlPlane

    token = token_for(jp_serverapp.web_app.settings[KERNEL_TOKEN_SETTING], "test-kernel")  # a kernel's own
    client = HttpControlPlane(f"http://127.0.0.1:{jp_http_port}{jp_base_url}", token)
    events = []
    spec = Image.current().env({"CHTEST": "http"}).to_json()
    info = await asyncio.to_thread(client.build_image, spec, events.append)
    assert info["built"] == 2 and [e["event"] for e in events][0] == "plan" and events[-1]["event"] == "done"
    assert [i["key"] for i in await asyncio.to_thread(client.images)] == [info["key"]]
    assert "env({'CHTEST': 'http'})" in await asyncio.to_thread(client.image_log, info["key"])
    with pytest.raises(ImageBuildError, match="exit code 5"):
        await asyncio.to_thread(client.build_image, Image.current().run_commands("exit 5").to_json())
    assert (await asyncio.to_thread(client.delete_image, info["key"]))["deleted"] == info["key"]
    client.close()
