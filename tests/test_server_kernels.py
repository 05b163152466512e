"""Kernels started by a cellhop-enabled jupyter_server: %%remote with no setup cell, through
the server's control plane; two kernels contending for one GPU. (A SIGKILLed kernel's containers:
tests/test_faults.py.)"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from server_kernel_client import run

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cellhop_gpus():
    return "H100:1"



async def test_a_kernel_of_the_server_runs_remote_cells_with_no_setup(start_kernel, control_plane):
    _, kc = await start_kernel()
    content, out, _ = await run(kc, "%gpu H100")
    assert content["status"] == "ok", content
    assert "via the cellhop server" in out and "simulated" in out
    content, out, _ = await run(kc, "%%remote\nimport os\nx = 6 * 7\nprint('in', os.environ['CELLHOP_GPU_TYPE'])")
    assert content["status"] == "ok", content
    assert "in H100" in out
    content, out, _ = await run(kc, "print(x)")
    assert out.strip() == "42"
    # the server's control plane ran it: one container, owned by this kernel's process
    [container] = control_plane.manager.list()
    assert container.phase.value == "ready" and container.spec.owner_pid is not None
    content, out, _ = await run(kc, "import os; print('CELLHOP_CONTROL_TOKEN' in os.environ, "
                                    "os.environ['CELLHOP_CONTROL_URL'].startswith('http'))")
    assert out.split() == ["True", "True"]
    content, out, _ = await run(kc, "%%remote\nimport os\nprint('CELLHOP_CONTROL_TOKEN' in os.environ)")
    assert out.strip() == "False"  # the token never reaches a container


async def test_two_kernels_contend_for_one_gpu_and_the_second_waits_its_turn(start_kernel, control_plane,
                                                                             jp_fetch):
    _, first = await start_kernel()
    _, second = await start_kernel()
    content, _, _ = await run(first, "%%remote --gpu H100\nheld = True")
    assert content["status"] == "ok", content
    [holder] = control_plane.manager.list()

    waiting = asyncio.ensure_future(run(second, "%%remote --gpu H100\nimport os\nprint('got', os.environ['CELLHOP_GPU_TYPE'])"))
    deadline = time.monotonic() + 30
    queued = []
    while time.monotonic() < deadline and not queued:
        await asyncio.sleep(0.1)
        queued = [c for c in control_plane.manager.list() if c.phase.value == "queued"]
    assert queued and queued[0].queue_position == 0, [c.to_dict() for c in control_plane.manager.list()]
    assert not waiting.done()
    r = await jp_fetch("cellhop", "api", "containers", holder.id, "stop", method="POST",
                       body=json.dumps({"reason": "make room"}))
    assert json.loads(r.body)["phase"] == "exited"
    content, out, msgs = await asyncio.wait_for(waiting, 60)
    assert content["status"] == "ok", content
    assert "got H100" in out
    statuses = " ".join(json.dumps(m["content"]) for m in msgs if m["msg_type"] in ("display_data", "update_display_data"))
    assert "queue" in statuses.lower()  # the cell said it was waiting for the GPU
