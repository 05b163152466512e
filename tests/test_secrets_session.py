"""Session-only secrets (cellhop.Secret.from_dict) belong to the notebook kernel that made them: only its
containers can use them, and they go when that kernel exits, even SIGKILLed (no atexit runs)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
from server_kernel_client import run

from cellhop.container import ContainerSpec
from cellhop.errors import SecretError, SecretNotFound, SecretOfAnotherOwner
from cellhop.server_ext.kernel_tokens import USER, Caller
from cellhop.server_ext.secrets import SecretStore

VALUE = "sk-session-4e5f6a7b8c9d"

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cellhop_gpus():
    return "H100:1"


def test_a_session_secret_is_its_owners_alone_and_goes_with_it(runtime_root, python_child):
    store = SecretStore(runtime_root / "secrets")
    owner = python_child("import sys\nprint('up', flush=True)\nsys.stdin.readline()")
    owner.expect("up")
    me = {"pid": owner.pid, "host": os.uname().nodename, "label": "kernel 1a2b3c4d"}
    kernel, other = Caller("kernel", "1a2b3c4d-0000"), Caller("kernel", "5e6f7a8b-0000")
    view = store.create("mine", {"API_KEY": VALUE}, session=True, owner=me, caller=kernel)
    assert view["owner"] == "kernel 1a2b3c4d" and VALUE not in json.dumps(view)
    assert store.environment(["mine"], kernel) == {"API_KEY": VALUE}
    for someone_else in (other, USER, None):  # the pid a caller names decides nothing
        with pytest.raises(SecretOfAnotherOwner, match=r"secret 'mine' is a session-only secret of another "
                                                       r"notebook \(kernel 1a2b3c4d\)"):
            store.environment(["mine"], someone_else)
    with pytest.raises(SecretOfAnotherOwner, match="only that notebook can replace it"):
        store.create("mine", {"API_KEY": "other"}, session=True, replace=True, owner=me, caller=other)
    with pytest.raises(SecretOfAnotherOwner, match="only that notebook can delete it"):
        store.delete("mine", other)
    with pytest.raises(SecretError, match="only a session secret has an owner"):
        store.create("stored", {"K": "v"}, owner=me)

    owner.kill(signal.SIGKILL)  # reaped by the fixture: no atexit, no delete call
    assert store.list() == []
    with pytest.raises(SecretNotFound):
        store.environment(["mine"], kernel)
    store.create("mine", {"API_KEY": "mine now"}, session=True)  # the name is free again


async def test_another_kernel_cannot_use_it_and_a_killed_kernel_leaves_nothing(start_kernel, control_plane):
    _, first = await start_kernel()
    _, second = await start_kernel()
    content, _, _ = await run(first, f"import cellhop\ns = cellhop.Secret.from_dict({{'API_KEY': {VALUE!r}}}, "
                                     "name='only-mine')\nprint(s)")
    assert content["status"] == "ok", content
    [listed] = control_plane.secrets.list()
    assert listed["name"] == "only-mine" and listed["session"] and listed["owner"].startswith("kernel ")

    content, out, _ = await run(first, "%%remote --gpu none --secret only-mine\nimport os, hashlib\n"
                                       "print(hashlib.sha256(os.environ['API_KEY'].encode()).hexdigest())")
    assert content["status"] == "ok", content
    import hashlib

    assert hashlib.sha256(VALUE.encode()).hexdigest() in out  # the owner's containers get it

    content, _, msgs = await run(second, "%%remote --gpu none --secret only-mine\nx = 1")
    assert content["status"] == "error"
    said = json.dumps([content, [m["content"] for m in msgs]])
    assert "'only-mine' is a session-only secret of another notebook" in said, said
    assert listed["owner"] in said and VALUE not in said

    _, out, _ = await run(first, "import os\nprint(os.getpid())")
    os.kill(int(out), signal.SIGKILL)  # no atexit: the server notices the kernel is gone
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and control_plane.secrets.list():
        await asyncio.sleep(0.2)
    assert control_plane.secrets.list() == []
    content, _, msgs = await run(second, "%%remote --gpu none --secret only-mine\nx = 1")
    assert content["status"] == "error" and "no secret 'only-mine'" in json.dumps([content, [m["content"]
                                                                                   for m in msgs]])
