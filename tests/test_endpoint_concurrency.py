"""Endpoint calls that overlap in one container: a function deployed with concurrency > 1 runs that many at
once, each on a thread of its own (kernel/endpoint_threads.py; before, the container ran them one after
another), and an `async def` function's calls run on the container's event loop (kernel/endpoint_loop.py;
before, an async function answered 500 NotJSON, its coroutine never awaited).

A call past its timeout is stopped (a thread: CallTimedOut, even where the function catches Exception; a
coroutine: cancelled) and the container goes on serving; generators (sync and async) stream; what the
calls print reaches the container's log. A real cellhop server, real kernel, real containers, real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from server_kernel_client import run

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def cellhop_settings(runtime_root):
    return {"state_dir": str(runtime_root / "state")}


DEPLOY = '''
import builtins, os, threading, time, cellhop

@cellhop.endpoint(concurrency=4, max_containers=1, scaledown=60)
def overlap(wait=0):
    start = time.time()
    print(f"call on {threading.current_thread().name}", flush=True)
    time.sleep(float(wait))
    return {"start": start, "end": time.time(), "thread": threading.current_thread().name,
            "container": os.environ["CELLHOP_CONTAINER_ID"]}

@cellhop.endpoint(concurrency=2, max_containers=1, timeout=2, scaledown=60)
def looping(mode="loop"):
    if mode == "stopped":
        return getattr(builtins, "stopped", 0)
    try:
        for _ in range(600):  # a minute of Python lines, unless stopped
            try:
                time.sleep(0.1)
            except Exception:  # a function that swallows errors is still stopped
                pass
        return "never stopped"
    finally:
        builtins.stopped = getattr(builtins, "stopped", 0) + 1

@cellhop.endpoint(concurrency=2, max_containers=1, scaledown=60)
def count():
    for i in range(3):
        yield {"i": i, "thread": threading.current_thread().name}

for f in (overlap, looping, count):
    f.deploy(f.__name__)
print("deployed")
'''


def _call(jp_fetch, name, body, **kwargs):
    return jp_fetch("cellhop", "endpoints", name, "", method="POST", body=json.dumps(body), raise_error=False,
                    request_timeout=120, **kwargs)


async def test_a_function_deployed_with_concurrency_runs_its_calls_at_once_in_one_container(
        start_kernel, control_plane, jp_fetch, http_server_client):
    http_server_client.max_clients = 16
    _, kc = await start_kernel()
    content, out, _ = await run(kc, DEPLOY, timeout=120)
    assert content["status"] == "ok" and out.strip() == "deployed", (content, out)

    answers = await asyncio.gather(*(_call(jp_fetch, "overlap", {"wait": 3}) for _ in range(4)))
    assert [r.code for r in answers] == [200] * 4, [(r.code, r.body) for r in answers]
    calls = [json.loads(r.body) for r in answers]
    assert len({c["container"] for c in calls}) == 1, calls
    assert len({c["thread"] for c in calls}) == 4, calls
    # all four ran at the same moment: the last to start started before the first to end ended
    assert max(c["start"] for c in calls) < min(c["end"] for c in calls), calls

    logs = json.loads((await jp_fetch("cellhop", "api", "endpoints", "overlap", "logs")).body)["logs"]
    text = "\n".join(logs.values())
    assert text.count("call on cellhop-endpoint-call") == 4, text[-2000:]

    # past its timeout: 504, and the call's thread is stopped (its finally ran); the container serves on
    started = time.monotonic()
    r = await _call(jp_fetch, "looping", {"mode": "loop"})
    assert r.code == 504 and json.loads(r.body)["error"] == "EndpointTimeout", r.body
    assert time.monotonic() - started < 30
    deadline = time.monotonic() + 20
    while True:
        r = await _call(jp_fetch, "looping", {"mode": "stopped"})
        assert r.code == 200, r.body
        if json.loads(r.body) == 1:
            break
        assert time.monotonic() < deadline, "the timed-out call's thread was not stopped"
        await asyncio.sleep(0.2)

    # a generator streams its items from its thread
    r = await _call(jp_fetch, "count", {})
    assert r.code == 200, r.body
    items = [json.loads(line) for line in r.body.decode().splitlines()]
    assert [i["i"] for i in items] == [0, 1, 2], items
    assert all(i["thread"].startswith("cellhop-endpoint-call") for i in items), items


def test_cancel_stops_only_the_call_it_names_and_nothing_once_it_ended():
    """In-process: the container's side of a thread call, without a container."""
    import threading

    from cellhop.kernel.endpoint_threads import cancel, run_on_thread

    stop_looping = threading.Event()

    def loop():
        try:
            while not stop_looping.is_set():
                try:
                    time.sleep(0.01)
                except Exception:  # swallowed errors do not keep it running
                    pass
            return "ran to the end"
        finally:
            finished.append(threading.current_thread().name)

    finished: list[str] = []
    looping = run_on_thread(101, loop, lambda: "timed out")
    other = run_on_thread(102, loop, lambda: "timed out")
    quick = run_on_thread(103, lambda: "quick", lambda: "timed out")
    assert quick.future.result(10) == "quick"
    assert cancel(103) is False  # ended already: nothing to stop
    assert cancel(101) is True
    assert looping.future.result(10) == "timed out"
    assert not other.future.done()  # the other call runs on
    stop_looping.set()
    assert other.future.result(10) == "ran to the end"
    assert len(set(finished)) == 2 and all(n.startswith("cellhop-endpoint-call") for n in finished), finished
    assert cancel(101) is False and cancel(102) is False
    kept = {t.name for t in threading.enumerate() if t.name.startswith("cellhop-endpoint-call")}
    again = run_on_thread(104, lambda: threading.current_thread().name, lambda: "timed out")
    assert len(kept) >= 3  # the stopped call's thread did not die of it (three calls ran at once)
    assert again.future.result(10) in kept  # the next call runs on a kept thread
    assert {t.name for t in threading.enumerate() if t.name.startswith("cellhop-endpoint-call")} == kept


DEPLOY_ASYNC = '''
import asyncio, builtins, os, threading, time, cellhop

@cellhop.endpoint(concurrency=4, max_containers=1, timeout=2, scaledown=60)
async def predict(mode="wait", wait=0):
    if mode == "cancelled":
        return getattr(builtins, "cancelled", 0)
    if mode == "raise":
        raise ValueError("no such model")
    start = time.time()
    print(f"async call on {threading.current_thread().name}", flush=True)
    try:
        await asyncio.sleep(float(wait))
    except asyncio.CancelledError:
        builtins.cancelled = getattr(builtins, "cancelled", 0) + 1
        raise
    return {"start": start, "end": time.time(), "thread": threading.current_thread().name,
            "container": os.environ["CELLHOP_CONTAINER_ID"]}

@cellhop.endpoint(max_containers=1, scaledown=60)
async def tokens(n=3):
    for i in range(int(n)):
        await asyncio.sleep(0.01)
        yield {"token": i}

@cellhop.endpoint(max_containers=1, scaledown=60)
@cellhop.batched(max_batch_size=8, wait_ms=200)
async def embed(x):
    await asyncio.sleep(0)
    return [{"x2": 2 * int(v), "batch": len(x)} for v in x]

for f in (predict, tokens, embed):
    f.deploy(f.__name__)
print("deployed")
'''


async def test_an_async_function_endpoint_runs_on_the_containers_event_loop(start_kernel, control_plane, jp_fetch,
                                                                            http_server_client):
    http_server_client.max_clients = 16
    _, kc = await start_kernel()
    content, out, _ = await run(kc, DEPLOY_ASYNC, timeout=120)
    assert content["status"] == "ok" and out.strip() == "deployed", (content, out)
    view = json.loads((await jp_fetch("cellhop", "api", "endpoints", "predict")).body)
    assert view["spec"]["async"] is True, view["spec"]

    answers = await asyncio.gather(*(_call(jp_fetch, "predict", {"wait": 1.5}) for _ in range(4)))
    assert [r.code for r in answers] == [200] * 4, [(r.code, r.body) for r in answers]
    calls = [json.loads(r.body) for r in answers]
    assert {c["thread"] for c in calls} == {"cellhop-async-loop"} and len({c["container"] for c in calls}) == 1
    assert max(c["start"] for c in calls) < min(c["end"] for c in calls), calls  # all four at once

    r = await _call(jp_fetch, "predict", {"mode": "raise"})
    assert r.code == 500 and json.loads(r.body)["error"] == "ValueError", r.body

    # past its timeout: 504, and the coroutine was cancelled at its await; the container serves on
    r = await _call(jp_fetch, "predict", {"wait": 60})
    assert r.code == 504 and json.loads(r.body)["error"] == "EndpointTimeout", r.body
    deadline = time.monotonic() + 20
    while json.loads((await _call(jp_fetch, "predict", {"mode": "cancelled"})).body) != 1:
        assert time.monotonic() < deadline, "the timed-out call was not cancelled"
        await asyncio.sleep(0.2)

    r = await _call(jp_fetch, "tokens", {"n": 3})
    assert r.code == 200, r.body
    assert [json.loads(line) for line in r.body.decode().splitlines()] == [{"token": i} for i in range(3)]

    answers = await asyncio.gather(*(_call(jp_fetch, "embed", {"x": i}) for i in range(6)))
    results = [json.loads(r.body) for r in answers]
    assert [r["x2"] for r in results] == [2 * i for i in range(6)] and max(r["batch"] for r in results) > 1, results

    logs = json.loads((await jp_fetch("cellhop", "api", "endpoints", "predict", "logs")).body)["logs"]
    assert "async call on cellhop-async-loop" in "\n".join(logs.values())
