"""Endpoints (cellhop.endpoint): deployed from a kernel, owned by the server, served over real HTTP by a
real jupyter_server on real (bubblewrap) containers.

- deploy from a kernel; call with POST and GET; shut the kernel down; call again;
- a generator streams its items (JSON lines, the first before the last is made);
- a value that is not JSON: 500 with a JSON error saying so;
- 16 concurrent requests scale out beyond one container, and back down after `scaledown`;
- a rolling update: requests in flight finish on the old version, new ones reach the new one;
- a container SIGKILLed under load: every request is answered, right or with a JSON error;
- auth: no credential, a wrong key, another endpoint's key, another kernel's token: 403, nothing
  runs; a key calls its endpoint and opens nothing else of the server;
- a second server on the same state directory serves the endpoint (restart).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
from processes import container_kernel_pids, wait_until
from server_kernel_client import run

from cellhop.server_ext.api.base import KERNEL_TOKEN_SETTING
from cellhop.server_ext.kernel_tokens import token_for

pytestmark = pytest.mark.timeout(300)

NO_AUTH = {"Authorization": ""}


@pytest.fixture
def jp_server_config(runtime_root, cellhop_gpus):
    return {
        "ServerApp": {"jpserver_extensions": {"cellhop": True}},
        "Cellhop": {"simulated_gpus": cellhop_gpus, "runtime_root": str(runtime_root), "idle_timeout": 0,
                    "state_dir": str(runtime_root / "state"), "endpoint_queue_limit": 20},
    }


@pytest.fixture(autouse=True)
def many_at_once(request):
    """The test client makes up to 64 requests at once (tornado's default is 10: the rest would wait in it)."""
    if "http_server_client" in request.fixturenames:
        request.getfixturevalue("http_server_client").max_clients = 64


DEPLOY = '''
import os, time, cellhop

@cellhop.endpoint(concurrency=2, max_containers=2, scaledown=2)
def echo(x, y=1, wait=0):
    time.sleep(float(wait))
    return {"sum": int(x) + int(y), "version": 1}

@cellhop.endpoint(max_containers=1)
def count(n):
    for i in range(int(n)):
        yield {"i": i}
        if i == 0:
            time.sleep(1.5)

@cellhop.endpoint(max_containers=1)
def opaque():
    return object()

@cellhop.endpoint(max_containers=1, public=True)
def open_one():
    return "anyone"

for f in (echo, count, opaque, open_one):
    print(f.deploy(f.__name__)["url"])
'''


def _call(jp_fetch, name, body=None, params=None, headers=None, **kwargs):
    method = "GET" if body is None else "POST"
    return jp_fetch("cellhop", "endpoints", name, "", method=method, params=params, headers=headers,
                    body=None if body is None else json.dumps(body), raise_error=False, **kwargs)


def _containers(control_plane, name):
    return [c for c in control_plane.manager.list() if c.spec.owner == f"endpoint {name}"]


def _live(control_plane, name):
    return [c for c in _containers(control_plane, name) if c.phase.value != "exited"]


async def _until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return value


async def test_deploy_call_stream_scale_update_and_auth(start_kernel, control_plane, jp_fetch, jp_serverapp):
    events = []
    subscription = control_plane.subscribe(events.append)
    kid, kc = await start_kernel()
    content, out, _ = await run(kc, DEPLOY, timeout=120)
    assert content["status"] == "ok", content
    urls = out.split()
    assert urls[0].endswith("/cellhop/endpoints/echo/") and len(urls) == 4, out
    assert not _containers(control_plane, "echo")  # lazy: nothing runs before the first request

    # POST with a JSON body, GET with query parameters (strings)
    r = await _call(jp_fetch, "echo", {"x": 2, "y": 3})
    assert r.code == 200 and json.loads(r.body) == {"sum": 5, "version": 1}, r.body
    r = await _call(jp_fetch, "echo", params={"x": "40", "y": "2"})
    assert r.code == 200 and json.loads(r.body)["sum"] == 42
    r = await _call(jp_fetch, "opaque", {})
    assert r.code == 500 and json.loads(r.body)["error"] == "NotJSON", r.body
    r = await _call(jp_fetch, "echo", {"x": "not a number"})
    assert r.code == 500 and json.loads(r.body)["error"] == "ValueError", r.body

    # the kernel that deployed them goes: the server still serves them
    await jp_serverapp.kernel_manager.shutdown_kernel(kid, now=True)
    r = await _call(jp_fetch, "echo", {"x": 1})
    assert r.code == 200 and json.loads(r.body)["sum"] == 2

    # a generator streams: the first item arrives while the generator still sleeps before the next
    arrivals = []
    r = await _call(jp_fetch, "count", {"n": 3}, streaming_callback=lambda chunk: arrivals.append(
        (time.monotonic(), chunk)), request_timeout=60)
    assert r.code == 200
    lines = [json.loads(line) for line in b"".join(c for _, c in arrivals).splitlines()]
    assert lines == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert b'"i": 0' in arrivals[0][1] and b'"i": 2' not in arrivals[0][1]
    assert arrivals[-1][0] - arrivals[0][0] > 0.5  # the generator slept 1.5 s between them

    # auth: nothing, a wrong key, another endpoint's key, a kernel's token that did not deploy it
    r = await jp_fetch("cellhop", "api", "endpoints", "count", "keys", method="POST", body="{}")
    count_key = json.loads(r.body)["key"]
    r = await jp_fetch("cellhop", "api", "endpoints", "echo", "keys", method="POST", body="{}")
    echo_key = json.loads(r.body)["key"]
    served = json.loads((await jp_fetch("cellhop", "api", "endpoints", "echo")).body)["requests"]
    other_kernel = token_for(jp_serverapp.web_app.settings[KERNEL_TOKEN_SETTING], "another-kernel")
    for headers in (NO_AUTH, {"Authorization": "Bearer chk_wrong"}, {"Authorization": f"Bearer {count_key}"},
                    {"Authorization": f"token {other_kernel}"}):
        for body, params in (({"x": 1}, None), (None, {"x": "1"})):
            r = await _call(jp_fetch, "echo", body, params=params, headers=headers)
            assert r.code == 403, (headers, r.code, r.body)
            assert "not authorized to call endpoint 'echo'" in json.loads(r.body)["message"]
    r = await _call(jp_fetch, "open_one", {}, headers=NO_AUTH)  # public=True: an explicit opt-in
    assert r.code == 200 and json.loads(r.body) == "anyone"
    r = await _call(jp_fetch, "no-such-one", {"x": 1}, headers=NO_AUTH)
    assert r.code == 403  # a stranger does not learn which endpoints exist
    view = json.loads((await jp_fetch("cellhop", "api", "endpoints", "echo")).body)
    assert view["requests"] == served  # nothing ran
    # a key calls its endpoint, and opens nothing else of the server
    r = await _call(jp_fetch, "echo", {"x": 7}, headers={"Authorization": f"Bearer {echo_key}"})
    assert r.code == 200 and json.loads(r.body)["sum"] == 8
    for path in (("cellhop", "api", "gpus"), ("cellhop", "api", "endpoints"), ("api", "kernels")):
        r = await jp_fetch(*path, headers={"Authorization": f"Bearer {echo_key}"}, raise_error=False)
        assert r.code == 403, path
    r = await jp_fetch("cellhop", "api", "endpoints", "echo", method="DELETE",
                       headers={"Authorization": f"token {other_kernel}"}, raise_error=False)
    assert r.code == 403 and "a kernel's token may delete only the endpoints that kernel deployed" in r.body.decode()
    for path in (("cellhop", "api", "endpoints", "echo"), ("cellhop", "api", "endpoints", "echo", "keys")):
        r = await jp_fetch(*path, method="PUT" if len(path) == 4 else "POST", body=b"x",
                           headers={"Authorization": f"token {other_kernel}"}, raise_error=False)
        assert r.code == 403, path
    # no key is stored in clear
    stored = (control_plane.config.state_dir and open(os.path.join(control_plane.config.state_dir, "endpoints",
                                                                   "echo", "endpoint.json")).read())
    assert echo_key not in stored and count_key not in stored
    folder = os.path.join(control_plane.config.state_dir, "endpoints", "echo")
    assert os.stat(folder).st_mode & 0o777 == 0o700
    assert sorted(os.listdir(folder)) == ["code-1.pkl", "endpoint.json"]
    assert all(os.stat(os.path.join(folder, f)).st_mode & 0o777 == 0o600 for f in os.listdir(folder))

    # 16 concurrent requests scale out beyond one container (concurrency=2, max_containers=2) ...
    from cellhop.container import Phase

    pool = jp_serverapp.web_app.settings["cellhop_endpoints"].pools["echo"]
    before = {c.id for c in _containers(control_plane, "echo")}
    most = 0

    async def watch():
        nonlocal most
        while True:
            most = max(most, len(pool.replicas) + pool.starting)
            await asyncio.sleep(0.02)

    watcher = asyncio.ensure_future(watch())
    answers = await asyncio.gather(*(_call(jp_fetch, "echo", {"x": i, "wait": 0.5}, request_timeout=120)
                                     for i in range(16)))
    watcher.cancel()
    assert [json.loads(r.body)["sum"] for r in answers] == [i + 1 for i in range(16)]
    assert most == 2, most  # never more than max_containers

    def used():  # the containers that served the load: ready at some point, new or still running
        found = [c for c in _containers(control_plane, "echo") if c.phase_time(Phase.READY)
                 and (c.id not in before or c.phase != Phase.EXITED)]
        return found if len(found) >= 2 else None

    assert len(await _until(used, 60, "two echo containers")) == 2
    # ... and back down after scaledown (2 s idle): none left (min_containers=0)
    await _until(lambda: not _live(control_plane, "echo"), 60, "the echo endpoint's containers to scale down")
    r = await _call(jp_fetch, "echo", {"x": 1})  # from zero again
    assert r.code == 200

    # listed, then deleted: its containers stop and it answers no more
    listed = json.loads((await jp_fetch("cellhop", "api", "endpoints")).body)["endpoints"]
    assert {e["name"] for e in listed} == {"echo", "count", "opaque", "open_one"}
    r = await jp_fetch("cellhop", "api", "endpoints", "opaque", method="DELETE")
    assert json.loads(r.body)["name"] == "opaque"
    await _until(lambda: not _live(control_plane, "opaque"), 30, "the deleted endpoint's containers to stop")
    r = await _call(jp_fetch, "opaque", {})
    assert r.code == 404 and json.loads(r.body)["error"] == "EndpointNotFound"

    # the event stream carries each endpoint's figures as they change, and its deletion
    await _until(lambda: [e for e in events if e["type"] == "endpoint" and e["name"] == "echo"
                          and e["endpoint"]["requests"] >= 20], 10, "an endpoint event with echo's requests")
    await _until(lambda: [e for e in events if e["type"] == "endpoint" and e.get("deleted")], 10,
                 "the deleted endpoint's event")
    subscription.close()


UPDATE = '''
import time, cellhop

@cellhop.endpoint(concurrency=4, max_containers=2, scaledown=30)
def slow(wait=0):
    time.sleep(float(wait))
    return {"version": VERSION}

VERSION = {version}
print(slow.deploy("slow")["version"])
'''

MORE = '''
import asyncio, json, os, time, urllib.request, cellhop

@cellhop.endpoint(max_containers=1, concurrency=1, timeout=1)
def stuck(wait):
    time.sleep(float(wait))
    return "done"

@cellhop.endpoint(max_containers=1, concurrency=4)
@cellhop.batched(max_batch_size=8, wait_ms=200)
def double(x):
    return [{"x2": 2 * v, "batch": len(x)} for v in x]

@cellhop.endpoint(max_containers=1, concurrency=1)
def counter(wait=0):
    import builtins
    builtins.calls = getattr(builtins, "calls", 0) + 1  # calls made in this container
    time.sleep(float(wait))
    return builtins.calls

@cellhop.endpoint(max_containers=1)
class Model:  # made once per container: its @cellhop.enter method loads, every call reuses it
    loads = 0

    @cellhop.enter
    def load(self):
        self.loads += 1
        self.weights = 10

    def __call__(self, x):
        return {"y": self.weights * int(x), "loads": self.loads}

def make_app():  # a bare ASGI app, made in the container
    calls = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            message = await receive()
            calls.append("started")
            await send({"type": "lifespan.startup.complete"})
            return
        body = (await receive())["body"]
        if scope["path"] == "/stream":  # a streamed response: its first part, a pause, the rest
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"first ", "more_body": True})
            await asyncio.sleep(1.5)
            await send({"type": "http.response.body", "body": b"last"})
            return
        answer = {"method": scope["method"], "path": scope["path"], "query": scope["query_string"].decode(),
                  "root": scope["root_path"], "body": body.decode(), "calls": calls,
                  "headers": sorted(k.decode() for k, v in scope["headers"])}
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"content-type", b"application/json"), (b"x-app", b"yes")]})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})
    return app

cellhop.asgi(make_app, max_containers=1).deploy("web")
stuck.deploy("stuck")
cellhop.deploy(double, name="double")
counter.deploy("counter")
Model.deploy("model")
# this kernel calls its own endpoint with its own token
request = urllib.request.Request(os.environ["CELLHOP_CONTROL_URL"] + "cellhop/endpoints/stuck/", method="POST",
                                 data=json.dumps({"wait": 0}).encode(),
                                 headers={"Authorization": "token " + os.environ["CELLHOP_CONTROL_TOKEN"]})
print(json.loads(urllib.request.urlopen(request, timeout=60).read()))
'''


async def test_rolling_update_and_sigkill_under_load(start_kernel, control_plane, jp_fetch):
    kid, kc = await start_kernel()
    content, out, _ = await run(kc, UPDATE.replace("{version}", "1"), timeout=120)
    assert content["status"] == "ok" and out.strip() == "1", (content, out)
    r = await _call(jp_fetch, "slow", {})
    assert json.loads(r.body) == {"version": 1}

    # a rolling update: requests in flight finish on version 1, later ones get version 2
    in_flight = [asyncio.ensure_future(_call(jp_fetch, "slow", {"wait": 2}, request_timeout=120)) for _ in range(3)]
    await asyncio.sleep(0.5)
    content, out, _ = await run(kc, UPDATE.replace("{version}", "2"), timeout=120)
    assert content["status"] == "ok" and out.strip() == "2", (content, out)
    r = await _call(jp_fetch, "slow", {}, request_timeout=120)
    assert json.loads(r.body) == {"version": 2}
    assert [json.loads(r.body) for r in await asyncio.gather(*in_flight)] == [{"version": 1}] * 3
    await _until(lambda: len(_live(control_plane, "slow")) == 1, 30, "the old version's container to stop")

    # a container SIGKILLed under load: every request is answered, right or with a JSON error (503)
    calls = [asyncio.ensure_future(_call(jp_fetch, "slow", {"wait": 0.5}, request_timeout=120)) for _ in range(16)]
    [victim] = await _until(lambda: [c for c in _live(control_plane, "slow") if c.phase.value == "ready"], 30,
                            "a ready container")
    await asyncio.sleep(0.7)
    pids = container_kernel_pids(victim.directory)
    assert pids, "the container's kernel process"
    os.kill(pids[0], signal.SIGKILL)
    answers = await asyncio.gather(*calls)
    ok = [r for r in answers if r.code == 200]
    failed = [r for r in answers if r.code != 200]
    assert all(json.loads(r.body) == {"version": 2} for r in ok)
    assert all(r.code == 503 and json.loads(r.body)["error"] == "EndpointUnavailable" for r in failed), \
        [(r.code, r.body) for r in failed]
    assert len(ok) >= 8, [(r.code, r.body) for r in answers]  # retried on a fresh container
    assert victim.phase.value == "exited"
    view = json.loads((await jp_fetch("cellhop", "api", "endpoints", "slow")).body)
    assert view["retries"] >= 1, view  # the kill did hit requests in flight
    r = await _call(jp_fetch, "slow", {})
    assert r.code == 200
    r = await jp_fetch("cellhop", "api", "endpoints", "slow", "logs")
    assert isinstance(json.loads(r.body)["logs"], dict)

    # timeout= gives 504; beyond the queue limit (20 here), 429 with Retry-After; @batched: one call on lists
    content, out, _ = await run(kc, MORE, timeout=120)
    assert content["status"] == "ok" and out.strip() == "done", (content, out)
    r = await _call(jp_fetch, "stuck", {"wait": 5}, request_timeout=60)
    assert r.code == 504 and json.loads(r.body)["error"] == "EndpointTimeout", r.body
    answers = await asyncio.gather(*(_call(jp_fetch, "stuck", {"wait": 0.5}, request_timeout=120)
                                     for _ in range(28)))  # 1 runs, 20 wait, the rest: 429
    busy = [r for r in answers if r.code == 429]
    assert busy and all(r.headers["Retry-After"] == "1" for r in busy), [r.code for r in answers]
    assert all(json.loads(r.body) == "done" for r in answers if r.code != 429)
    answers = await asyncio.gather(*(_call(jp_fetch, "double", {"x": i}, request_timeout=120) for i in range(8)))
    results = [json.loads(r.body) for r in answers]
    assert [r["x2"] for r in results] == [2 * i for i in range(8)]
    assert max(r["batch"] for r in results) > 1, results  # concurrent requests shared a call

    # a whole ASGI app, at every path below the endpoint; Jupyter's credentials are not passed on to it
    r = await jp_fetch("cellhop", "endpoints", "web", "items", "7", method="PUT", body=b"hi", params={"q": "1"},
                       headers={"Cookie": "a=b"}, raise_error=False)
    assert r.code == 201 and r.headers["x-app"] == "yes" and r.headers["Content-Type"] == "application/json", r.body
    answer = json.loads(r.body)
    assert answer["method"] == "PUT" and answer["path"] == "/items/7" and answer["query"] == "q=1"
    assert answer["body"] == "hi" and answer["root"].endswith("/cellhop/endpoints/web") and answer["calls"] == ["started"]
    assert "authorization" not in answer["headers"] and "cookie" not in answer["headers"], answer["headers"]
    arrivals = []
    r = await jp_fetch("cellhop", "endpoints", "web", "stream", request_timeout=60, streaming_callback=lambda chunk:
                       arrivals.append((time.monotonic(), chunk)))
    assert r.code == 200 and r.headers["Content-Type"] == "text/plain"
    assert b"".join(c for _, c in arrivals) == b"first last" and arrivals[0][1] == b"first "
    assert arrivals[-1][0] - arrivals[0][0] > 0.5  # the first part came while the app paused
    r = await jp_fetch("cellhop", "endpoints", "web", "x", headers=NO_AUTH, raise_error=False)
    assert r.code == 403
    r = await _call(jp_fetch, "stuck/deeper", {"wait": 0})
    assert r.code == 404 and "is a function" in json.loads(r.body)["message"]

    # a class: loaded once per container
    for x in (2, 3):
        assert json.loads((await _call(jp_fetch, "model", {"x": x})).body) == {"y": 10 * x, "loads": 1}

    # a caller that goes away while its request waits in the queue: the request is called off, never run
    assert json.loads((await _call(jp_fetch, "counter", {})).body) == 1
    holding = asyncio.ensure_future(_call(jp_fetch, "counter", {"wait": 3}, request_timeout=60))
    await asyncio.sleep(0.5)
    from tornado.simple_httpclient import HTTPTimeoutError

    with pytest.raises(HTTPTimeoutError):  # queued behind it; the client gives up
        await _call(jp_fetch, "counter", {}, request_timeout=0.5)
    assert json.loads((await holding).body) == 2
    assert json.loads((await _call(jp_fetch, "counter", {})).body) == 3  # the abandoned one did not run


def test_a_second_server_on_the_same_state_serves_the_endpoint(runtime_root):
    """Deploy on one server process, stop it, start another on the same state directory: it serves it."""
    import subprocess
    import sys
    import urllib.parse
    import urllib.request

    import cloudpickle
    from server_process import ServerProcess

    from cellhop.kernel.endpoint import Endpoint

    def triple(x):
        print("tripling", x)  # to the container's log
        return {"triple": 3 * int(x)}

    state = runtime_root / "state"
    args = [f"--Cellhop.state_dir={state}"]

    def call(server, name, body, headers):
        request = urllib.request.Request(server.url + f"cellhop/endpoints/{name}/", data=json.dumps(body).encode(),
                                         method="POST", headers=headers)
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())

    first = ServerProcess(runtime_root, simulated_gpus=None, extra_args=args).start()
    try:
        spec = Endpoint(triple, max_containers=1, min_containers=1).spec()  # one kept warm
        token = {"Authorization": f"token {first.token}"}
        request = urllib.request.Request(
            first.url + "cellhop/api/endpoints/triple?" + urllib.parse.urlencode({"spec": json.dumps(spec)}),
            data=cloudpickle.dumps(triple), method="PUT", headers=token)
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert json.loads(answer.read())["version"] == 1
        request = urllib.request.Request(first.url + "cellhop/api/endpoints/triple/keys", data=b"{}", method="POST",
                                         headers=token)
        with urllib.request.urlopen(request, timeout=60) as answer:
            key = json.loads(answer.read())["key"]
        assert call(first, "triple", {"x": 2}, token) == {"triple": 6}
    finally:
        first.stop()
    second = ServerProcess(runtime_root, simulated_gpus=None, extra_args=args).start()
    try:
        def warm():  # min_containers=1: started by the new server before any request
            request = urllib.request.Request(second.url + "cellhop/api/containers",
                                             headers={"Authorization": f"token {second.token}"})
            with urllib.request.urlopen(request, timeout=60) as answer:
                return [c for c in json.loads(answer.read())["containers"]
                        if c["owner"] == "endpoint triple" and c["phase"] == "ready"]

        wait_until(warm, 60, "the warm container of endpoint triple on the new server")
        assert call(second, "triple", {"x": 5}, {"Authorization": f"Bearer {key}"}) == {"triple": 15}
        # the command line: a key, the list, the logs, delete
        cli = [sys.executable, "-m", "cellhop.server_ext.cli", "endpoint"]
        where = ["--url", second.url, "--token", second.token]
        new_key = subprocess.run([*cli, "key", "triple", *where], capture_output=True, text=True, check=True)
        assert call(second, "triple", {"x": 1}, {"Authorization": f"Bearer {new_key.stdout.strip()}"}) == {"triple": 3}
        listed = subprocess.run([*cli, "list", *where], capture_output=True, text=True, check=True).stdout
        assert "triple" in listed and "cellhop/endpoints/triple/" in listed, listed
        logs = subprocess.run([*cli, "logs", "triple", *where], capture_output=True, text=True, check=True).stdout
        assert "--- container " in logs and "tripling 5" in logs, logs
        subprocess.run([*cli, "delete", "triple", *where], capture_output=True, text=True, check=True)
        gone = subprocess.run([*cli, "delete", "triple", *where], capture_output=True, text=True)
        assert gone.returncode == 1 and "no endpoint 'triple' is deployed" in gone.stderr, gone.stderr
    finally:
        second.stop()
    wait_until(lambda: not container_kernel_pids(runtime_root), 20, "the servers' containers to be gone")


def test_a_kernel_without_a_server_is_told_endpoints_need_one(runtime_root):
    from cellhop.endpoint_errors import EndpointsNeedServer
    from cellhop.kernel.embedded_control_plane import EmbeddedControlPlane
    from cellhop.kernel.endpoint import endpoint
    from cellhop.server_ext.config import Cellhop

    control = EmbeddedControlPlane(Cellhop(runtime_root=str(runtime_root), state_dir=str(runtime_root / "state")))
    try:
        with pytest.raises(EndpointsNeedServer, match="served by a Jupyter server with the cellhop extension"):
            endpoint(lambda: 1).deploy("one", control=control)
    finally:
        control.close()
    assert not (runtime_root / "state" / "endpoints").exists()


SCALE_OUT = '''
import os, time, cellhop

@cellhop.endpoint(max_containers=3, scaledown=30)
def busy(wait=0):
    time.sleep(float(wait))
    return os.environ["CELLHOP_CONTAINER_ID"]

async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})

busy.deploy("busy")
cellhop.asgi(app, max_containers=1).deploy("overlapping")
print("deployed")
'''


async def test_a_function_endpoint_scales_out_rather_than_queue_in_a_busy_container(start_kernel, control_plane,
                                                                                   jp_fetch):
    """A function's calls run one at a time in its container, so by default a container takes one request
    and simultaneous requests start more containers (up to max_containers) instead of waiting behind each
    other in one; an ASGI app, whose requests overlap in its container, takes 8."""
    kid, kc = await start_kernel()
    content, out, _ = await run(kc, SCALE_OUT, timeout=120)
    assert content["status"] == "ok" and out.strip() == "deployed", (content, out)
    views = {name: json.loads((await jp_fetch("cellhop", "api", "endpoints", name)).body)
             for name in ("busy", "overlapping")}
    assert views["busy"]["spec"]["concurrency"] == 1 and views["overlapping"]["spec"]["concurrency"] == 8, views

    answers = await asyncio.gather(*[_call(jp_fetch, "busy", {"wait": 3}, request_timeout=120) for _ in range(3)])
    assert all(r.code == 200 for r in answers), [(r.code, r.body) for r in answers]
    served_by = [json.loads(r.body) for r in answers]
    assert len(set(served_by)) == 3, f"three simultaneous calls were served by {served_by}"
    assert len(_containers(control_plane, "busy")) == 3
