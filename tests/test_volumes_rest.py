"""The volumes and secrets routes of the REST API (a real jupyter_server with the cellhop extension):
round trips, credentials, every hostile path on every route (a 4xx JSON answer, never a 500), a mounted
volume's deletion refused with 409, quotas, and secret values that never come back."""

from __future__ import annotations

import json

import pytest

from test_volumes_traversal import HOSTILE

pytestmark = pytest.mark.timeout(120)

NO_AUTH = {"Authorization": ""}
VALUE = "sk-cellhop-7f3a9c1e5b2d"


@pytest.fixture
def jp_server_config(runtime_root):
    return {
        "ServerApp": {"jpserver_extensions": {"cellhop": True}},
        "Cellhop": {"simulated_gpus": "H100:1", "runtime_root": str(runtime_root), "idle_timeout": 0,
                    "state_dir": str(runtime_root / "state")},
    }


@pytest.fixture
def control_plane(jp_serverapp):
    return jp_serverapp.web_app.settings["cellhop_control_plane"]


async def call(jp_fetch, method, path, body=None, headers=None, params=None, raw=False):
    """(status, JSON body or bytes) of a cellhop API call, errors included."""
    kwargs = {"method": method, "raise_error": False, "headers": dict(headers or {}), "params": params}
    if body is not None or method in ("POST", "PUT"):
        kwargs["body"] = body if isinstance(body, (str, bytes)) else json.dumps(body or {})
    r = await jp_fetch("cellhop", "api", *path.split("/"), **kwargs)
    if raw and r.code < 400:
        return r.code, r.body
    return r.code, (json.loads(r.body) if r.body else None)


async def test_volume_round_trip(jp_fetch, control_plane):
    status, info = await call(jp_fetch, "POST", "volumes", {"name": "ds", "quota": "10M"})
    assert status == 201 and info["name"] == "ds"
    assert (await call(jp_fetch, "POST", "volumes", {"name": "ds"}))[0] == 200  # exists: fine
    status, info = await call(jp_fetch, "GET", "volumes/ds")
    assert status == 200 and info["quota"] == 10 * 2**20 and info["mounted_by"] == []
    status, entry = await call(jp_fetch, "PUT", "volumes/ds/upload", b"\x00binary\xff" * 1000,
                               params={"path": "raw/data.bin"})
    assert status == 201 and entry == {"name": "data.bin", "path": "raw/data.bin", "type": "file", "size": 8000,
                                       "modified": entry["modified"]}
    status, body = await call(jp_fetch, "GET", "volumes/ds/download", params={"path": "raw/data.bin"}, raw=True)
    assert status == 200 and body == b"\x00binary\xff" * 1000
    assert (await call(jp_fetch, "POST", "volumes/ds/mkdir", {"path": "empty"}))[0] == 201
    status, moved = await call(jp_fetch, "POST", "volumes/ds/mv", {"src": "raw/data.bin", "dst": "data.bin"})
    assert status == 200 and moved["path"] == "data.bin"
    status, listing = await call(jp_fetch, "GET", "volumes/ds/files")
    assert [(e["path"], e["type"]) for e in listing["entries"]] == [("empty", "dir"), ("raw", "dir"),
                                                                    ("data.bin", "file")]
    status, usage = await call(jp_fetch, "GET", "volumes/ds/usage")
    assert usage == {"bytes": 8000, "files": 1, "quota": 10 * 2**20}
    assert (await call(jp_fetch, "DELETE", "volumes/ds/files", params={"path": "raw"}))[0] == 200
    status, listing = await call(jp_fetch, "GET", "volumes")
    assert [v["name"] for v in listing["volumes"]] == ["ds"]
    assert [e["path"] for e in control_plane.volumes.ls("ds")] == ["empty", "data.bin"]
    assert (await call(jp_fetch, "DELETE", "volumes/ds"))[0] == 200
    status, err = await call(jp_fetch, "GET", "volumes/ds")
    assert status == 404 and err["error"] == "VolumeNotFound"


async def test_errors_carry_their_status(jp_fetch):
    await call(jp_fetch, "POST", "volumes", {"name": "small", "quota": 1000})
    status, err = await call(jp_fetch, "PUT", "volumes/small/upload", b"x" * 2000, params={"path": "big"})
    assert status == 413 and "quota" in err["message"]
    status, err = await call(jp_fetch, "GET", "volumes/small/download", params={"path": "nope"})
    assert status == 404 and "nope" in err["message"]
    await call(jp_fetch, "PUT", "volumes/small/upload", b"x", params={"path": "d/f"})
    status, err = await call(jp_fetch, "DELETE", "volumes/small/files", params={"path": "d"})
    assert status == 409 and "not empty" in err["message"]
    status, err = await call(jp_fetch, "PUT", "volumes/small/upload", b"x", params={"path": "d"})
    assert status == 409
    status, err = await call(jp_fetch, "PUT", "volumes/small/upload", b"x", params={"path": "d/f/g"})
    assert status == 409
    status, err = await call(jp_fetch, "GET", "volumes/small/download", params={"path": "d"})
    assert status == 409
    status, err = await call(jp_fetch, "POST", "volumes", {"name": "x", "size": 3})
    assert status == 400 and "unknown field" in err["message"]
    status, err = await call(jp_fetch, "GET", "volumes/small/download")
    assert status == 400 and "?path=" in err["message"]


@pytest.mark.parametrize("path", HOSTILE, ids=[repr(p)[:40] for p in HOSTILE])
async def test_every_route_refuses_a_hostile_path(jp_fetch, control_plane, path):
    await call(jp_fetch, "POST", "volumes", {"name": "v"})
    await call(jp_fetch, "PUT", "volumes/v/upload", b"inside", params={"path": "ok.txt"})
    before = sorted(p.name for p in (control_plane.volumes.root / "v").parent.parent.iterdir())
    attempts = [
        ("PUT", "volumes/v/upload", b"pwned", {"path": path}),
        ("GET", "volumes/v/download", None, {"path": path}),
        ("GET", "volumes/v/files", None, {"path": path}),
        ("DELETE", "volumes/v/files", None, {"path": path, "recursive": "1"}),
        ("POST", "volumes/v/mv", {"src": path, "dst": "moved"}, None),
        ("POST", "volumes/v/mv", {"src": "ok.txt", "dst": path}, None),
        ("POST", "volumes/v/mkdir", {"path": path}, None),
    ]
    for method, route, body, params in attempts:
        status, err = await call(jp_fetch, method, route, body, params=params)
        assert status == 400, (method, route, path, status, err)
        assert err["error"] == "VolumePathError" and err["message"], err
    assert sorted(p.name for p in (control_plane.volumes.root / "v").parent.parent.iterdir()) == before
    assert control_plane.volumes.ls("v") == [control_plane.volumes.stat("v", "ok.txt")]


@pytest.mark.parametrize("name", ["..", "%2e%2e", ".hidden", "a%00b", "-rf", "x" * 64])
async def test_hostile_volume_names_are_refused(jp_fetch, name):
    for method, route, body in [("POST", "volumes", {"name": name.replace("%2e", ".").replace("%00", "\x00")}),
                                ("GET", f"volumes/{name}", None), ("DELETE", f"volumes/{name}", None),
                                ("GET", f"volumes/{name}/files", None)]:
        status, err = await call(jp_fetch, method, route, body)
        assert 400 <= status < 500, (method, route, status, err)


async def test_deleting_a_mounted_volume_answers_409_naming_the_container(jp_fetch):
    status, container = await call(jp_fetch, "POST", "containers",
                                   {"spec": {"gpu": "none", "owner": "nb-1", "volumes": ["ds:/data"]}})
    assert status == 201, container
    assert container["volumes"] == [{"name": "ds", "path": "/data", "read_only": False}]
    status, err = await call(jp_fetch, "DELETE", "volumes/ds")
    assert status == 409 and container["id"] in err["message"] and "nb-1" in err["message"]
    await call(jp_fetch, "POST", f"containers/{container['id']}/stop")
    assert (await call(jp_fetch, "DELETE", "volumes/ds"))[0] == 200


ROUTES = [("GET", "volumes", None), ("POST", "volumes", {"name": "new"}), ("GET", "volumes/ds", None),
          ("DELETE", "volumes/ds", None), ("GET", "volumes/ds/usage", None),
          ("GET", "volumes/ds/files", None), ("DELETE", "volumes/ds/files?path=a.txt", None),
          ("GET", "volumes/ds/download?path=a.txt", None), ("PUT", "volumes/ds/upload?path=a.txt", b"pwned"),
          ("POST", "volumes/ds/mv", {"src": "a.txt", "dst": "b.txt"}), ("POST", "volumes/ds/mkdir", {"path": "d"}),
          ("GET", "secrets", None), ("POST", "secrets", {"name": "s2", "values": {"K": "v"}}),
          ("GET", "secrets/s", None), ("DELETE", "secrets/s", None)]


@pytest.mark.parametrize("method,route,body", ROUTES)
async def test_every_route_refuses_requests_without_credentials(jp_fetch, control_plane, method, route, body):
    control_plane.volumes.create("ds")
    control_plane.volumes.put("ds", "a.txt", b"kept")
    control_plane.secrets.create("s", {"KEY": VALUE})
    path, _, query = route.partition("?")
    params = dict([query.split("=")]) if query else None
    status, err = await call(jp_fetch, method, path, body, headers=NO_AUTH, params=params)
    assert status == 403, err
    assert VALUE not in json.dumps(err)
    assert control_plane.volumes.names() == ["ds"] and [e["path"] for e in control_plane.volumes.ls("ds")] == ["a.txt"]
    assert control_plane.volumes.read_chunks("ds", "a.txt").__next__() == b"kept"
    assert [s["name"] for s in control_plane.secrets.list()] == ["s"]


async def test_secret_routes_take_values_and_never_give_them_back(jp_fetch, control_plane):
    replies = []
    status, view = await call(jp_fetch, "POST", "secrets", {"name": "hf", "values": {"HF_TOKEN": VALUE}})
    replies.append(view)
    assert status == 201 and view["keys"] == ["HF_TOKEN"]
    status, view = await call(jp_fetch, "POST", "secrets",
                              {"name": "sess", "values": {"S_KEY": VALUE + "-s"}, "session": True})
    replies.append(view)
    assert status == 201 and view["session"] is True
    for method, route, body in [("GET", "secrets", None), ("GET", "secrets/hf", None),
                                ("POST", "secrets", {"name": "hf", "values": {"HF_TOKEN": "x"}}),
                                ("POST", "secrets", {"name": "bad", "values": {"1X": VALUE}}),
                                ("POST", "secrets", {"name": "bad", "values": VALUE}),
                                ("POST", "secrets", {"name": "../x", "values": {"K": VALUE}}),
                                ("GET", "secrets/nope", None)]:
        status, reply = await call(jp_fetch, method, route, body)
        replies.append(reply)
        assert status in (200, 400, 404, 409), (route, status, reply)
    assert [s["name"] for s in replies[2]["secrets"]] == ["hf", "sess"]
    assert replies[4]["error"] == "SecretExists" and replies[5]["error"] == "SecretError"
    assert VALUE not in json.dumps(replies)
    assert control_plane.secrets.environment(["hf", "sess"]) == {"HF_TOKEN": VALUE, "S_KEY": VALUE + "-s"}
    status, container = await call(jp_fetch, "POST", "containers",
                                   {"spec": {"gpu": "none", "owner": "t", "secrets": ["hf", "sess"]}})
    assert status == 201 and container["secrets"] == ["hf", "sess"] and VALUE not in json.dumps(container)
    status, log = await call(jp_fetch, "GET", f"containers/{container['id']}/logs")
    assert VALUE not in json.dumps(log)
    assert (await call(jp_fetch, "DELETE", "secrets/sess"))[0] == 200
    assert (await call(jp_fetch, "DELETE", "secrets/sess"))[0] == 404
