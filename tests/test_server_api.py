"""The control plane inside jupyter_server: every REST route with and without credentials,
bad input on each, XSRF, the kernels' scoped token, and a container's life through the API.

A real jupyter_server (pytest-jupyter's fixtures) with the cellhop extension
enabled and a simulated inventory; real container kernels.
"""

from __future__ import annotations

import json

import pytest

from cellhop.server_ext.api.base import KERNEL_TOKEN_SETTING
from cellhop.server_ext.kernel_tokens import token_for

pytestmark = pytest.mark.timeout(120)

NO_AUTH = {"Authorization": ""}





async def call(jp_fetch, method, path, body=None, headers=None, params=None):
    """(status, JSON body) of a cellhop API call, errors included."""
    kwargs = {"method": method, "raise_error": False, "headers": dict(headers or {}), "params": params}
    if body is not None or method in ("POST", "PUT"):
        kwargs["body"] = body if isinstance(body, (str, bytes)) else json.dumps(body or {})
    r = await jp_fetch("cellhop", "api", *path.split("/"), **kwargs)
    return r.code, (json.loads(r.body) if r.body else None)


async def start(jp_fetch, gpu="H100", **spec):
    status, body = await call(jp_fetch, "POST", "containers", {"spec": {"gpu": gpu, "owner": "test", **spec}})
    assert status == 201, body
    return body


ROUTES = [
    ("GET", "gpus"), ("GET", "containers"), ("POST", "containers"), ("GET", "containers/{id}"),
    ("DELETE", "containers/{id}"), ("POST", "containers/{id}/stop"), ("POST", "containers/{id}/interrupt"),
    ("POST", "containers/{id}/touch"), ("GET", "containers/{id}/logs"),
]


@pytest.mark.parametrize("method,route", ROUTES)
async def test_every_route_refuses_requests_without_credentials_and_changes_nothing(
        jp_fetch, control_plane, method, route):
    container = await start(jp_fetch)
    path = route.format(id=container["id"])
    body = {"spec": {"gpu": "A10G"}} if route == "containers" and method == "POST" else None
    status, reply = await call(jp_fetch, method, path, body, headers=NO_AUTH)
    assert status == 403, reply
    assert reply["message"]
    live = control_plane.manager.list()
    assert [c.id for c in live] == [container["id"]]  # nothing started, nothing removed
    assert live[0].phase.value == "ready"  # nothing stopped


@pytest.mark.parametrize("method,route", ROUTES)
async def test_every_route_answers_an_authenticated_request(jp_fetch, method, route):
    container = await start(jp_fetch)
    path = route.format(id=container["id"])
    body = {"spec": {"gpu": "A10G", "owner": "test"}} if route == "containers" and method == "POST" else None
    status, reply = await call(jp_fetch, method, path, body)
    assert status in (200, 201), reply
    assert isinstance(reply, dict)


async def test_the_kernels_token_opens_the_cellhop_api_and_nothing_else(jp_fetch, jp_serverapp):
    token = token_for(jp_serverapp.web_app.settings[KERNEL_TOKEN_SETTING], "test-kernel")  # a kernel's own
    headers = {"Authorization": f"token {token}"}
    status, body = await call(jp_fetch, "GET", "gpus", headers=headers)
    assert status == 200 and body["simulated"] is True
    r = await jp_fetch("api", "kernels", headers=headers, raise_error=False)
    assert r.code == 403
    r = await jp_fetch("api", "contents", headers=headers, raise_error=False)
    assert r.code == 403
    status, _ = await call(jp_fetch, "GET", "gpus", headers={"Authorization": f"token {token}x"})
    assert status == 403


async def test_gpus_lists_the_inventory_with_holders(jp_fetch):
    status, body = await call(jp_fetch, "GET", "gpus")
    assert status == 200
    assert body["simulated"] is True and body["runtime"].startswith("local")
    assert [(g["type"], g["simulated"], g["holder"]) for g in body["gpus"]] == [("H100", True, None),
                                                                               ("A10G", True, None)]
    container = await start(jp_fetch, "A10G")
    _, body = await call(jp_fetch, "GET", "gpus")
    holder = {g["type"]: g["holder"] for g in body["gpus"]}
    assert (holder["A10G"]["owner"], holder["A10G"]["container"]) == ("test", container["id"])
    assert holder["H100"] is None


async def test_a_container_through_its_whole_life(jp_fetch):
    container = await start(jp_fetch, "H100", label="api test")
    cid = container["id"]
    assert container["phase"] == "ready" and container["gpus"][0]["type"] == "H100"
    assert container["connection_info"]["key"]  # only the starter gets the key
    status, listed = await call(jp_fetch, "GET", "containers")
    assert [c["id"] for c in listed["containers"]] == [cid]
    assert "connection_info" not in listed["containers"][0]
    status, detail = await call(jp_fetch, "GET", f"containers/{cid}")
    assert [p["phase"] for p in detail["phases"]] == ["queued", "starting", "ready"]
    assert "key" not in json.dumps(detail)
    status, _ = await call(jp_fetch, "POST", f"containers/{cid}/touch")
    assert status == 200
    status, _ = await call(jp_fetch, "POST", f"containers/{cid}/interrupt")
    assert status == 200
    status, stopped = await call(jp_fetch, "POST", f"containers/{cid}/stop", {"reason": "done with it"})
    assert stopped["phase"] == "exited"
    assert stopped["exit"]["stopped"] and stopped["exit"]["description"] == "done with it"
    status, logs = await call(jp_fetch, "GET", f"containers/{cid}/logs", params={"tail": "5"})
    assert status == 200 and isinstance(logs["log"], str)
    status, _ = await call(jp_fetch, "DELETE", f"containers/{cid}")
    assert status == 200
    status, gone = await call(jp_fetch, "GET", f"containers/{cid}")
    assert status == 404 and cid in gone["message"]


async def test_starting_with_events_streams_the_phases(jp_fetch):
    r = await jp_fetch("cellhop", "api", "containers", method="POST", params={"events": "1"},
                       body=json.dumps({"spec": {"gpu": "A10G", "owner": "test"}}))
    lines = [json.loads(line) for line in r.body.decode().splitlines()]
    assert [e["phase"] for e in lines if e["type"] == "container"] == ["queued", "starting", "ready"]
    assert lines[-1]["type"] == "started" and lines[-1]["container"]["connection_info"]["key"]


async def test_a_request_this_host_can_never_satisfy_fails_in_the_stream_too(jp_fetch):
    r = await jp_fetch("cellhop", "api", "containers", method="POST", params={"events": "1"},
                       body=json.dumps({"spec": {"gpu": "A100"}}))
    last = json.loads(r.body.decode().splitlines()[-1])
    assert last["type"] == "error" and last["status"] == 400 and "This host has" in last["message"]


BAD_STARTS = [
    ("not json", "not valid JSON"),
    ([1, 2], "JSON object"),
    ({"spec": {"gpu": "A100"}}, "This host has: H100, A10G (simulated)"),
    ({"spec": {"gpu": "H100:9"}}, "H100"),
    ({"spec": {"gpu": "H100", "memory": "lots"}}, "not a size"),
    ({"spec": {"gpu": "H100", "memory": "1K"}}, "too small"),
    ({"spec": {"gpu": "H100", "cpus": 0}}, "cpus"),
    ({"spec": {"gpu": "H100", "cpus": "two"}}, "wrong type"),
    ({"spec": {"gpu": "H100", "env": {"A": 1}}}, "env"),
    ({"spec": {"gpu": "H100", "colour": "red"}}, "unknown field"),
    ({"spec": {"gpu": 5}}, "wrong type"),
    ({"spec": "H100"}, "JSON object"),
    ({"spec": {"gpu": "H100"}, "extra": 1}, "unknown field"),
    ({"spec": None}, "field 'spec'"),
    ({}, "field 'spec'"),
    ({"spec": {"gpu": "H100", "memory": 1}}, "too small"),
    ({"spec": {"gpu": "H100", "memory": "9" * 400}}, "not a size"),
    ({"spec": {"gpu": "H100", "memory": 9 * 10**30}}, "more than 1 PiB"),
    ({"spec": {"gpu": "H100", "env": {"A\x00B": "1"}}}, "not an environment variable name"),
    ({"spec": {"gpu": "H100", "env": {"A=B": "1"}}}, "not an environment variable name"),
    ({"spec": {"gpu": "H100", "env": {"PYTHONHOME": "/nowhere"}}}, "take over the interpreter"),
    ({"spec": {"gpu": "H100", "env": {"LD_PRELOAD": "/tmp/x.so"}}}, "take over the interpreter"),
    ({"spec": {"gpu": "H100", "env": {"CUDA_VISIBLE_DEVICES": "0,1"}}}, "CUDA_VISIBLE_DEVICES"),
    ({"spec": {"gpu": "H100", "workdir": "relative"}}, "relative path"),
    ({"spec": {"gpu": "H100", "idle_timeout": -1}}, "idle_timeout"),
    ({"spec": {"gpu": "H100", "owner_pid": 10**30}}, "owner_pid"),
]


@pytest.mark.parametrize("body,says", BAD_STARTS)
async def test_bad_input_when_starting_is_a_400_that_says_what_was_wrong(jp_fetch, control_plane, body, says):
    status, reply = await call(jp_fetch, "POST", "containers", body)
    assert status == 400, reply
    assert says in reply["message"], reply
    assert control_plane.manager.list() == []


async def test_bad_input_on_the_container_routes(jp_fetch):
    for method, path in [("GET", "containers/nope"), ("POST", "containers/nope/stop"),
                         ("DELETE", "containers/nope"), ("GET", "containers/nope/logs"),
                         ("POST", "containers/nope/touch"), ("POST", "containers/nope/interrupt")]:
        status, reply = await call(jp_fetch, method, path)
        assert status == 404 and "nope" in reply["message"], (method, path, reply)
    container = await start(jp_fetch, "A10G")
    cid = container["id"]
    for tail in ("abc", "0", "-3"):
        status, reply = await call(jp_fetch, "GET", f"containers/{cid}/logs", params={"tail": tail})
        assert status == 400 and "tail" in reply["message"]
    status, reply = await call(jp_fetch, "POST", f"containers/{cid}/stop", "{bad json")
    assert status == 400
    status, reply = await call(jp_fetch, "POST", f"containers/{cid}/stop", {"reason": 42})
    assert status == 400
    await call(jp_fetch, "POST", f"containers/{cid}/stop")
    status, reply = await call(jp_fetch, "POST", f"containers/{cid}/interrupt")
    assert status == 409 and "exited" in reply["message"]


async def test_state_changing_requests_with_a_login_cookie_need_the_xsrf_token(jp_fetch, jp_serverapp,
                                                                               http_server_client, jp_base_url):
    token = jp_serverapp.identity_provider.token
    cookies = []
    for params in ({"token": token}, {}):  # log in with the token, then load the login form (sets _xsrf)
        r = await jp_fetch("login", params=params, headers=dict(NO_AUTH), follow_redirects=False,
                           raise_error=False)
        cookies += [c.split(";")[0] for c in r.headers.get_list("Set-Cookie")]
    xsrf = next(c.split("=", 1)[1] for c in cookies if c.startswith("_xsrf="))
    cookie_header = {"Authorization": "", "Cookie": "; ".join(cookies)}
    status, reply = await call(jp_fetch, "GET", "gpus", headers=cookie_header)
    assert status == 200  # the cookie logs in
    body = {"spec": {"gpu": "A10G", "owner": "browser"}}
    status, reply = await call(jp_fetch, "POST", "containers", body, headers=cookie_header)
    assert status == 403 and "XSRF" in reply["message"].upper()
    status, reply = await call(jp_fetch, "POST", "containers", body, headers={**cookie_header, "X-XSRFToken": xsrf})
    assert status == 201, reply


def _every_route():
    """(method, path) for every method of every route the extension mounts, path groups filled in."""
    import re

    from cellhop.server_ext.app import _api_modules

    routes = []
    for module in _api_modules():
        for pattern, handler in module.handlers:
            path = re.sub(r"\(\?P<\w+>([^)]*)\)",  # a group of words takes its first, any other "x"
                          lambda m: m.group(1).split("|")[0] if re.fullmatch(r"[\w|]+", m.group(1)) else "x",
                          pattern)
            for method in ("get", "post", "put", "delete", "patch"):
                if method in vars(handler) or any(method in vars(base) for base in handler.__mro__[:3]
                                                  if base.__module__.startswith("cellhop")):
                    routes.append((method.upper(), path))
    return sorted(set(routes))


EVERY_ROUTE = _every_route()


def test_the_route_list_covers_every_resource():
    paths = {path.split("/")[0] for _, path in EVERY_ROUTE}
    assert {"gpus", "containers", "events", "images", "volumes", "secrets"} <= paths, paths


@pytest.mark.parametrize("method,route", EVERY_ROUTE)
async def test_no_route_of_any_resource_answers_without_credentials(jp_fetch, method, route):
    body = "{}" if method in ("POST", "PUT", "PATCH") else None
    status, reply = await call(jp_fetch, method, route, body, headers=NO_AUTH)
    assert status == 403, (method, route, reply)


# -- a spec naming what this host cannot use is the user's error (400), refused before any queueing --
async def test_an_unknown_image_a_missing_interpreter_or_an_unusable_workdir_is_a_400_before_queueing(
        jp_fetch, control_plane, jp_root_dir, monkeypatch):
    a_file = jp_root_dir / "a-file.txt"
    a_file.write_text("not a folder")
    granted = []
    scheduler = control_plane.manager.scheduler
    real_acquire = scheduler.acquire
    monkeypatch.setattr(scheduler, "acquire", lambda *a, **k: granted.append(a) or real_acquire(*a, **k))
    bad = [
        ({"image": "no-such-image"}, "no image 'no-such-image'"),
        ({"image": "not a name!"}, "field 'image'"),
        ({"python": "/nonexistent/bin/python3"}, "field 'python'"),
        ({"python": "no-such-python-here"}, "not an executable file"),
        ({"python": str(a_file)}, "not an executable file"),  # not executable
        ({"workdir": str(a_file)}, "not a folder"),
        ({"workdir": str(a_file / "sub" / "dir")}, "cannot be made"),
    ]
    for fields, says in bad:
        status, reply = await call(jp_fetch, "POST", "containers", {"spec": {"gpu": "H100", "owner": "t", **fields}})
        assert status == 400, (fields, reply)
        assert says in reply["message"], (fields, reply)
        assert reply["error"] != "InternalError"
        r = await jp_fetch("cellhop", "api", "containers", method="POST", params={"events": "1"}, raise_error=False,
                           body=json.dumps({"spec": {"gpu": "H100", "owner": "t", **fields}}))
        last = json.loads(r.body.decode().splitlines()[-1])
        assert last["type"] == "error" and last["status"] == 400 and says in last["message"], (fields, last)
    assert granted == []  # no GPU was held, not even briefly
    assert control_plane.manager.list() == []
    assert all(h is None for h in scheduler.holders().values())
    # a workdir that does not exist yet, in the notebooks' folder, is made
    container = await start(jp_fetch, "A10G", workdir=str(jp_root_dir / "new" / "folder"))
    assert (jp_root_dir / "new" / "folder").is_dir()
    await call(jp_fetch, "DELETE", f"containers/{container['id']}")
    # an interpreter that exits at once: the container dies while starting, a 422 that says so (not a 500)
    status, reply = await call(jp_fetch, "POST", "containers",
                               {"spec": {"gpu": "A10G", "owner": "t", "python": "/bin/false"}})
    assert status == 422 and "died while starting" in reply["message"] and "'python'" in reply["message"], reply
    assert all(h is None for h in scheduler.holders().values())


# -- the kernels' token reaches only the folders the server allows (issue 18, item 2) -------------------
async def test_a_spec_may_name_only_the_notebooks_folders_as_its_workdir(jp_fetch, jp_serverapp, control_plane,
                                                                      jp_root_dir, runtime_root, tmp_path):
    from jupyter_core.paths import jupyter_runtime_dir

    token = token_for(jp_serverapp.web_app.settings[KERNEL_TOKEN_SETTING], "a-kernel")  # a kernel's own token
    kernel = {"Authorization": f"token {token}"}
    outside = tmp_path / "outside"
    outside.mkdir()
    (jp_root_dir / "escape").symlink_to("/")  # a link in the notebooks' folder pointing out of it
    refused = ["/", "/etc", jupyter_runtime_dir(), str(runtime_root), str(control_plane.manager.root / "containers"),
               str(outside), str(jp_root_dir / "escape"), str(jp_root_dir / "escape" / "root"), "/proc/self/cwd"]
    for workdir in refused:
        status, reply = await call(jp_fetch, "POST", "containers",
                                   {"spec": {"gpu": "A10G", "owner": "t", "workdir": workdir}}, headers=kernel)
        assert status == 400, (workdir, reply)
        assert "field 'workdir'" in reply["message"] and "Allowed:" in reply["message"], (workdir, reply)
        assert str(jp_root_dir.resolve()) in reply["message"], reply  # it names what is allowed
    for workdir, says in (("relative/dir", "relative path"), ("/tmp/a\x00b", "NUL")):
        status, reply = await call(jp_fetch, "POST", "containers",
                                   {"spec": {"gpu": "A10G", "owner": "t", "workdir": workdir}}, headers=kernel)
        assert status == 400 and says in reply["message"], (workdir, reply)
    assert control_plane.manager.list() == []
    # the notebooks' own folders are fine, and what the container binds is the folder, links resolved
    (jp_root_dir / "project").mkdir()
    (jp_root_dir / "here").symlink_to(jp_root_dir / "project")
    container = await start(jp_fetch, "A10G", workdir=str(jp_root_dir / "here"))
    assert control_plane.manager.get(container["id"]).spec.workdir == (jp_root_dir / "project").resolve()
    await call(jp_fetch, "DELETE", f"containers/{container['id']}")


# -- stopping or deleting a container still queued for a GPU ------------------------------------------
@pytest.mark.parametrize("how", ["stop", "delete"])
async def test_stopping_or_deleting_a_queued_container_ends_its_wait_and_it_never_takes_the_gpu(
        jp_fetch, control_plane, how):
    import asyncio
    import time

    holder = await start(jp_fetch, "H100", label="A")
    waiting = asyncio.ensure_future(call(jp_fetch, "POST", "containers",
                                         {"spec": {"gpu": "H100", "owner": "test", "label": "B"}}))
    manager = control_plane.manager
    deadline = time.monotonic() + 20
    while not [c for c in manager.list() if c.spec.label == "B" and c.queue_position is not None]:
        assert time.monotonic() < deadline and not waiting.done(), "B never queued"
        await asyncio.sleep(0.05)
    [queued] = [c for c in manager.list() if c.spec.label == "B"]
    started = time.monotonic()
    if how == "stop":
        status, reply = await call(jp_fetch, "POST", f"containers/{queued.id}/stop", {"reason": "changed my mind"})
        assert status == 200 and reply["phase"] == "exited", reply
        assert "stopped while queued" in reply["exit"]["description"]
    else:
        status, reply = await call(jp_fetch, "DELETE", f"containers/{queued.id}")
        assert status == 200, reply
    assert time.monotonic() - started < 2.0  # no stop grace (5 s) for a container with no process
    status, reply = await asyncio.wait_for(waiting, 5)  # its start request ends at once, too
    assert status == 409 and reply["error"] == "ContainerStopped", reply
    assert "stopped while queued" in reply["message"]

    await call(jp_fetch, "POST", f"containers/{holder['id']}/stop")  # the GPU frees up
    deadline = time.monotonic() + 30
    while manager.scheduler.holders()["GPU-simulated-h100-0"] is not None:
        assert time.monotonic() < deadline, "the stopped container's GPU was not freed within 30 s"
        await asyncio.sleep(0.02)
    assert all(c.phase.value == "exited" for c in manager.list())
    status, listed = await call(jp_fetch, "GET", "containers")
    assert {c["label"]: c["phase"] for c in listed["containers"]} == (
        {"A": "exited", "B": "exited"} if how == "stop" else {"A": "exited"})


# -- slow container calls run on threads of their own (not the event loop's small shared executor) ----
async def test_restart_stop_and_delete_run_on_threads_of_their_own(jp_fetch, control_plane, monkeypatch):
    import threading

    manager = control_plane.manager
    threads = {}
    for name in ("restart", "stop", "remove"):
        real = getattr(manager, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            threads.setdefault(_name, threading.current_thread().name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(manager, name, spy)
    container = await start(jp_fetch, "A10G")
    cid = container["id"]
    assert (await call(jp_fetch, "POST", f"containers/{cid}/restart"))[0] == 200
    assert (await call(jp_fetch, "POST", f"containers/{cid}/stop"))[0] == 200
    assert (await call(jp_fetch, "DELETE", f"containers/{cid}"))[0] == 200
    assert threads == {"restart": "cellhop-long-call", "stop": "cellhop-long-call", "remove": "cellhop-long-call"}
