"""Runs owned by the server (server_ext/runs.py), from kernels and over REST, on a real jupyter_server with
real kernels and real (bubblewrap) containers:

- a detached run outlives the kernel that started it; a new kernel reads its status, logs and result;
  `cellhop.runs()` of a kernel lists its own runs only; the store's files are owner-only;
- a detached cell's result is the variables it assigned;
- REST: submit a deployed function by name, status with the result as JSON, a callback to a server on
  loopback, cancel of a running run, refused callback schemes;
- retries with backoff: a function that fails twice then succeeds (counting in a volume), each attempt
  recorded; a dead container is retried like a failed call;
- `cellhop.Function.lookup(name).remote(x)` from another kernel.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time

import pytest
from server_kernel_client import run

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def jp_server_config(runtime_root, cellhop_gpus):
    return {
        "ServerApp": {"jpserver_extensions": {"cellhop": True}},
        "Cellhop": {"simulated_gpus": cellhop_gpus, "runtime_root": str(runtime_root), "idle_timeout": 0,
                    "state_dir": str(runtime_root / "state"), "run_keep_warm": 0.0},
    }


async def _ok(kc, code, timeout=150):
    content, out, msgs = await run(kc, code, timeout=timeout)
    if content["status"] != "ok":
        import re

        trace = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(content.get("traceback", [])))
        raise AssertionError(f"{content.get('ename')}: {content.get('evalue')}\n{trace}\n{out}")
    return out


async def _until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)
    return value


async def _api(jp_fetch, method, *path, body=None, **kwargs):
    r = await jp_fetch("cellhop", "api", *path, method=method, raise_error=False,
                       body=None if body is None else json.dumps(body), **kwargs)
    return r.code, (json.loads(r.body) if r.body else None)


DETACH = '''
import cellhop, time

@cellhop.remote(gpu="H100")
def slow_square(x, seconds):
    import os
    print("working on", x, flush=True)
    time.sleep(seconds)
    return {"square": x * x, "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}

h = slow_square.spawn(7, 4, detach=True)
print(h.id, h.status, h.gpu)
'''


async def test_a_detached_run_outlives_its_kernel_and_a_new_kernel_reads_it(start_kernel, jp_serverapp, jp_fetch,
                                                                            runtime_root):
    kid, kc = await start_kernel()
    out = await _ok(kc, DETACH)
    run_id, status, gpu = out.split()
    assert status in ("queued", "running") and gpu == "H100", out
    await jp_serverapp.kernel_manager.shutdown_kernel(kid, now=True)  # its kernel goes; the run does not

    _, kc2 = await start_kernel()
    out = await _ok(kc2, f'''
import cellhop
r = cellhop.Run({run_id!r})
value = r.result(timeout=240)
print(json.dumps({{"value": value, "status": r.status, "attempts": len(r.attempts), "duration": r.duration,
                   "logs": r.logs(), "mine": [x.id for x in cellhop.runs()]}}))
'''.replace("import cellhop", "import cellhop, json"))
    seen = json.loads(out)
    assert seen["value"]["square"] == 49 and seen["status"] == "succeeded" and seen["attempts"] == 1, seen
    assert seen["duration"] >= 4 and "working on 7" in seen["logs"], seen
    assert seen["mine"] == []  # a kernel lists its own runs; it reads another's by its id only

    code, view = await _api(jp_fetch, "GET", "runs", run_id)  # the server's user: everything, JSON result
    assert code == 200 and view["result"]["square"] == 49 and view["gpus"] == ["H100"], view
    folder = runtime_root / "state" / "runs" / run_id
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert {stat.S_IMODE(os.stat(p).st_mode) for p in folder.iterdir()} == {0o600}


async def test_detached_cell_returns_its_variables_and_a_failing_call_retries(start_kernel, jp_fetch):
    _, kc = await start_kernel()
    out = await _ok(kc, '''
import cellhop, json
counts = cellhop.Volume("counts")
counts.info()  # made now

@cellhop.remote(volumes={"/counts": counts}, retries=cellhop.Retries(max_retries=3, backoff=2.0, initial_delay=0.5))
def flaky(path):
    import os
    n = int(open(path).read()) if os.path.exists(path) else 0
    open(path, "w").write(str(n + 1))
    if n < 2:
        raise RuntimeError(f"attempt {n + 1} fails")
    return n + 1

r = flaky.spawn("/counts/n", detach=True)
print(r.id)
''')
    run_id = out.split()[0]
    await _ok(kc, "%load_ext cellhop")
    await _ok(kc, "base = 10")
    await _ok(kc, "%%remote --detach\nimport math\nsquare = base * base\nroot = math.sqrt(square)\n")
    out = await _ok(kc, '''
cell = _
print(json.dumps({"cell": cell.result(timeout=150), "kind": cell.view["kind"]}))
''')
    seen = json.loads(out)
    assert seen == {"cell": {"root": 10.0, "square": 100}, "kind": "cell"}, seen  # not the module it imported
    out = await _ok(kc, f'''
r = cellhop.Run({run_id!r})
print(json.dumps({{"value": r.result(timeout=150), "attempts": r.attempts}}))
''')
    seen = json.loads(out)
    assert seen["value"] == 3, seen
    attempts = seen["attempts"]
    assert [a["status"] for a in attempts] == ["failed", "failed", "succeeded"], attempts
    assert "attempt 1 fails" in attempts[0]["error"]
    gaps = [attempts[i + 1]["started"] - attempts[i]["ended"] for i in range(2)]
    assert gaps[0] >= 0.5 and gaps[1] >= 1.0, gaps  # initial_delay, then * backoff


class _Callbacks:
    """An HTTP server on loopback that keeps what is POSTed to it (a run's callback_url)."""

    def __init__(self):
        import http.server
        import threading

        self.bodies: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                outer.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/done?from=cellhop"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


DEPLOY = '''
import cellhop, time

@cellhop.remote
def embed(text, wait=0):
    print("embedding", text, flush=True)
    time.sleep(float(wait))
    return {"n": len(text), "text": text}

embed.deploy("embed")
print("deployed")
'''


async def test_rest_queue_submit_status_callback_cancel_and_lookup(start_kernel, jp_fetch, control_plane):
    _, kc = await start_kernel()
    assert "deployed" in await _ok(kc, DEPLOY)
    callbacks = _Callbacks()
    try:
        code, view = await _api(jp_fetch, "POST", "runs", body={"function": "embed", "kwargs": {"text": "hello"},
                                                              "callback_url": callbacks.url})
        assert code == 201 and view["status"] in ("queued", "running") and view["function"] == "embed", view
        code, done = await _api(jp_fetch, "GET", "runs", view["id"], "wait", params={"timeout": "120", "detail": "1"})
        assert done["status"] == "succeeded" and done["result"] == {"n": 5, "text": "hello"}, done
        assert "embedding hello" in done["logs"] and done["attempts"][0]["status"] == "succeeded"
        body = await _until(lambda: callbacks.bodies, 30, "the callback")
        assert body[0]["id"] == view["id"] and body[0]["status"] == "succeeded" and body[0]["result"]["n"] == 5
        code, stored = await _api(jp_fetch, "GET", "runs", view["id"])
        assert stored["callback"] == {"status": 204}, stored
    finally:
        callbacks.close()

    # only http(s) callbacks; an unknown function is a 404 naming what to do
    for url in ("file:///etc/passwd", "gopher://127.0.0.1:70/", "http://user:pw@127.0.0.1/"):
        code, error = await _api(jp_fetch, "POST", "runs", body={"function": "embed", "callback_url": url})
        assert code == 400 and "http:// or https://" in error["message"], error
    code, error = await _api(jp_fetch, "POST", "runs", body={"function": "nope", "kwargs": {}})
    assert code == 404 and "deployed" in error["message"], error

    # cancel a running run: its container is stopped
    code, view = await _api(jp_fetch, "POST", "runs", body={"function": "embed", "kwargs": {"text": "x", "wait": 120}})
    run_id = view["id"]

    def logs_say_embedding():
        return [c for c in control_plane.manager.list() if c.spec.owner == f"run {run_id}"
                and "embedding x" in control_plane.manager.logs(c.id)]

    containers = await _until(logs_say_embedding, 240, "the run to start")
    code, view = await _api(jp_fetch, "DELETE", "runs", run_id)
    assert code == 200
    code, done = await _api(jp_fetch, "GET", "runs", run_id, "wait", params={"timeout": "60"})
    assert done["status"] == "cancelled" and done["attempts"][-1]["status"] == "cancelled", done
    await _until(lambda: containers[0].phase.value == "exited", 60, "the run's container to stop")

    # another notebook calls the deployed function by name; a kernel's list holds its own runs only
    _, kc2 = await start_kernel()
    out = await _ok(kc2, '''
import cellhop, json
f = cellhop.Function.lookup("embed")
print(json.dumps({"value": f.remote("abc"), "mine": [r.name for r in cellhop.runs()]}))
''')
    assert json.loads(out) == {"value": {"n": 3, "text": "abc"}, "mine": ["embed"]}, out
    code, listed = await _api(jp_fetch, "GET", "runs")
    assert len(listed["runs"]) == 3  # the server's user sees them all


async def test_map_requeues_the_calls_of_a_container_that_died_and_a_cls_method_retries(start_kernel):
    _, kc = await start_kernel()
    out = await _ok(kc, '''
import cellhop, json, sys
marks = cellhop.Volume("marks")
marks.info()

@cellhop.remote(volumes={"/marks": marks}, max_containers=2)
def square_or_die(x):
    import os
    if x == 5 and not os.path.exists("/marks/died"):
        open("/marks/died", "w").close()
        os._exit(1)  # the container ends with the calls it holds
    return x * x

results = square_or_die.map(range(12), chunk_size=1, progress=False)
print(json.dumps(results))
''')
    assert json.loads(out.strip().splitlines()[-1]) == [x * x for x in range(12)], out

    # a cellhop.cls method retried: its instance (and its count) lives on in the warm container
    out = await _ok(kc, '''
@cellhop.cls(retries=cellhop.Retries(max_retries=2, initial_delay=0.1))
class Flaky:
    @cellhop.enter
    def setup(self):
        self.calls = 0

    def go(self):
        self.calls += 1
        if self.calls < 3:
            raise RuntimeError(f"call {self.calls} fails")
        return self.calls

flaky = Flaky()
print(json.dumps([flaky.go.remote(), [a["status"] for a in flaky._runner.attempts]]))
''')
    assert json.loads(out.strip().splitlines()[-1]) == [3, ["failed", "failed", "succeeded"]], out

