"""Kernels started by a cellhop-enabled jupyter_server: %%remote with no setup cell, through
the server's control plane; two kernels contending for one GPU; a dead kernel's containers stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def jp_server_config(runtime_root):
    return {
        "ServerApp": {"jpserver_extensions": {"cellhop": True}},
        "Cellhop": {"simulated_gpus": "H100:1", "runtime_root": str(runtime_root), "idle_timeout": 0},
    }


@pytest.fixture
def control_plane(jp_serverapp):
    return jp_serverapp.web_app.settings["cellhop_control_plane"]


@pytest.fixture
def start_kernel(jp_serverapp, jp_asyncio_loop, http_server_client):  # the client fixture starts serving HTTP
    km = jp_serverapp.kernel_manager
    clients = []

    async def start():
        kid = await km.start_kernel(kernel_name="python3", path="")
        kc = km.get_kernel(kid).client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)
        clients.append((kid, kc))
        return kid, kc

    yield start

    async def shutdown():
        for kid, kc in clients:
            kc.stop_channels()
            if kid in km:
                await km.shutdown_kernel(kid, now=True)

    jp_asyncio_loop.run_until_complete(shutdown())


async def run(kc, code: str, timeout: float = 90):
    """(reply content, stdout text, every iopub message of the cell).

    Awaits the kernel's messages without blocking the event loop, which also serves the
    server: the kernel calls back into it (execute_interactive would block the loop).
    """
    msg_id = kc.execute(code)
    deadline = time.monotonic() + timeout
    msgs = []
    while True:
        msg = await kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
        msgs.append(msg)
    while True:
        reply = await kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    stdout = "".join(m["content"]["text"] for m in msgs if m["msg_type"] == "stream"
                     and m["content"]["name"] == "stdout")
    return reply["content"], stdout, msgs


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


async def test_when_a_kernel_dies_its_containers_stop_and_free_the_gpu(start_kernel, control_plane, jp_serverapp):
    kid, kc = await start_kernel()
    content, _, _ = await run(kc, "%%remote --gpu H100\ny = 1")
    assert content["status"] == "ok", content
    [container] = control_plane.manager.list()
    os.kill(container.spec.owner_pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and container.phase.value != "exited":
        await asyncio.sleep(0.1)
    assert container.phase.value == "exited"
    assert "notebook kernel" in container.exit_status.describe()
    assert control_plane.manager.scheduler.holders() == {"GPU-simulated-h100-0": None}
