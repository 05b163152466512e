"""A session secret belongs to the caller the server authenticated, not to the pid a request names.

Each kernel a cellhop server starts has a token of its own (kernel_tokens); a
kernel that claims another notebook's pid in its container spec, or sends
another's owner, still is itself: it gets a 403 naming the secret, and the
owner keeps using it. A browser user (jupyter_server's own token) sees names
and keys, never values, and cannot use a kernel's session secret either.
"""

from __future__ import annotations

import hashlib
import json
import socket

import pytest
from server_kernel_client import KERNEL_REST_CALL as _CALL
from server_kernel_client import run

from cellhop.server_ext.api.base import KERNEL_TOKEN_SETTING
from cellhop.server_ext.kernel_tokens import kernel_of, token_for

VALUE = "sk-owner-7f3e2d1c0b9a"

pytestmark = pytest.mark.timeout(240)



def _status(out: str) -> tuple[int, str]:
    code, _, rest = out.strip().splitlines()[-1].partition(" ")
    return int(code), rest


async def test_a_kernel_claiming_anothers_pid_is_refused_its_session_secret(start_kernel, control_plane,
                                                                           jp_fetch):
    a_id, a = await start_kernel()
    b_id, b = await start_kernel()
    content, out, _ = await run(a, f"import os, cellhop\ns = cellhop.Secret.from_dict({{'API_KEY': {VALUE!r}}}, "
                                   "name='only-a')\nprint(os.getpid())")
    assert content["status"] == "ok", content
    a_pid, host = int(out.strip()), socket.gethostname()
    [listed] = control_plane.secrets.list()
    assert listed["owner"] == f"kernel {a_id[:8]}"  # the server's name for A, whatever A said

    # B names A's pid and host in its spec, through the client and straight over REST: refused
    content, out, _ = await run(b, "from cellhop.kernel.control_client import get_control_plane\n"
                                   "from cellhop.container import ContainerSpec\n"
                                   f"spec = ContainerSpec(gpu='none', owner_pid={a_pid}, owner_host={host!r}, "
                                   "secrets=['only-a'])\n"
                                   "try:\n    get_control_plane().start(spec)\n    print('STARTED')\n"
                                   "except Exception as e:\n    print(type(e).__name__, e)")
    assert content["status"] == "ok", content
    assert out.startswith("SecretOfAnotherOwner secret 'only-a' is a session-only secret of another notebook "
                          f"(kernel {a_id[:8]})"), out
    spec = {"gpu": "none", "owner_pid": a_pid, "owner_host": host, "secrets": ["only-a"]}
    content, out, _ = await run(b, _CALL + f"call('POST', 'containers', {{'spec': {spec!r}}})")
    assert _status(out)[0] in (400, 403) and "session-only secret of another notebook" in out, out
    # ... nor may B replace or delete it, sending A's owner along
    owner = {"pid": a_pid, "host": host, "label": f"kernel {a_id[:8]}"}
    body = {"name": "only-a", "values": {"API_KEY": "b's own"}, "replace": True, "session": True, "owner": owner}
    content, out, _ = await run(b, _CALL + f"call('POST', 'secrets', {body!r})")
    assert _status(out)[0] == 403 and "only that notebook can replace it" in out, out
    content, out, _ = await run(b, _CALL + "call('DELETE', 'secrets/only-a')")
    assert _status(out)[0] == 403 and "only that notebook can delete it" in out, out
    assert VALUE not in out and not [c for c in control_plane.manager.list() if c.spec.secrets]

    # A still gets it, in its own container; B may not restart that container or read its log
    content, out, _ = await run(a, "%%remote --gpu none --secret only-a\nimport os, hashlib\n"
                                   "print(hashlib.sha256(os.environ['API_KEY'].encode()).hexdigest())")
    assert content["status"] == "ok", content
    assert hashlib.sha256(VALUE.encode()).hexdigest() in out
    [mine] = [c for c in control_plane.manager.list() if c.spec.secrets == ["only-a"]]
    assert mine.spec.caller.name == a_id and mine.spec.owner_pid == a_pid
    for method, path in (("POST", f"containers/{mine.id}/restart"), ("GET", f"containers/{mine.id}/logs")):
        content, out, _ = await run(b, _CALL + f"call({method!r}, {path!r})")
        assert _status(out) == (403, f"container {mine.id} was started by kernel {a_id[:8]}; a kernel's token "
                                     "acts only on the containers that kernel started"), out

    # the browser's user: names and keys only, and no container of its own with A's secret
    r = await jp_fetch("cellhop", "api", "secrets")
    assert VALUE not in r.body.decode()
    assert [(s["name"], s["keys"]) for s in json.loads(r.body)["secrets"]] == [("only-a", ["API_KEY"])]
    r = await jp_fetch("cellhop", "api", "containers", method="POST", raise_error=False,
                       body=json.dumps({"spec": {"gpu": "none", "owner_pid": a_pid, "secrets": ["only-a"]}}))
    assert r.code in (400, 403) and "session-only secret of another notebook" in json.loads(r.body)["message"]


async def test_each_kernel_has_its_own_token_and_the_key_is_none(start_kernel, jp_serverapp, jp_fetch):
    key = jp_serverapp.web_app.settings[KERNEL_TOKEN_SETTING]
    kid, kc = await start_kernel()
    content, out, _ = await run(kc, "import os\nprint(os.environ['CELLHOP_CONTROL_TOKEN'])")
    token = out.strip()
    assert token == token_for(key, kid) and kernel_of(key, token) == kid and key not in token
    assert kernel_of(key, token_for("another key", kid)) is None
    for presented in (key, token_for("another key", kid), token.replace(kid, kid[::-1])):
        r = await jp_fetch("cellhop", "api", "gpus", headers={"Authorization": f"token {presented}"},
                           raise_error=False)
        assert r.code == 403, presented
    r = await jp_fetch("cellhop", "api", "gpus", headers={"Authorization": f"token {token}"})
    assert r.code == 200
