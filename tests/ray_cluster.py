"""A real two-node Ray cluster on this machine, for the Ray runtime's tests and the dispatch benchmark.

The head runs on 127.0.0.2 with one GPU and `accelerator_type:H100`, the
second node on 127.0.0.3 with one GPU and `accelerator_type:A10G` (Ray
rewrites 127.0.0.1, so the loopback addresses after it are used). There is
no real GPU behind them: the inventory says "simulated". Every port is
chosen free, the temp dir and the auth token are private to the cluster, so
other Ray clusters on the host are never touched. Each node's `ray start
--block` runs in its own session; stopping a node signals, by pid, every
process of that session and their descendants. `ray stop` is never used
(it kills every Ray process on the host by name).

`ray_cluster` is the module-scoped fixture: `RayCluster.start()`, or, where
the cluster cannot start, a failure with the node's log (Ray is part of the
test extra, so a cluster that does not start is a broken install, not a
reason to skip the runtime's tests).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
START_TIMEOUT = 120
PORT_RETRIES = 2
PORT_CLASH = ("used by other components", "Address already in use", "address already in use")


@functools.cache
def _process_token() -> str:
    """One auth token for every cluster this process starts: a Ray driver keeps the first token it read, so a
    second cluster with a token of its own (the next test module's) would refuse it."""
    return secrets.token_hex(32)


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


WORKER_PORTS = 100


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out for a bind to port 0 (Linux: 32768 unless configured)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_free(ip: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


def _free_worker_range(ip: str) -> int:
    """The first port of a range of WORKER_PORTS free ports below the ephemeral range.

    Below it, because every other port of a node is chosen by binding to port 0, which lands in the
    ephemeral range: a worker range inside that range could hold one of them, and Ray refuses to start
    ("worker_ports is trying to use a port number ... used by other components", seen in CI)."""
    low = 20000
    blocks = max(1, (_ephemeral_low() - low) // WORKER_PORTS)
    for _ in range(20):
        base = low + secrets.randbelow(blocks) * WORKER_PORTS
        if all(_port_free(ip, p) for p in range(base, base + WORKER_PORTS)):
            return base
    raise RuntimeError(f"no {WORKER_PORTS} free consecutive ports for Ray workers below {_ephemeral_low()} on {ip}")


def _sessions_and_descendants(sids: set[int], roots: set[int]) -> list[int]:
    """Pids whose session is one of `sids`, or that descend from one of those or of `roots`."""
    parent: dict[int, int] = {}
    found: set[int] = set(roots)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry)
        parent[pid] = int(fields[1])
        if int(fields[3]) in sids and fields[0] != "Z":
            found.add(pid)
    changed = True
    while changed:
        changed = False
        for pid, ppid in parent.items():
            if ppid in found and pid not in found:
                found.add(pid)
                changed = True
    return sorted(p for p in found if p != os.getpid())


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class RayCluster:
    """Two Ray nodes started by this process; `stop()` ends every process they started."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="chray-", dir="/tmp"))
        self.token_path = self.dir / "auth_token"
        self.token_path.write_text(_process_token())
        self.token_path.chmod(0o600)
        self.port = _free_port(HEAD_IP)
        self.address = f"{HEAD_IP}:{self.port}"
        self.nodes: dict[str, subprocess.Popen] = {}
        self.env = {
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path),
            "RAY_USAGE_STATS_ENABLED": "0",
            # a lost node is noticed in about two seconds, not thirty
            "RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "0",
        }

    @classmethod
    def start(cls) -> RayCluster:
        cluster = cls()
        try:
            cluster.start_node("head")
            cluster.start_node("worker")
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _ports(self, ip: str) -> list[str]:
        base = _free_worker_range(ip)
        args = ["--min-worker-port", str(base), "--max-worker-port", str(base + WORKER_PORTS - 1)]
        for flag in ("--node-manager-port", "--object-manager-port", "--dashboard-agent-grpc-port",
                     "--dashboard-agent-listen-port", "--metrics-export-port", "--runtime-env-agent-port"):
            args += [flag, str(_free_port(ip))]
        return args

    def start_node(self, which: str) -> None:
        """Start one node; where a port chosen free was taken before Ray bound it (a race with any other
        process on the host), start it again on fresh ports, at most PORT_RETRIES times."""
        for attempt in range(PORT_RETRIES + 1):
            try:
                return self._start_node_once(which)
            except RuntimeError as exc:
                if attempt == PORT_RETRIES or not any(m in str(exc) for m in PORT_CLASH):
                    raise
                self.stop_node(which)
                if which == "head":
                    self.port = _free_port(HEAD_IP)
                    self.address = f"{HEAD_IP}:{self.port}"

    def _start_node_once(self, which: str) -> None:
        ray = shutil.which("ray")
        if ray is None:
            raise RuntimeError("the `ray` command is not installed (pip install 'cellhop[ray]')")
        common = ["--num-cpus", "4", "--num-gpus", "1", "--object-store-memory", str(100 * 2**20),
                  "--temp-dir", str(self.dir / "tmp"), "--disable-usage-stats", "--block"]
        if which == "head":
            argv = [ray, "start", "--head", "--node-ip-address", HEAD_IP, "--port", str(self.port),
                    "--ray-client-server-port", str(_free_port(HEAD_IP)), "--include-dashboard", "false",
                    "--resources", json.dumps({"accelerator_type:H100": 1}), *self._ports(HEAD_IP), *common]
        else:
            argv = [ray, "start", "--address", self.address, "--node-ip-address", WORKER_IP,
                    "--resources", json.dumps({"accelerator_type:A10G": 1}), *self._ports(WORKER_IP), *common]
        log = open(self.dir / f"{which}.log", "ab")
        start = log.tell()  # this attempt's part of the log (a retry appends to it)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **self.env}, start_new_session=True, cwd=self.dir)
        log.close()
        self.nodes[which] = proc
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = (self.dir / f"{which}.log").read_bytes()[start:].decode(errors="replace")
            if "Ray runtime started" in text:  # printed once the node is registered with the head
                return
            if proc.poll() is not None:
                raise RuntimeError(f"ray start ({which}) exited with {proc.returncode}: {text[-1500:]}")
            time.sleep(0.5)
        raise RuntimeError(f"the Ray {which} node did not start within {START_TIMEOUT} s: {text[-1500:]}")

    def node_pids(self, which: str) -> list[int]:
        proc = self.nodes.get(which)
        if proc is None:
            return []
        return _sessions_and_descendants({proc.pid}, {proc.pid})

    def kill_node(self, which: str) -> None:
        """Lose a node at once (SIGKILL to every process it runs), as a crashed machine would."""
        _signal_all(self.node_pids(which), signal.SIGKILL)
        self.nodes.pop(which).wait()

    def stop_node(self, which: str, grace: float = 10.0) -> None:
        pids = self.node_pids(which)
        proc = self.nodes.pop(which)
        _signal_all(pids, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        _signal_all([p for p in pids if _alive(p)], signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for which in ("worker", "head"):
            if which in self.nodes:
                self.stop_node(which)
        shutil.rmtree(self.dir, ignore_errors=True)


DRIVER_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_USAGE_STATS_ENABLED")


def _ray_cluster_fixture():
    import pytest

    try:
        cluster = RayCluster.start()
    except Exception as exc:  # the reason goes into the failure, word for word
        pytest.fail(f"the local two-node Ray cluster could not start: {exc}", pytrace=False)
    saved = {k: os.environ.get(k) for k in DRIVER_ENV}
    os.environ.update({k: cluster.env[k] for k in DRIVER_ENV})  # drivers (tests, notebook kernels) need the token
    try:
        yield cluster
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        cluster.stop()


def _make_fixture():
    import pytest

    return pytest.fixture(scope="module", name="ray_cluster")(_ray_cluster_fixture)


ray_cluster = _make_fixture()
