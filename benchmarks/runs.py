"""Runs the server owns (issue 16): how fast a queued run starts, and how many trivial runs a second go through,
beside Ray's job submission and plain Ray tasks, in one run.

    python benchmarks/runs.py                 # ~1-2 minutes
    python benchmarks/runs.py --n 1000

- submit-to-start latency: `POST cellhop/api/runs` of a deployed function on a real `jupyter server` with
  cellhop (a subprocess), until the function's first line runs in its container (the function returns
  time.time() and the host's clock is the same): from a claimed standby container (c.Cellhop.standby=1,
  no warm container: c.Cellhop.run_keep_warm=0), and from a container a previous run left warm;
- runs/s: N trivial runs submitted through REST at once, until the last one ended (containers kept warm
  between runs, c.Cellhop.run_concurrency of them);
- Ray, where importable: `ray.job_submission` (JobSubmissionClient on a local Ray with its dashboard: submit
  to the job's first line, and jobs/s for a few jobs: each is a process), and plain Ray tasks (tasks/s for N).

Writes benchmarks/results/runs-<date>.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, write_results  # noqa: E402


def started_at():
    import time

    return time.time()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A jupyter server with cellhop in a subprocess, and its REST API."""

    def __init__(self, root: Path, *options: str):
        self.port, self.token = _free_port(), secrets.token_hex(16)
        (root / "notebooks").mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("CELLHOP_STANDBY", "CELLHOP_SIMULATED_GPUS")}
        argv = [sys.executable, "-m", "jupyter", "server", f"--port={self.port}", "--ip=127.0.0.1", "--no-browser",
                "--allow-root", f"--IdentityProvider.token={self.token}", "--ServerApp.jpserver_extensions=cellhop=True",
                f"--ServerApp.root_dir={root / 'notebooks'}", f"--Cellhop.runtime_root={root / 'run'}",
                f"--Cellhop.state_dir={root / 'state'}", "--Cellhop.simulated_gpus=H100:1",
                "--Cellhop.idle_timeout=0", *options]
        self.log = open(root / f"server-{self.port}.log", "ab")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.api("GET", "gpus")
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("the cellhop server did not start") from None
                time.sleep(0.1)

    def api(self, method: str, path: str, body=None, raw: bytes | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, "/cellhop/api/" + path, body=data, headers={"Authorization": f"token {self.token}"})
        answer = conn.getresponse()
        out = answer.read()
        if answer.status >= 400:
            raise SystemExit(f"{method} {path}: {answer.status} {out[:300]!r}")
        return json.loads(out)

    def deploy(self, name: str, fn) -> None:
        import cloudpickle

        spec = {"gpu": "none", "max_containers": 1}
        self.api("PUT", f"endpoints/{name}?" + urllib.parse.urlencode({"spec": json.dumps(spec)}),
                 raw=cloudpickle.dumps(fn))

    def submit(self) -> str:
        return self.api("POST", "runs", {"function": "started_at", "kwargs": {}})["id"]

    def wait(self, run_id: str) -> dict:
        while True:
            view = self.api("GET", f"runs/{run_id}/wait?timeout=60&detail=1")
            if view["status"] not in ("queued", "running"):
                if view["status"] != "succeeded":
                    raise SystemExit(f"run {run_id} {view['status']}: {view.get('error')}")
                return view

    def standby_ready(self) -> int:
        return sum(s.get("ready", 0) for s in self.api("GET", "gpus").get("standby", []))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _latency(server: Server, samples: int, standby: bool) -> list[float]:
    out = []
    for _ in range(samples):
        if standby:
            deadline = time.monotonic() + 60
            while not server.standby_ready():
                if time.monotonic() > deadline:
                    raise SystemExit("no standby container became ready in 60 s")
                time.sleep(0.05)
        t0 = time.time()
        view = server.wait(server.submit())
        out.append(view["result"] - t0)
    return out


def cellhop_figures(root: Path, n: int, samples: int) -> dict:
    figures = {}
    server = Server(root / "standby", "--Cellhop.standby=1", "--Cellhop.run_keep_warm=0")
    try:
        server.deploy("started_at", started_at)
        latency = _latency(server, samples, standby=True)
        figures["submit_to_start_standby_ms"] = {"p50": percentile(latency, 50) * 1e3,
                                                 "max": max(latency) * 1e3, "samples": samples}
    finally:
        server.stop()
    server = Server(root / "warm", "--Cellhop.standby=0", "--Cellhop.run_keep_warm=30")
    try:
        server.deploy("started_at", started_at)
        server.wait(server.submit())  # a container to keep warm
        latency = _latency(server, samples, standby=False)
        figures["submit_to_start_warm_ms"] = {"p50": percentile(latency, 50) * 1e3, "max": max(latency) * 1e3,
                                              "samples": samples}
        t0 = time.perf_counter()
        ids = [server.submit() for _ in range(n)]
        submitted = time.perf_counter() - t0
        for run_id in ids:
            server.wait(run_id)
        elapsed = time.perf_counter() - t0
        figures["trivial_runs"] = {"n": n, "seconds": elapsed, "runs_per_second": n / elapsed,
                                   "submit_per_second": n / submitted}
    finally:
        server.stop()
    return figures


JOB = "python -c 'import time; print(\"STARTED\", time.time())'"


def ray_figures(n: int, jobs: int) -> dict:
    try:
        import ray
    except ImportError:
        return {"skipped": "ray is not importable"}
    figures: dict = {"version": ray.__version__}
    context = ray.init(num_cpus=os.cpu_count(), include_dashboard=True, log_to_driver=False,
                       ignore_reinit_error=True)
    try:
        @ray.remote
        def trivial():
            return 1

        ray.get([trivial.remote() for _ in range(20)])  # workers up
        t0 = time.perf_counter()
        ray.get([trivial.remote() for _ in range(n)])
        elapsed = time.perf_counter() - t0
        figures["tasks"] = {"n": n, "seconds": elapsed, "per_second": n / elapsed}
        try:
            from ray.job_submission import JobStatus, JobSubmissionClient

            client = JobSubmissionClient("http://" + context.dashboard_url)
            starts, t0 = [], time.perf_counter()
            for _ in range(jobs):
                submitted = time.time()
                job = client.submit_job(entrypoint=JOB)
                while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                    time.sleep(0.05)
                line = [w for w in client.get_job_logs(job).split("\n") if w.startswith("STARTED")]
                if line:
                    starts.append(float(line[0].split()[1]) - submitted)
            elapsed = time.perf_counter() - t0
            figures["job_submission"] = {"jobs": jobs, "seconds": elapsed, "jobs_per_second": jobs / elapsed,
                                         "submit_to_start_ms_p50": percentile(starts, 50) * 1e3 if starts else None}
        except Exception as exc:  # noqa: BLE001 - the dashboard did not come up here
            figures["job_submission"] = {"skipped": f"{type(exc).__name__}: {exc}"}
    finally:
        ray.shutdown()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="trivial runs (and Ray tasks)")
    parser.add_argument("--samples", type=int, default=5, help="latency samples")
    parser.add_argument("--jobs", type=int, default=5, help="Ray jobs submitted")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cellhop-bench-runs-"))
    try:
        results = {"cellhop": cellhop_figures(root, args.n, args.samples)}
        results["ray"] = {"skipped": "--no-ray"} if args.no_ray else ray_figures(args.n, args.jobs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    path = write_results("runs", results)
    print(json.dumps(results, indent=2))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
