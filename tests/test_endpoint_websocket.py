"""WebSockets to an ASGI endpoint, and an app's slow answers not holding back its container's others.

A real jupyter_server, a kernel deploying a bare ASGI app, its bubblewrap container, real WebSocket
clients (tornado's) over the server's port:
- the app accepts with a subprotocol and a header of its own; text and binary (1 MiB) round trips;
  messages the app sends unasked; its close code and reason reach the caller; the caller's close
  code reaches the app (as websocket.disconnect);
- the app's headers reach the caller, less Set-Cookie of the Jupyter server's cookies (HTTP too);
- refused before accepting, or not accepted in time: 403; a function endpoint: 400; no credential, another endpoint's key,
  the login cookie from another site's page: 403, the app never hears of it; the endpoint's own key opens it; Jupyter's credentials never reach
  the app;
- a WebSocket holds one of its container's places: past them it waits in the queue, past its limit 429;
- while a WebSocket waits, and while a streamed HTTP response waits for its next part, the same
  container (one, concurrency 8) answers other requests: the stream only ends when another request
  tells it to (before, its container's main thread waited for that part and nothing else got in);
- the container SIGKILLed under an open WebSocket: close code 1011.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest
from processes import container_kernel_pids
from server_kernel_client import run
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

pytestmark = pytest.mark.timeout(240)

DEPLOY = '''
import asyncio, json, cellhop

FORGED = [(b"set-cookie", b"_xsrf=forged"), (b"set-cookie", b"username-127-0-0-1=forged"), (b"set-cookie", b"mine=1")]

def make_app():
    import cellhop.kernel.endpoint_asgi as served_here
    served_here.ACCEPT_TIMEOUT = 1.0  # this container waits 1 s (not 60) for an app to accept a WebSocket
    seen = {"disconnects": [], "opened": 0, "headers": []}
    release = asyncio.Event()

    async def http(scope, receive, send):
        await receive()
        if scope["path"] == "/held":  # a streamed answer whose second part waits for /release
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"first ", "more_body": True})
            await release.wait()
            await send({"type": "http.response.body", "body": b"released"})
            return
        if scope["path"] == "/release":
            release.set()
        body = json.dumps({k: v for k, v in seen.items()}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json"),
                    *FORGED]})
        await send({"type": "http.response.body", "body": body})

    async def socket(scope, receive, send):
        assert (await receive())["type"] == "websocket.connect"
        if scope["path"] == "/refuse":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["path"] == "/silent":  # neither accepts nor closes
            await asyncio.Event().wait()
        seen["opened"] += 1
        seen["headers"] = sorted(k.decode() for k, v in scope["headers"])
        chosen = "chat.v2" if "chat.v2" in scope["subprotocols"] else None
        await send({"type": "websocket.accept", "subprotocol": chosen, "headers": [(b"x-app", b"ws"), *FORGED]})
        if scope["path"] == "/ticks":  # unasked messages
            for i in range(3):
                await send({"type": "websocket.send", "text": f"tick {i}"})
                await asyncio.sleep(0.05)
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                seen["disconnects"].append(message["code"])
                return
            if message.get("bytes") is not None:
                await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})
            elif message["text"] == "bye":
                await send({"type": "websocket.close", "code": 4001, "reason": "asked to"})
                return
            else:
                await send({"type": "websocket.send", "text": "echo " + message["text"] + " " + scope["path"]})

    async def app(scope, receive, send):
        if scope["type"] == "http":
            return await http(scope, receive, send)
        if scope["type"] == "websocket":
            return await socket(scope, receive, send)
        raise RuntimeError("no lifespan here")
    return app

@cellhop.endpoint(max_containers=1)
def plain():
    return 1

cellhop.asgi(make_app, max_containers=1, concurrency=8).deploy("live")
cellhop.asgi(make_app, max_containers=1, concurrency=1).deploy("single")
plain.deploy("plain")
print("deployed")
'''


@pytest.fixture
def cellhop_settings():
    return {"endpoint_queue_limit": 1}


def _url(server_url: str, *parts: str) -> str:
    return server_url.replace("http://", "ws://").rstrip("/") + "/" + "/".join(parts)


async def _connect(base: str, path: str, headers: dict | None = None, subprotocols=None):
    request = HTTPRequest(_url(base, "cellhop", "endpoints", *path.split("/")), headers=headers or {},
                          request_timeout=60, connect_timeout=60)
    return await websocket_connect(request, subprotocols=subprotocols)


def _auth(jp_serverapp) -> dict:
    return {"Authorization": f"token {jp_serverapp.identity_provider.token}"}


def _no_forged_cookie(headers) -> None:
    """The app's own cookie passes; those it named as the Jupyter server's do not (the server may set its own)."""
    cookies = headers.get_list("Set-Cookie")
    assert "mine=1" in cookies and not any("forged" in c for c in cookies), cookies


async def _state(jp_fetch) -> dict:
    r = await jp_fetch("cellhop", "endpoints", "live", "state")
    _no_forged_cookie(r.headers)
    return json.loads(r.body)


async def test_websockets_to_an_asgi_endpoint(start_kernel, control_plane, jp_fetch, jp_serverapp, jp_base_url,
                                              jp_http_port):
    kid, kc = await start_kernel()
    content, out, _ = await run(kc, DEPLOY, timeout=120)
    assert content["status"] == "ok" and "deployed" in out, (content, out)
    base = f"http://127.0.0.1:{jp_http_port}{jp_base_url}"
    auth = _auth(jp_serverapp)

    # accepted with the app's subprotocol and header; text, 1 MiB binary, the path below the endpoint
    ws = await _connect(base, "live/room/1", {**auth, "Cookie": "a=b"}, subprotocols=["chat.v1", "chat.v2"])
    assert ws.selected_subprotocol == "chat.v2" and ws.headers.get("x-app") == "ws"
    _no_forged_cookie(ws.headers)
    await ws.write_message("hello")
    assert await ws.read_message() == "echo hello /room/1"
    blob = os.urandom(1 << 20)
    await ws.write_message(blob, binary=True)
    assert await ws.read_message() == blob[::-1]
    state = await _state(jp_fetch)
    assert "authorization" not in state["headers"] and "cookie" not in state["headers"], state["headers"]
    assert "sec-websocket-key" in state["headers"]

    # while that WebSocket waits, the container (one, concurrency 8) answers others: a streamed answer
    # whose end waits for another request, and that request
    parts = []
    held = asyncio.ensure_future(jp_fetch("cellhop", "endpoints", "live", "held", request_timeout=90,
                                          streaming_callback=parts.append))
    for _ in range(600):
        if parts:
            break
        await asyncio.sleep(0.05)
    assert parts == [b"first "]
    r = await jp_fetch("cellhop", "endpoints", "live", "release", request_timeout=60)
    assert r.code == 200
    assert (await held).code == 200 and b"".join(parts) == b"first released"
    assert [c.id for c in control_plane.manager.list() if c.spec.owner == "endpoint live"
            and c.phase.value != "exited"].__len__() == 1

    # the caller's close code reaches the app; the app's close code and reason reach the caller
    ws.close(4321)
    for _ in range(200):
        if (await _state(jp_fetch))["disconnects"]:
            break
        await asyncio.sleep(0.05)
    assert (await _state(jp_fetch))["disconnects"] == [4321]
    ws = await _connect(base, "live/ticks", auth)
    assert ws.selected_subprotocol is None
    assert [await ws.read_message() for _ in range(3)] == ["tick 0", "tick 1", "tick 2"]
    await ws.write_message("bye")
    assert await ws.read_message() is None and ws.close_code == 4001 and ws.close_reason == "asked to"

    # refusals: the app's (before accepting), a function endpoint, no credential, another endpoint's key
    opened = (await _state(jp_fetch))["opened"]
    for path, headers, code in (("live/refuse", auth, 403), ("live/silent", auth, 403), ("plain", auth, 400),
                                ("live/x", {}, 403), ("nothere", auth, 404), ("nothere", {}, 403)):
        with pytest.raises(HTTPClientError) as refused:
            await _connect(base, path, headers)
        assert refused.value.code == code, (path, refused.value)
    keys = {}
    for name in ("live", "plain"):
        r = await jp_fetch("cellhop", "api", "endpoints", name, "keys", method="POST", body="{}")
        keys[name] = json.loads(r.body)["key"]
    with pytest.raises(HTTPClientError) as refused:
        await _connect(base, "live/x", {"Authorization": f"Bearer {keys['plain']}"})
    assert refused.value.code == 403
    assert (await _state(jp_fetch))["opened"] == opened  # the app never heard of them
    # the login cookie alone: from this server's own pages only (another site cannot open one as the user)
    r = await jp_fetch("cellhop", "api", "gpus")
    login = [c.split(";")[0] for c in r.headers.get_list("Set-Cookie") if c.startswith("username-")]
    assert login, r.headers
    cookie = {"Cookie": login[0]}
    with pytest.raises(HTTPClientError) as refused:
        await _connect(base, "live/x", {**cookie, "Origin": "http://evil.example"})
    assert refused.value.code == 403
    assert (await _state(jp_fetch))["opened"] == opened
    ws = await _connect(base, "live/own", {**cookie, "Origin": f"http://127.0.0.1:{jp_http_port}"})
    await ws.write_message("c")
    assert await ws.read_message() == "echo c /own"
    ws.close()
    ws = await _connect(base, "live/keyed", {"Authorization": f"Bearer {keys['live']}"})
    await ws.write_message("k")
    assert await ws.read_message() == "echo k /keyed"

    # a WebSocket holds its container's place: with concurrency 1, the next one waits in the queue (its
    # limit here: 1), the one after is told 429 with Retry-After; a place freed lets the waiting one in
    first = await _connect(base, "single/a", auth)
    waiting = asyncio.ensure_future(_connect(base, "single/b", auth))
    for _ in range(600):
        view = json.loads((await jp_fetch("cellhop", "api", "endpoints", "single")).body)
        if view["queued"] == 1:
            break
        await asyncio.sleep(0.05)
    assert view["queued"] == 1 and not waiting.done(), view
    with pytest.raises(HTTPClientError) as refused:
        await _connect(base, "single/c", auth)
    assert refused.value.code == 429 and refused.value.response.headers["Retry-After"] == "1"
    first.close()
    second = await asyncio.wait_for(waiting, 60)
    await second.write_message("b")
    assert await second.read_message() == "echo b /b"
    second.close()

    # the container dies under an open WebSocket: 1011
    [container] = [c for c in control_plane.manager.list() if c.spec.owner == "endpoint live"
                   and c.phase.value != "exited"]
    os.kill(container_kernel_pids(container.directory)[0], signal.SIGKILL)
    assert await asyncio.wait_for(ws.read_message(), 60) is None
    assert ws.close_code == 1011
