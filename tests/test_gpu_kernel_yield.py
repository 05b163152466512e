"""A notebook switched to a GPU kernel does not wait behind its own idle containers (issue 19, item 2).

JupyterLab changes a notebook's kernel by starting the new one before shutting the old one down; the old
kernel's idle %%remote container held the host's only H100, so the new "Python 3 · H100" kernel queued
until its launch timed out. A real jupyter_server with cellhop, real sessions, real containers.
"""

from __future__ import annotations

import json

import pytest
from test_provisioner_server import client_of, control_plane, jp_server_config, notebook_dir, run  # noqa: F401

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def server_extra():
    return {"CellhopProvisioner": {"launch_timeout": 20}}  # a wait behind itself fails in 20 s, not 60


async def _notebook_holding_h100(jp_fetch, jp_serverapp, control_plane, name: str, cell: str):
    """A notebook session on a plain kernel whose `cell` put a container on the H100: (session, container)."""
    r = await jp_fetch("api", "sessions", method="POST", body=json.dumps(
        {"path": f"work/nb/{name}", "name": name, "type": "notebook", "kernel": {"name": "python3"}}))
    session = json.loads(r.body)
    kc = await client_of(jp_serverapp, session["kernel"]["id"])
    try:
        content, _ = await run(kc, "%load_ext cellhop")
        assert content["status"] == "ok", content
        content, out = await run(kc, cell, timeout=90)
        assert content["status"] == "ok", (content, out)
    finally:
        kc.stop_channels()
    [held] = [c for c in control_plane.manager.list() if c.phase.value == "ready"]
    return session, held


async def test_a_notebook_switched_to_a_gpu_kernel_takes_the_gpu_its_old_kernel_idles_on(
        jp_fetch, jp_serverapp, control_plane, notebook_dir, http_server_client):  # noqa: F811
    session, held = await _notebook_holding_h100(jp_fetch, jp_serverapp, control_plane, "switch.ipynb",
                                                 "%%remote --gpu H100\nheld = 1")
    old_kernel = session["kernel"]["id"]
    assert held.spec.owner == f"kernel {old_kernel[:8]}" and [g.type for g in held.gpus] == ["H100"]

    # the notebook changes its kernel to the GPU kernel, as JupyterLab's kernel picker does
    r = await jp_fetch("api", "sessions", session["id"], method="PATCH", raise_error=False, request_timeout=120,
                       body=json.dumps({"kernel": {"name": "cellhop-h100"}}))
    body = json.loads(r.body)
    try:
        assert r.code == 200, body
        assert body["kernel"]["id"] != old_kernel
        assert held.phase.value == "exited" and "new GPU kernel" in held.exit_status.reason, held.to_dict()
        [gpu_kernel] = [c for c in control_plane.manager.list() if c.phase.value == "ready"]
        assert gpu_kernel.spec.label.startswith("kernel ") and [g.type for g in gpu_kernel.gpus] == ["H100"]
    finally:
        await jp_fetch("api", "sessions", session["id"], method="DELETE", raise_error=False)


async def test_a_container_at_work_when_the_notebook_switches_yields_once_its_work_is_done(
        jp_fetch, jp_serverapp, control_plane, notebook_dir, http_server_client):  # noqa: F811
    session, held = await _notebook_holding_h100(jp_fetch, jp_serverapp, control_plane, "busy.ipynb",
                                                 "%%remote --gpu H100 --async\nimport time\ntime.sleep(4)")
    r = await jp_fetch("api", "sessions", session["id"], method="PATCH", raise_error=False, request_timeout=120,
                       body=json.dumps({"kernel": {"name": "cellhop-h100"}}))
    body = json.loads(r.body)
    try:
        assert r.code == 200, body  # it waited for the work, then the idle container yielded (not 20 s later)
        assert held.phase.value == "exited" and "new GPU kernel" in held.exit_status.reason, held.to_dict()
        ready = [t for p, t in held.phases if p == "ready"][0]
        assert held.phases[-1][1] - ready >= 3.5, held.phases  # never stopped at work
    finally:
        await jp_fetch("api", "sessions", session["id"], method="DELETE", raise_error=False)
