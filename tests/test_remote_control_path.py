"""The control plane is off the data path: kernels of a real cellhop server (in this process) run warm
%%remote cells and cellhop.remote calls without one request to the control plane, a silent cell does
not poll it, and a container killed during a silent cell is noticed from the wire at once.

Requests are counted where the server answers them (its request log function, wrapped here), so every
request of the kernel's HTTP client counts, whichever code path made it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from processes import container_kernel_pids
from server_kernel_client import run

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def api_requests(jp_serverapp):
    """[(method, path)] of every cellhop API request the test server answered from now on."""
    settings = jp_serverapp.web_app.settings
    original = settings["log_function"]
    seen: list[tuple[str, str]] = []

    def counting(handler):
        if "/cellhop/api/" in handler.request.path:
            seen.append((handler.request.method, handler.request.path))
        original(handler)

    settings["log_function"] = counting
    yield seen
    settings["log_function"] = original


async def ok(kc, code: str, timeout: float = 90) -> str:
    content, out, _ = await run(kc, code, timeout=timeout)
    assert content["status"] == "ok", (code, content)
    return out


async def test_warm_cells_and_calls_make_no_request_to_the_control_plane(start_kernel, control_plane,
                                                                         api_requests):
    _, kc = await start_kernel()
    await ok(kc, "%gpu H100")
    await ok(kc, "%%remote\nimport os\nstarted = 1")  # starts the container: the control plane is asked
    await ok(kc, "import cellhop\n"
                 "@cellhop.remote(gpu='A10G')\n"
                 "def where(x):\n"
                 "    import os\n"
                 "    return x, os.environ['CELLHOP_CONTAINER_ID']\n"
                 "where.remote(0)")  # its own container
    assert api_requests, "the first cell should have started its container through the server"
    before = len(api_requests)

    for i in range(5):
        await ok(kc, f"%%remote\nx = {i}")
    out = await ok(kc, "print(sum(where.remote(i)[0] for i in range(5)), x, where.remote(0)[1])")
    total, x, ran_in = out.split()
    assert (total, x) == ("10", "4")
    await ok(kc, "%%remote\nimport time\ntime.sleep(2.5)\nslept = True")  # silent for 2.5 s
    await ok(kc, "where.remote(0)")
    assert api_requests[before:] == []

    held = {c.id: [g.type for g in c.gpus] for c in control_plane.manager.list() if c.phase.value == "ready"}
    assert sorted(held.values()) == [["A10G"], ["H100"]] and held[ran_in] == ["A10G"]


async def test_a_container_killed_during_a_silent_cell_is_noticed_without_polling(start_kernel, control_plane,
                                                                                  api_requests):
    _, kc = await start_kernel()
    await ok(kc, "%%remote --gpu A10G\nready = 1")
    [container] = [c for c in control_plane.manager.list() if c.phase.value == "ready"]

    msg_id = kc.execute("%%remote --gpu A10G\nimport time\nprint('sleeping', flush=True)\ntime.sleep(120)")
    deadline = time.monotonic() + 60
    while True:  # the cell runs, silent from here on
        msg = await kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream"
                and "sleeping" in msg["content"]["text"]):
            break
    before = len(api_requests)
    await asyncio.sleep(2.0)
    assert api_requests[before:] == []  # a live container is not asked about

    pids = container_kernel_pids(container.directory)
    assert pids
    killed_at = time.monotonic()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    while True:
        reply = await kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    noticed = time.monotonic() - killed_at
    content = reply["content"]
    assert content["status"] == "error" and content["ename"] == "ContainerDied", content
    assert "SIGKILL" in content["evalue"] and container.id in content["evalue"], content
    assert noticed < 10, noticed
    # only after the wire said so, about this container alone: its end confirmed, its log's last lines
    asked = api_requests[before:]
    assert asked and all(container.id in path for _, path in asked), asked
    assert len(asked) <= 10, asked

    # the notebook goes on: the next cell gets a fresh container
    out = await ok(kc, "%%remote --gpu A10G\nprint('ready' in dir())")
    assert out.strip() == "False"
