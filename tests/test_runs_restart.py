"""Runs survive the server (server_ext/runs.py): a real jupyter_server process is SIGKILLed while one run
runs and another waits its turn (c.Cellhop.run_concurrency=1); a new server on the same state directory
marks the running one lost (keeping what it printed), retries the one that had retries left, and runs the
queued one.
"""

from __future__ import annotations

import http.client
import json
import signal
from urllib.parse import urlencode

import cloudpickle
import pytest
from processes import container_kernel_pids, wait_until
from server_process import ServerProcess

pytestmark = pytest.mark.timeout(300)

SOURCE = '''
def mark_then_sleep(path, seconds):
    import os, time
    first = not os.path.exists(path)
    open(path, "a").write("x")
    print("attempt at", path, "first" if first else "again", flush=True)
    if first:
        time.sleep(seconds)
    return open(path).read()
'''


def _function():
    namespace: dict = {}
    exec(SOURCE, namespace)  # noqa: S102 - a function with no importable module: pickled by value
    return namespace["mark_then_sleep"]


def _submit(server: ServerProcess, args: tuple, retries=None) -> str:
    code = cloudpickle.dumps(_function())
    request = {"exec": "call", "name": "mark_then_sleep", "code_bytes": len(code), "retries": retries,
               "spec": {"volumes": [{"name": "marks", "path": "/marks", "read_only": False}]}}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("POST", "/cellhop/api/runs?" + urlencode({"spec": json.dumps(request)}),
                     body=code + cloudpickle.dumps((args, {})),
                     headers={"Authorization": f"token {server.token}", "Content-Type": "application/octet-stream"})
        response = conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 201, body
        return body["id"]
    finally:
        conn.close()


def test_a_server_sigkill_loses_the_running_run_retries_it_and_requeues_the_waiting_one(runtime_root):
    args = [f"--Cellhop.state_dir={runtime_root / 'state'}", "--Cellhop.run_concurrency=1",
            "--Cellhop.run_keep_warm=0"]
    first = ServerProcess(runtime_root, simulated_gpus=None, extra_args=args).start()
    try:
        assert first.api("POST", "volumes", {"name": "marks"})[0] in (200, 201)
        retried = _submit(first, ("/marks/retried", 600), retries={"max_retries": 2, "initial_delay": 0.1})
        queued = _submit(first, ("/marks/queued", 600))  # waits for the one slot

        def running(run_id):
            status, view = first.api("GET", f"runs/{run_id}/logs")
            return status == 200 and "attempt at" in view["logs"]

        wait_until(lambda: running(retried), 120, "the first run to start")
        live = runtime_root / "state" / "runs" / retried / "live.txt"  # its log so far, kept beside the run
        wait_until(lambda: live.exists() and "attempt at" in live.read_text(), 60, "the live log to be saved")
        _, view = first.api("GET", f"runs/{queued}")
        assert view["status"] == "queued", view
    finally:
        first.stop(signal.SIGKILL)
    wait_until(lambda: not container_kernel_pids(runtime_root), 30, "the containers to die with their server")

    args[1] = "--Cellhop.run_concurrency=2"  # both at once now: the queued one sleeps in its first attempt
    second = ServerProcess(runtime_root, simulated_gpus=None, extra_args=args).start()
    try:
        def ended(run_id):
            _, view = second.api("GET", f"runs/{run_id}/wait?timeout=5")
            return view if view["status"] not in ("queued", "running") else None

        view = wait_until(lambda: ended(retried), 120, "the lost run to be retried")
        assert view["status"] == "succeeded", view
        assert [a["status"] for a in view["attempts"]] == ["lost", "succeeded"], view["attempts"]
        status, detail = second.api("GET", f"runs/{retried}")
        assert detail["result"] == "xx"  # the second attempt saw the first one's mark
        assert "lost: its log until the server stopped" in detail["logs"]
        assert "/marks/retried first" in detail["logs"] and "/marks/retried again" in detail["logs"]

        # the run that was queued when the server died runs now; it had no retries: its first attempt was it
        waiting = wait_until(lambda: (lambda v: v if v["status"] == "running" else None)(
            second.api("GET", f"runs/{queued}")[1]), 120, "the queued run to start on the new server")
        assert len(waiting["attempts"]) == 1
        second.api("DELETE", f"runs/{queued}")
        view = wait_until(lambda: ended(queued), 60, "the cancel")
        assert view["status"] == "cancelled"
    finally:
        second.stop()

