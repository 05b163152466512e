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
value = r.result(timeout=120)
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
