"""Idle timeouts count idleness, not silence: with c.Cellhop.idle_timeout = 4, a %%remote cell that runs
6 s keeps its container (the kernel says it is busy; nobody has to report activity), and once the cell
is done the idle container is stopped, as idle, about 4 s later. A kernel of a real cellhop server."""

from __future__ import annotations

import asyncio
import time

import pytest
from server_kernel_client import run

pytestmark = pytest.mark.timeout(180)

IDLE_TIMEOUT = 4


@pytest.fixture
def jp_server_config(runtime_root, cellhop_gpus):
    return {
        "ServerApp": {"jpserver_extensions": {"cellhop": True}},
        "Cellhop": {"simulated_gpus": cellhop_gpus, "runtime_root": str(runtime_root),
                    "idle_timeout": IDLE_TIMEOUT},
    }


async def test_a_cell_longer_than_the_idle_timeout_survives_and_the_idle_container_stops_after(
        start_kernel, control_plane):
    _, kc = await start_kernel()
    content, out, _ = await run(kc, "%%remote\nimport os, time\ntime.sleep(6)\n"
                                    "print('survived in', os.environ['CELLHOP_CONTAINER_ID'])")
    assert content["status"] == "ok", content  # not "container ... died: idle for 4 s"
    [container] = control_plane.manager.list()
    assert out.split() == ["survived", "in", container.id]
    assert container.phase.value == "ready"

    done = time.monotonic()
    while container.phase.value != "exited" and time.monotonic() - done < 30:
        await asyncio.sleep(0.1)
    assert container.phase.value == "exited"
    assert f"idle for {IDLE_TIMEOUT} s" in container.exit_status.describe()
    assert time.monotonic() - done >= IDLE_TIMEOUT - 0.5  # idle counted from the end of the cell

    content, out, _ = await run(kc, "%%remote\nprint('next')")  # a fresh container, no fuss
    assert content["status"] == "ok" and out == "next\n", content
