"""An idle GPU holder is flagged (issue 20): a container that held its GPU for c.Cellhop.idle_holder_after
seconds at under c.Cellhop.idle_holder_busy use gets `idle_holder` in its view and an event (the panel,
`%gpu`), its lease files say so (for the admin's `cellhop usage --all`), and the busy fraction measured
while it was held goes in the usage log when it ends. A real cellhop server; the simulated GPU's use is
its container's CPU use, so an untouched container is idle."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from cellhop.server_ext.cli_usage import idle_leases
from cellhop.server_ext.host_files import listing, read_live
from cellhop.server_ext.usage_log import UsageLog

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cellhop_settings():
    return {"idle_holder_after": 1.5, "usage_sample_interval": 0.2}


async def test_a_container_holding_its_gpu_unused_is_flagged_where_everyone_who_should_can_see(
        jp_fetch, control_plane, runtime_root):
    events = []
    unsubscribe = control_plane.manager.subscribe(events.append)
    try:
        r = await jp_fetch("cellhop", "api", "containers", method="POST",
                           body=json.dumps({"spec": {"gpu": "H100", "owner": "idle test"}}), request_timeout=120)
        container = json.loads(r.body)
        deadline = time.monotonic() + 30
        view = container
        while not view.get("idle_holder") and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            view = json.loads((await jp_fetch("cellhop", "api", "containers", container["id"])).body)
        assert view["idle_holder"] and "H100" in view["idle_holder"] and "% busy" in view["idle_holder"], view
        assert 0 <= view["gpu_busy"] < 0.05, view
        assert any(e.get("idle_holder") and e["id"] == container["id"] for e in events)

        leases = runtime_root / "leases"  # no host folder here: this user's own
        [public] = [read_live(leases / name)[1] for name in listing(leases, "lock")]
        assert public["idle_holder"] is True and set(public) == {"user", "since", "idle_since", "idle_holder"}
        [found] = idle_leases(leases, {}, idle_after=3600, now=time.time())
        assert found["low_gpu_use"] and found["gpu"] == container["gpus"][0]["uuid"]

        await jp_fetch("cellhop", "api", "containers", container["id"], method="DELETE")
    finally:
        unsubscribe()
    [use] = UsageLog(runtime_root / "usage").leases()
    assert use.end is not None and use.busy is not None and use.busy < 0.05
