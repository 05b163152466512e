"""One error model: an error a user can cause carries its HTTP status, and a client gets back the very
class the server raised.

Every cellhop error class registers itself by name (cellhop/errors.py). The server's handlers answer
with the class's `http_status` and its name; the two HTTP clients (HttpControlPlane and its
HttpStorageClient) look the name up and raise that class, so `except VolumeNotFound` or
`except QueueTimeout` means the same with an embedded control plane and over HTTP. Here each status
the API uses (400, 404, 409, 413, 422, 503) is caused for real, through a real jupyter_server.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile

import pytest

from cellhop import errors
from cellhop.container import ContainerSpec
from cellhop.errors import (CellhopError, ContainerFailedToStart, ContainerNotFound, GpuRequestError, ImageNotFound,
                            InvalidContainerSpec, QueueTimeout, SecretError, SecretExists, SecretNotFound,
                            UnknownImage, VolumeConflict, VolumeFileNotFound, VolumeNotFound, VolumePathError,
                            VolumeQuotaExceeded)
from cellhop.gpu_request import GpuRequest
from cellhop.server_ext.api.base import KERNEL_TOKEN_SETTING
from cellhop.server_ext.kernel_tokens import token_for

from test_images_api import jp_server_config, state_dir  # noqa: F401  (the same server)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def client(jp_fetch, jp_serverapp, jp_http_port, jp_base_url):  # jp_fetch: the server listens
    from cellhop.kernel.http_control_plane import HttpControlPlane

    token = token_for(jp_serverapp.web_app.settings[KERNEL_TOKEN_SETTING], "test-kernel")  # a kernel's own token
    client = HttpControlPlane(f"http://127.0.0.1:{jp_http_port}{jp_base_url}", token)
    yield client
    client.close()


async def _raised(fn, *args, **kwargs) -> BaseException:
    try:
        await asyncio.to_thread(fn, *args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - what the client raised is the subject
        return exc
    pytest.fail(f"{getattr(fn, '__name__', fn)}{args} raised nothing")


def test_every_error_class_has_one_name_a_status_and_survives_the_wire_form():
    import cellhop.kernel.http_control_plane  # noqa: F401 - classes defined beside their use register too
    import cellhop.kernel.image_compat  # noqa: F401
    import cellhop.kernel.provisioner  # noqa: F401

    registered = errors.registered()
    assert {"ContainerNotFound", "QueueTimeout", "VolumeQuotaExceeded", "SecretExists", "ImageNotFound",
            "UnknownImage", "ControlPlaneUnreachable", "ImageMismatch", "RemoteTimeout"} <= set(registered)
    for name, cls in registered.items():
        assert cls.__name__ == name and issubclass(cls, CellhopError)
        assert isinstance(cls.http_status, int) and 400 <= cls.http_status < 600, (name, cls.http_status)
        if cls.__module__ != "cellhop.errors":
            continue  # the server answers only with these (a client must have them without server_ext)
        sent = cls(f"{name}: what was wrong, and what to do")
        back = errors.error_from_answer(cls.http_status, errors.error_body(sent))
        assert type(back) is cls and str(back) == str(sent), name
    # what is not a cellhop error: a bad argument is the user's (400), anything else an internal failure
    assert errors.http_status(ValueError("x")) == 400 and errors.http_status(RuntimeError("x")) == 500
    assert type(errors.error_from_answer(404, {"error": "HTTPError", "message": "no route"})) is CellhopError
    assert type(errors.error_from_answer(404, {"message": "gone"}, not_found=ContainerNotFound)) is ContainerNotFound
    assert type(errors.error_from_answer(502, b"<html>bad gateway</html>")) is CellhopError


def test_two_error_classes_may_not_share_a_name():
    with pytest.raises(TypeError, match="two cellhop error classes are named QueueTimeout"):
        type("QueueTimeout", (CellhopError,), {"__module__": "somewhere.else"})
    assert errors.error_class("QueueTimeout") is QueueTimeout


async def test_the_client_raises_the_class_the_server_raised_for_every_status(client, control_plane):
    storage = client.storage()
    await asyncio.to_thread(storage.volume_create, "data")
    await asyncio.to_thread(storage.volume_put, "data", "a-file.txt", b"hello")
    await asyncio.to_thread(storage.volume_create, "tiny", quota=1024)
    await asyncio.to_thread(storage.secret_create, "token", {"TOKEN": "sk-0123456789"})
    spec = dict(owner="test-error-model")
    cases = [  # (status, class, call): each caused on the server, raised by the client
        (400, GpuRequestError, (client.start, ContainerSpec(gpu="A100-80GB", **spec))),  # a type it lacks
        (400, InvalidContainerSpec, (client.start, ContainerSpec(python="/nonexistent/bin/python3", **spec))),
        (400, UnknownImage, (client.start, ContainerSpec(image="never-built", **spec))),
        (400, VolumePathError, (storage.volume_ls, "data", "../outside")),
        (400, SecretError, (storage.secret_create, "token", {"PATH": "/bin"})),  # a reserved key
        (404, ContainerNotFound, (client.logs, "c0ffee0000ff")),
        (404, VolumeNotFound, (storage.volume_info, "missing")),
        (404, VolumeFileNotFound, (storage.volume_ls, "data", "no/such/folder")),
        (404, SecretNotFound, (storage.secret_delete, "missing")),
        (404, ImageNotFound, (client.image_log, "never-built")),
        (409, SecretExists, (storage.secret_create, "token", {"TOKEN": "another"})),
        (409, VolumeConflict, (storage.volume_mkdir, "data", "a-file.txt")),
        (413, VolumeQuotaExceeded, (storage.volume_put, "tiny", "big.bin", b"x" * 4096)),
        (422, ContainerFailedToStart, (client.start, ContainerSpec(python="/bin/false", **spec))),  # dies starting
    ]
    for status, cls, (fn, *args) in cases:
        exc = await _raised(fn, *args)
        assert type(exc) is cls, (cls.__name__, type(exc).__name__, str(exc))
        assert cls.http_status == status
    # 503: the only H100 is held (a real lease of the server's scheduler), so a short queue times out
    scheduler = control_plane.manager.scheduler
    held = await asyncio.to_thread(scheduler.acquire, GpuRequest.parse("H100"), {"owner": "test-error-model"})
    try:
        exc = await _raised(client.start, ContainerSpec(gpu="H100", queue_timeout=0.5, **spec))
        assert type(exc) is QueueTimeout and QueueTimeout.http_status == 503, exc
    finally:
        scheduler.release(held)
    assert [c for c in control_plane.manager.list() if c.phase.value != "exited"] == []
