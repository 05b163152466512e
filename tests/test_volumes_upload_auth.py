"""Volume uploads under jupyter_server's authorizer, an async one included, and off the event loop.

An upload's body streams in before its handler method runs, so its authorization happens in
prepare(); jupyter_server allows `async def is_authorized`, whose coroutine is truthy, so it
must be awaited there. A real jupyter_server (pytest-jupyter) configured with an authorizer
that denies writes to cellhop: the upload is a 403 and nothing reaches the disk.
"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from jupyter_server.auth.authorizer import AllowAllAuthorizer, Authorizer

pytestmark = pytest.mark.timeout(120)

SEEN: list[tuple[str, str]] = []


class DenyCellhopWrites(Authorizer):
    """Reads are fine; writing to the cellhop API is not. Async, as jupyter_server allows."""

    async def is_authorized(self, handler, user, action, resource) -> bool:
        await asyncio.sleep(0)
        SEEN.append((action, resource))
        return not (resource == "cellhop" and action == "write")


@pytest.fixture
def authorizer():
    """The test server's authorizer class; a test changes it with @pytest.mark.parametrize."""
    return DenyCellhopWrites


@pytest.fixture
def jp_server_config(runtime_root, tmp_path, authorizer):
    return {
        "ServerApp": {"jpserver_extensions": {"cellhop": True}, "authorizer_class": authorizer},
        "Cellhop": {"simulated_gpus": "H100:1", "runtime_root": str(runtime_root), "idle_timeout": 0,
                    "state_dir": str(tmp_path / "state")},
    }


async def upload(jp_fetch, name: str, path: str, body: bytes):
    r = await jp_fetch("cellhop", "api", "volumes", name, "upload", method="PUT", body=body,
                       params={"path": path}, raise_error=False)
    return r.code, (json.loads(r.body) if r.body else None)


async def test_an_async_authorizer_that_denies_uploads_gets_a_403_and_nothing_is_written(
        jp_fetch, jp_serverapp, monkeypatch):
    control_plane = jp_serverapp.web_app.settings["cellhop_control_plane"]
    volumes = control_plane.volumes
    volumes.create("ds", "1M")
    opened = []
    real_upload = volumes.upload
    monkeypatch.setattr(volumes, "upload", lambda *a, **k: opened.append(a) or real_upload(*a, **k))
    SEEN.clear()

    status, reply = await upload(jp_fetch, "ds", "small.bin", b"x" * 1000)
    assert status == 403, reply
    assert ("write", "cellhop") in SEEN  # the authorizer's answer was awaited, not taken as truthy
    # over the quota: had authorization passed, this would be a 413 from the volume
    status, reply = await upload(jp_fetch, "ds", "big.bin", b"x" * (2 * 2**20))
    assert status == 403, reply
    assert opened == []  # no staging file was even opened
    assert volumes.ls("ds", "") == []
    assert not list((volumes._dir("ds") / "staging").glob("*"))
    r = await jp_fetch("cellhop", "api", "volumes", "ds", "files", raise_error=False)
    assert r.code == 200 and json.loads(r.body)["entries"] == []  # reading is still allowed


@pytest.mark.parametrize("authorizer", [AllowAllAuthorizer])
async def test_an_allowed_upload_writes_its_chunks_off_the_event_loop(jp_fetch, jp_serverapp, monkeypatch):
    from cellhop.server_ext.volumes import Upload

    volumes = jp_serverapp.web_app.settings["cellhop_control_plane"].volumes
    volumes.create("ds")
    loop_thread = threading.current_thread()
    writers = []
    real_write = Upload.write
    monkeypatch.setattr(Upload, "write", lambda self, chunk: writers.append(threading.current_thread())
                        or real_write(self, chunk))
    body = bytes(range(256)) * 4096 * 3  # 3 MiB: several chunks
    status, entry = await upload(jp_fetch, "ds", "data.bin", body)
    assert status == 201, entry
    assert entry["size"] == len(body)
    assert writers and loop_thread not in writers
    f, size = volumes.open("ds", "data.bin")
    with f:
        assert size == len(body) and f.read() == body
