"""Standby containers behind a jupyter_server (issue 14): its kernels' first %%remote claims one, GET gpus
and %gpu show the pool, and a kernel's token can neither act on a standby nor make it import what it chose."""

from __future__ import annotations

import json
import time

import pytest
from server_kernel_client import KERNEL_REST_CALL as _CALL
from server_kernel_client import run

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def cellhop_gpus():
    return "H100:1"


@pytest.fixture
def cellhop_settings():
    return {"standby": 1}


async def ready_standby(control_plane):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        view = control_plane.manager.standby.view()
        if view and view[0]["ready"]:
            return next(c for c in control_plane.manager.list() if c.standby and c.phase.value == "ready")
        await __import__("asyncio").sleep(0.1)
    raise AssertionError("no standby became ready")


def _status(out: str) -> tuple[int, str]:
    code, _, rest = out.strip().splitlines()[-1].partition(" ")
    return int(code), rest


async def test_a_server_kernels_first_cell_claims_the_servers_standby(start_kernel, control_plane, jp_fetch):
    standby = await ready_standby(control_plane)
    r = await jp_fetch("cellhop", "api", "gpus")
    shown = json.loads(r.body)["standby"]
    assert shown and shown[0]["image"] is None and shown[0]["wanted"] == 1
    r = await jp_fetch("cellhop", "api", "containers")
    listed = {c["id"]: c for c in json.loads(r.body)["containers"]}
    assert listed[standby.id]["standby"] is True and "connection_info" not in listed[standby.id]

    _, kc = await start_kernel()
    content, out, _ = await run(kc, "%gpu H100")
    assert "Standby containers" in out, out
    # a kernel's token may not act on the standby (nobody's container) nor read its log
    content, out, _ = await run(kc, _CALL + f"call('POST', 'containers/{standby.id}/stop', {{}})\n"
                                          f"call('GET', 'containers/{standby.id}/logs')")
    assert [int(line.split()[0]) for line in out.strip().splitlines()] == [403, 403], out
    # its imports hint only well-known libraries to the standbys (nothing a notebook chose)
    content, out, _ = await run(kc, _CALL + "call('POST', 'standby/preload', "
                                            "{'modules': ['numpy', 'antigravity', 'os; import x', 'this']})")
    code, answer = _status(out)
    assert code == 200 and json.loads(answer)["preload"] == ["numpy"], out
    content, out, _ = await run(kc, _CALL + "call('POST', 'standby/preload', {'modules': 'numpy'})")
    assert _status(out)[0] == 400

    content, out, _ = await run(kc, "%%remote\nimport os\nprint(os.environ['CUDA_VISIBLE_DEVICES'])")
    assert content["status"] == "ok", content
    assert out.strip().startswith("GPU-simulated-h100")
    claimed = next(c for c in control_plane.manager.list() if not c.standby and c.phase.value == "ready")
    assert claimed.claimed_from == standby.id and claimed.spec.caller is not None
    assert standby.id not in {c.id for c in control_plane.manager.list()}


async def test_touch_changes_the_idle_timeout_only_with_a_valid_value(start_kernel, control_plane, jp_fetch):
    await ready_standby(control_plane)
    _, kc = await start_kernel()
    content, _, _ = await run(kc, "%%remote\nx = 1")
    container = next(c for c in control_plane.manager.list() if not c.standby and c.phase.value == "ready")
    for bad in ({"idle_timeout": -1}, {"idle_timeout": "never"}, {"idle_timeout": 1e12}, {"other": 1}):
        r = await jp_fetch("cellhop", "api", "containers", container.id, "touch", method="POST",
                           body=json.dumps(bad), raise_error=False)
        assert r.code == 400, (bad, r.code)
    assert container.spec.idle_timeout is None
    r = await jp_fetch("cellhop", "api", "containers", container.id, "touch", method="POST",
                       body=json.dumps({"idle_timeout": 0}))
    assert r.code == 200 and container.spec.idle_timeout == 0
