"""The event stream (WebSocket cellhop/api/events) of a real jupyter_server: lifecycle events,
metric samples at the interval the client sets, pause and resume, sampling only while listened to."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from tornado.httpclient import HTTPClientError

pytestmark = pytest.mark.timeout(120)





async def read(ws, timeout=5.0):
    text = await asyncio.wait_for(ws.read_message(), timeout)
    assert text is not None, "the event stream closed"
    return json.loads(text)


async def collect(ws, seconds: float) -> list[dict]:
    events, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            events.append(await read(ws, left))
        except asyncio.TimeoutError:
            break
    return events


def metrics(events):
    return [e for e in events if e["type"] == "metrics"]


def metrics_wanted(control_plane) -> bool:
    """Whether a subscription of the server's event bus still asks for samples."""
    return any(s.wants_metrics for s in control_plane.bus._subs)


async def until(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        await asyncio.sleep(0.02)


async def test_the_stream_says_hello_then_samples_at_the_interval_the_client_sets(jp_ws_fetch):
    ws = await jp_ws_fetch("cellhop", "api", "events", params={"interval": "0.2"})
    hello = await read(ws)
    assert hello["type"] == "hello" and hello["interval"] == 0.2
    assert [g["type"] for g in hello["gpus"]["gpus"]] == ["H100", "A10G"] and hello["containers"] == []
    samples = metrics(await collect(ws, 2.0))
    # 10 expected at 0.2 s; a loaded runner samples late, never early (bounds loose on that side)
    assert 4 <= len(samples) <= 12, len(samples)
    gaps = [b["time"] - a["time"] for a, b in zip(samples, samples[1:])]
    assert 0.15 < sorted(gaps)[len(gaps) // 2] < 0.45, gaps
    sample = samples[-1]["gpus"][0]
    assert sample["simulated"] is True and sample["uuid"].startswith("GPU-simulated")
    assert {"utilization", "memory_used", "memory_total"} <= set(sample)
    assert "power_w" not in sample and "temperature_c" not in sample  # a simulated card has none: left out

    ws.write_message(json.dumps({"type": "configure", "interval": 0.5}))
    await collect(ws, 0.6)  # let the change take
    samples = metrics(await collect(ws, 2.1))
    assert 2 <= len(samples) <= 6, len(samples)
    gaps = [b["time"] - a["time"] for a, b in zip(samples, samples[1:])]
    assert sorted(gaps)[len(gaps) // 2] > 0.45, gaps  # the new interval, not the old one
    ws.close()


async def test_pause_stops_samples_and_resume_brings_them_back(jp_ws_fetch, control_plane):
    ws = await jp_ws_fetch("cellhop", "api", "events", params={"interval": "0.2"})
    await read(ws)
    assert metrics(await collect(ws, 2.0))
    ws.write_message(json.dumps({"type": "pause"}))
    await until(lambda: not metrics_wanted(control_plane), "the pause to take")
    await collect(ws, 0.3)  # samples sent before it
    taken = control_plane.bus.samples_taken
    assert metrics(await collect(ws, 1.0)) == []
    assert control_plane.bus.samples_taken == taken  # nobody listens unpaused: nothing is sampled
    ws.write_message(json.dumps({"type": "resume"}))
    assert metrics(await collect(ws, 2.0))
    ws.close()
    await until(lambda: not metrics_wanted(control_plane), "the server to see the last client go")
    taken = control_plane.bus.samples_taken
    await asyncio.sleep(1.0)
    assert control_plane.bus.samples_taken == taken  # the last client left: sampling stopped


async def test_lifecycle_events_reach_every_client_and_metrics_follow_the_holder(jp_ws_fetch, jp_fetch):
    first = await jp_ws_fetch("cellhop", "api", "events", params={"interval": "0.3"})
    second = await jp_ws_fetch("cellhop", "api", "events", params={"paused": "1"})
    await read(first), await read(second)
    r = await jp_fetch("cellhop", "api", "containers", method="POST",
                       body=json.dumps({"spec": {"gpu": "H100", "owner": "events test"}}))
    cid = json.loads(r.body)["id"]
    for ws in (first, second):
        phases = [e["phase"] for e in await collect(ws, 1.0) if e["type"] == "container" and e["id"] == cid]
        assert phases == ["queued", "starting", "ready"], phases
    held = [s for e in metrics(await collect(first, 1.0)) for s in e["gpus"] if s["uuid"].endswith("h100-0")]
    assert held and held[-1]["memory_used"] > 10 * 2**20  # the container kernel's resident memory
    assert held[-1]["processes"] and held[-1]["processes"][0]["used_memory"] > 0
    await jp_fetch("cellhop", "api", "containers", cid, "stop", method="POST", body="{}")
    stopped = [e for e in await collect(second, 1.0) if e["type"] == "container"]
    assert [e["phase"] for e in stopped] == ["stopping", "exited"]
    assert stopped[-1]["exit"]["stopped"] is True
    first.close(), second.close()


async def test_the_stream_refuses_strangers_and_bad_messages(jp_ws_fetch):
    with pytest.raises(HTTPClientError) as refused:
        await jp_ws_fetch("cellhop", "api", "events", headers={"Authorization": ""})
    assert refused.value.code == 403
    ws = await jp_ws_fetch("cellhop", "api", "events", params={"interval": "0.001"})
    assert await ws.read_message() is None
    assert "out of range" in ws.close_reason
    ws = await jp_ws_fetch("cellhop", "api", "events")
    await read(ws)
    for bad in ("not json", json.dumps({"type": "explode"}), json.dumps({"type": "configure", "interval": "x"})):
        ws.write_message(bad)
        reply = next(e for e in await collect(ws, 1.5) if e["type"] == "error")
        assert reply["message"]
    ws.close()
