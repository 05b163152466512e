"""Endpoints (issue 15): a trivial JSON function served three ways on this host, in one run.

    python benchmarks/endpoints.py            # ~1-2 minutes
    python benchmarks/endpoints.py --n 1000 --seconds 5

- cellhop: `@cellhop.endpoint(max_containers=1, concurrency=64)` deployed on a real `jupyter server` with
  cellhop (a subprocess), called at {base_url}cellhop/endpoints/<name>/ with the server's token; its calls
  run on threads of its one container (kernel/endpoint_threads.py), a bubblewrap sandbox
  (also: the same function as a bare ASGI app through `cellhop.asgi`, latency only);
- plain: the same function behind a plain HTTP server on loopback, in a subprocess of its own: uvicorn
  with a bare ASGI app where uvicorn is importable, else a tornado app (tornado is what jupyter_server
  itself runs on);
- Ray Serve: a deployment of the same function, where `ray[serve]` is importable (else said, and skipped).

Figures: latency p50/p99 at concurrency 1 (one keep-alive connection, requests one after another);
requests/s at concurrency 32 (32 threads, each a keep-alive connection, for --seconds); the same for a
`@cellhop.batched` endpoint; and the first response of a freshly deployed endpoint from zero
containers, once with a warm standby container to claim (c.Cellhop.standby=1) and once without
(a fresh container start). The client runs in this process (Python threads): on a small host it shares
the CPUs with the servers it measures, alike for all three.

Aims (the issue's): cellhop p50 at concurrency 1 within +2 ms of the plain server; requests/s at
concurrency 32 at or above Ray Serve's; first response from zero <= 1.5 s (<= 200 ms from a standby).
Writes benchmarks/results/endpoints-<date>.json.
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
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, write_results  # noqa: E402

P50_AIM_MS = 2.0
ZERO_AIM_S, STANDBY_AIM_S = 1.5, 0.2


def hello(x=0):
    return {"hello": x}


def hello_batch(x):
    return [{"hello": v} for v in x]


def hello_app():
    """The same function as a bare ASGI app (for cellhop.asgi)."""
    import json as _json

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = (await receive())["body"]
        out = _json.dumps({"hello": _json.loads(body or b"{}").get("x", 0)}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})
    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(port: int, path: str, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not answer within {timeout:.0f} s")


# -- the servers ---------------------------------------------------------------------
class CellhopServer:
    def __init__(self, root: Path, standby: int):
        self.port, self.token = _free_port(), secrets.token_hex(16)
        (root / "notebooks").mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("CELLHOP_STANDBY", "CELLHOP_SIMULATED_GPUS")}
        argv = [sys.executable, "-m", "jupyter", "server", f"--port={self.port}", "--ip=127.0.0.1", "--no-browser",
                "--allow-root", f"--IdentityProvider.token={self.token}", "--ServerApp.jpserver_extensions=cellhop=True",
                f"--ServerApp.root_dir={root / 'notebooks'}", f"--Cellhop.runtime_root={root / 'run'}",
                f"--Cellhop.state_dir={root / 'state'}", "--Cellhop.simulated_gpus=H100:1",
                f"--Cellhop.standby={standby}", "--Cellhop.idle_timeout=0"]
        self.log = open(root / f"server-{self.port}.log", "ab")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_http(self.port, "/api/status", self.proc, "the cellhop server")
        self.headers = {"Authorization": f"token {self.token}", "Content-Type": "application/json"}

    def api(self, method: str, path: str, body: bytes | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        conn.request(method, "/cellhop/api/" + path, body=body, headers=self.headers)
        answer = conn.getresponse()
        data = answer.read()
        if answer.status >= 400:
            raise SystemExit(f"{method} {path}: {answer.status} {data[:300]!r}")
        return json.loads(data)

    def deploy(self, name: str, fn, make=None) -> None:
        """Deploy as a notebook does (the Endpoint's deploy over the server's API)."""
        from cellhop.kernel.endpoint import endpoint
        from cellhop.kernel.http_control_plane import HttpControlPlane

        options = {"max_containers": 1, "concurrency": 64, "scaledown": 600}
        (make or (lambda f: endpoint(**options)(f)))(fn).deploy(name, control=HttpControlPlane(
            f"http://127.0.0.1:{self.port}/", self.token))

    def standby_ready(self) -> int:
        return sum(s.get("ready", 0) for s in self.api("GET", "gpus").get("standby", []))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


PLAIN_APP = r'''
import json, sys
def hello(x=0):
    return {"hello": x}
port = int(sys.argv[1])
try:
    import uvicorn
except ImportError:
    uvicorn = None
if uvicorn is not None:
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        out = json.dumps(hello(**json.loads(body or b"{}"))).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})
    print("uvicorn", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
else:
    import asyncio
    from tornado import web
    class Hello(web.RequestHandler):
        def post(self):
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(hello(**json.loads(self.request.body or b"{}"))))
        get = post
    async def main():
        web.Application([(r"/hello/?", Hello)], log_function=lambda h: None).listen(port, "127.0.0.1")
        await asyncio.Event().wait()
    print("tornado", flush=True)
    asyncio.run(main())
'''


class PlainServer:
    def __init__(self):
        self.port = _free_port()
        self.proc = subprocess.Popen([sys.executable, "-c", PLAIN_APP, str(self.port)], stdout=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.kind = self.proc.stdout.readline().strip()
        _wait_http(self.port, "/hello/", self.proc, "the plain server")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# -- the client ----------------------------------------------------------------------
def _post(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict) -> bytes:
    conn.request("POST", path, body=body, headers=headers)
    answer = conn.getresponse()
    data = answer.read()
    if answer.status != 200:
        raise RuntimeError(f"POST {path}: {answer.status} {data[:200]!r}")
    return data


def latency(port: int, path: str, headers: dict, n: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = json.dumps({"x": 1}).encode()
    for _ in range(min(50, n)):
        _post(conn, path, body, headers)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        _post(conn, path, body, headers)
        times.append(time.perf_counter() - t0)
    conn.close()
    return {"n": n, "p50_ms": round(percentile(times, 50) * 1e3, 3), "p99_ms": round(percentile(times, 99) * 1e3, 3)}


def throughput(port: int, path: str, headers: dict, concurrency: int, seconds: float) -> dict:
    counts = [0] * concurrency
    errors = []
    start = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def worker(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        body = json.dumps({"x": i}).encode()
        start.wait()
        try:
            while time.perf_counter() < stop_at[0]:
                _post(conn, path, body, headers)
                counts[i] += 1
        except Exception as exc:  # noqa: BLE001 - reported
            errors.append(str(exc))
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return {"concurrency": concurrency, "seconds": round(elapsed, 2), "requests": sum(counts),
            "requests_per_second": round(sum(counts) / elapsed, 1), "errors": errors[:3]}


def from_zero(server: CellhopServer, rounds: int, with_standby: bool) -> dict:
    """First response of freshly deployed endpoints (no container yet)."""
    times, claimed = [], 0
    for i in range(rounds):
        if with_standby:
            deadline = time.monotonic() + 60
            while server.standby_ready() < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
        name = f"zero-{'s' if with_standby else 'f'}-{i}"
        server.deploy(name, hello)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        t0 = time.perf_counter()
        _post(conn, f"/cellhop/endpoints/{name}/", b"{}", server.headers)
        times.append(time.perf_counter() - t0)
        conn.close()
        view = server.api("GET", f"endpoints/{name}")
        claimed += sum(1 for c in view["containers"] if c.get("claimed_from"))
        server.api("DELETE", f"endpoints/{name}")
    return {"rounds": rounds, "median_s": round(sorted(times)[len(times) // 2], 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3), "claimed_a_standby": claimed}


def ray_serve(n: int, seconds: float) -> dict:
    try:
        import ray
        from ray import serve
        from starlette.requests import Request
    except Exception as exc:  # noqa: BLE001 - said, and skipped
        return {"skipped": f"ray[serve] is not importable here ({type(exc).__name__}: {exc}); "
                           "pip install 'ray[serve]' to compare"}

    port = _free_port()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})

        @serve.deployment(max_ongoing_requests=64)
        class Hello:
            async def __call__(self, request: Request):
                return hello(**(await request.json()))

        serve.run(Hello.bind(), route_prefix="/hello")
        headers = {"Content-Type": "application/json"}
        return {"latency_c1": latency(port, "/hello", headers, n),
                "throughput_c32": throughput(port, "/hello", headers, 32, seconds)}
    finally:
        serve.shutdown()
        ray.shutdown()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=400, help="requests timed at concurrency 1")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of load at concurrency 32")
    parser.add_argument("--rounds", type=int, default=3, help="scale-from-zero rounds, each way")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ch-bench-", dir="/tmp"))
    results: dict = {"n": args.n, "seconds": args.seconds}
    try:
        plain = PlainServer()
        try:
            results["plain"] = {"server": plain.kind,
                                "latency_c1": latency(plain.port, "/hello/", {"Content-Type": "application/json"},
                                                      args.n),
                                "throughput_c32": throughput(plain.port, "/hello/", {"Content-Type": "application/json"},
                                                             32, args.seconds)}
        finally:
            plain.stop()
        print("plain", json.dumps(results["plain"]))

        server = CellhopServer(root / "a", standby=1)
        try:
            from cellhop.kernel.endpoint import asgi, batched, endpoint

            options = {"max_containers": 1, "concurrency": 64, "scaledown": 600}
            server.deploy("hello", hello)
            server.deploy("hello-batched", hello_batch,
                          lambda f: endpoint(**options)(batched(max_batch_size=32, wait_ms=2)(f)))
            server.deploy("hello-asgi", hello_app, lambda f: asgi(f, **options))
            path = "/cellhop/endpoints/hello/"
            results["cellhop"] = {"latency_c1": latency(server.port, path, server.headers, args.n),
                                  "throughput_c32": throughput(server.port, path, server.headers, 32, args.seconds)}
            results["cellhop_asgi"] = {"latency_c1": latency(server.port, "/cellhop/endpoints/hello-asgi/",
                                                             server.headers, args.n)}
            results["cellhop_batched"] = {
                "throughput_c32": throughput(server.port, "/cellhop/endpoints/hello-batched/", server.headers, 32,
                                             args.seconds)}
            print("cellhop", json.dumps(results["cellhop"]), json.dumps(results["cellhop_batched"]),
                  json.dumps(results["cellhop_asgi"]))
            results["from_zero_standby"] = from_zero(server, args.rounds, with_standby=True)
            print("from zero, a standby to claim", json.dumps(results["from_zero_standby"]))
        finally:
            server.stop()
        server = CellhopServer(root / "b", standby=0)
        try:
            results["from_zero_fresh"] = from_zero(server, args.rounds, with_standby=False)
            print("from zero, a fresh container", json.dumps(results["from_zero_fresh"]))
        finally:
            server.stop()
        results["ray_serve"] = ray_serve(args.n, args.seconds)
        print("ray serve", json.dumps(results["ray_serve"]))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    p50_gap = results["cellhop"]["latency_c1"]["p50_ms"] - results["plain"]["latency_c1"]["p50_ms"]
    ray_rps = results["ray_serve"].get("throughput_c32", {}).get("requests_per_second")
    results["aims"] = {
        "p50_gap_ms": round(p50_gap, 3), "p50_within_2ms_of_plain": p50_gap <= P50_AIM_MS,
        "rps_c32_at_or_above_ray_serve": None if ray_rps is None else
        results["cellhop"]["throughput_c32"]["requests_per_second"] >= ray_rps,
        "from_zero_within_1_5s": results["from_zero_fresh"]["median_s"] <= ZERO_AIM_S,
        "from_standby_within_200ms": results["from_zero_standby"]["median_s"] <= STANDBY_AIM_S,
    }
    print("aims", json.dumps(results["aims"]))
    path = write_results("endpoints", results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
