"""Real containers on a simulated inventory: pinning, sandbox, lifecycle, limits, crashes, reaping.

Each test starts container kernels through ContainerManager (the Python API
the magics and the server use) and talks to them over the wire protocol.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
from processes import container_kernel_pids, wait_until

from cellhop.container import ContainerSpec, Phase
from cellhop.errors import CellhopError
from cellhop.gpu_request import GpuRequest
from cellhop.server_ext.doctor import bubblewrap_problem
from cellhop.wire import KernelConnection

# bubblewrap installed AND able to make a sandbox here (a container without user namespaces has the
# binary but cannot): otherwise every test below would fail on a setup problem, not a bug
NO_SANDBOX = bubblewrap_problem()
needs_bubblewrap = pytest.mark.skipif(NO_SANDBOX is not None, reason=f"{NO_SANDBOX} (`cellhop doctor` says what to do)")


def spec(gpu: str = "none", **kwargs) -> ContainerSpec:
    return ContainerSpec(gpu=GpuRequest.parse(gpu), owner="tests", **kwargs)


def execute(container, code: str, timeout: float = 60, msg_type: str = "execute_request",
            expressions: dict | None = None, **content) -> dict:
    """Run a cell; return the reply's content (with `expressions` evaluated after it, as user_expressions)."""
    conn = KernelConnection(container.connection_info, channels=("shell",))
    try:
        content = {"code": code, "silent": False, "user_expressions": expressions or {}, **content}
        return conn.request("shell", msg_type, content, timeout=timeout).content
    finally:
        conn.close()


def evaluate(container, expression: str, setup: str = "import os"):
    """The value of `expression` inside the container (via its repr)."""
    reply = execute(container, setup, expressions={"value": expression})
    assert reply["status"] == "ok", reply
    result = reply["user_expressions"]["value"]
    assert result["status"] == "ok", result
    return ast.literal_eval(result["data"]["text/plain"])


def send_cell(container, code: str, msg_type: str = "execute_request", **content) -> KernelConnection:
    """Send a cell without waiting for its reply (for cells that end the kernel).

    The caller closes the connection once the cell has run: closing at once could drop the request.
    """
    conn = KernelConnection(container.connection_info, channels=("shell",))
    conn.send("shell", msg_type, {"code": code, "silent": False, **content})
    return conn


def wait_exited(manager, container, timeout: float = 60):
    """Wait for the control plane to record the container's end (its monitor does, without polling)."""
    wait_until(lambda: container.phase == Phase.EXITED, timeout, f"container {container.id} to exit")
    return manager.poll(container.id)


def gone(container) -> bool:
    return not container_kernel_pids(container.directory)


# -- the spec ------------------------------------------------------------------------------
def test_a_spec_takes_what_users_type():
    typed = ContainerSpec(gpu="h100:2", memory="2G")
    assert typed.gpu == GpuRequest.parse("H100:2") and typed.memory == 2 * 2**30
    assert ContainerSpec().gpu.cpu_only and ContainerSpec().memory is None
    with pytest.raises(CellhopError, match="write e.g. '512M' or '8G'"):
        ContainerSpec(memory="lots")
    with pytest.raises(CellhopError, match="at least 64M"):
        ContainerSpec(memory="10M")


# -- GPU pinning --------------------------------------------------------------------------
def test_each_container_sees_only_its_own_gpus(manager):
    containers = [manager.start(spec(gpu)) for gpu in ("H100", "H100", "A10G")]
    seen = []
    for container in containers:
        env = evaluate(container, "dict(os.environ)")
        (gpu,) = container.gpus
        assert env["CUDA_VISIBLE_DEVICES"] == gpu.uuid
        assert env["NVIDIA_VISIBLE_DEVICES"] == gpu.uuid
        assert env["CELLHOP_GPU_TYPE"] == gpu.type
        assert env["CELLHOP_GPUS_SIMULATED"] == "1"  # a simulated GPU says so
        assert "CELLHOP_SIMULATED_GPUS" not in env  # the inventory does not leak in
        seen.append(gpu.uuid)
    assert len(set(seen)) == 3  # three containers, three different GPUs
    assert [g.type for c in containers for g in c.gpus] == ["H100", "H100", "A10G"]


def test_a_multi_gpu_container_sees_all_of_its_gpus_in_order(manager):
    container = manager.start(spec("H100:2"))
    h100s = [g.uuid for g in manager.inventory.of_type("H100")]
    assert evaluate(container, "os.environ['CUDA_VISIBLE_DEVICES']") == ",".join(h100s)
    assert evaluate(container, "os.environ['NVIDIA_VISIBLE_DEVICES']") == ",".join(h100s)


def test_a_cpu_only_container_sees_no_gpu(manager):
    container = manager.start(spec("none"))
    assert container.gpus == ()
    env = evaluate(container, "{k: v for k, v in os.environ.items() if k.startswith(('CUDA', 'NVIDIA'))}")
    assert env["CUDA_VISIBLE_DEVICES"] == ""  # CUDA sees no device at all
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"  # nor does the NVIDIA container toolkit
    assert set(manager.scheduler.holders().values()) == {None}


# -- the sandbox --------------------------------------------------------------------------
@needs_bubblewrap
def test_the_container_runs_in_its_own_sandbox(manager):
    container = manager.start(spec("H100"))
    assert container.sandboxed and container.to_dict()["sandboxed"]
    assert evaluate(container, "os.getpid()") < 10  # its own pid namespace

    probe = "open('/usr/cellhop-probe-' + str(os.getpid()), 'w')"
    reply = execute(container, f"import os\ntry:\n    {probe}\nexcept OSError as e:\n    code = e.errno")
    assert reply["status"] == "ok"
    assert evaluate(container, "code", setup="") == errno.EROFS  # the host root is read-only

    name = f"cellhop-private-{uuid.uuid4().hex}"
    assert evaluate(container, f"open('/tmp/{name}', 'w').write('x')") == 1
    assert evaluate(container, f"os.path.exists('/tmp/{name}')")
    assert not os.path.exists(f"/tmp/{name}")  # its /tmp is not the host's
    host_file = f"/tmp/{name}-host"
    with open(host_file, "w"):
        pass
    try:
        assert not evaluate(container, f"os.path.exists({host_file!r})")
    finally:
        os.unlink(host_file)

    # The working directory is private and writable.
    assert evaluate(container, "open('here.txt', 'w').write('hello')") == 5


def test_the_notebook_kernels_variables_do_not_leak_in(make_manager, monkeypatch):
    # Inside a notebook kernel JPY_PARENT_PID is set; the container kernel would take the sandbox's
    # init for its parent and exit. Nor may cellhop's own control variables travel.
    monkeypatch.setenv("JPY_PARENT_PID", str(os.getpid()))
    monkeypatch.setenv("CELLHOP_CONTROL_TOKEN", "secret-token")
    manager = make_manager()
    container = manager.start(spec("A10G"))
    env = evaluate(container, "dict(os.environ)")
    assert "JPY_PARENT_PID" not in env and "CELLHOP_CONTROL_TOKEN" not in env
    assert env["CELLHOP_CONTAINER_ID"] == container.id
    assert manager.poll(container.id) is None  # and it keeps running


# -- lifecycle ----------------------------------------------------------------------------
def test_phases_are_observable_from_queued_to_exited(manager):
    events = []
    unsubscribe = manager.subscribe(events.append)
    container = manager.start(spec("H100"))
    assert container.phase == Phase.READY
    status = manager.stop(container.id)
    unsubscribe()
    phases = [e["phase"] for e in events if e["id"] == container.id]
    assert phases == ["queued", "starting", "ready", "stopping", "exited"]
    assert [p for p, _ in container.phases] == phases
    assert events[-1]["exit"] == status.to_dict()
    assert events[-1]["container"]["gpus"][0]["type"] == "H100"
    assert status.stopped and status.describe() == "stopped on request"


def test_a_container_is_listed_while_it_lives(manager):
    container = manager.start(spec("H100"))
    assert manager.list() == [container] and manager.get(container.id) is container
    assert container.to_dict()["phase"] == "ready"
    assert container.connection_info["key"] not in json.dumps(container.to_dict())  # no HMAC key in public views
    manager.stop(container.id)
    assert manager.get(container.id).phase == Phase.EXITED


def test_interrupt_stops_a_running_cell(manager, runtime_root):
    workdir = runtime_root / "work"
    container = manager.start(spec("H100", workdir=workdir))
    result = {}
    cell = threading.Thread(target=lambda: result.update(
        execute(container, "open('started', 'w').close()\nimport time\ntime.sleep(30)",
                # without this the kernel would abort the next request if it came within moments
                stop_on_error=False)), daemon=True)
    cell.start()
    wait_until(lambda: (workdir / "started").exists(), what="the cell to start")
    interrupted = time.monotonic()
    manager.interrupt(container.id)
    cell.join(20)
    assert time.monotonic() - interrupted < 10
    assert result["status"] == "error" and result["ename"] == "KeyboardInterrupt"
    assert evaluate(container, "1 + 1", setup="") == 2  # the kernel lives on
    assert container.phase == Phase.READY


def test_stop_asks_politely_first(manager, runtime_root):
    workdir = runtime_root / "work"
    container = manager.start(spec("none", workdir=workdir))
    execute(container, "import os, signal\n"
                       "def bye(*_):\n    open('terminated', 'w').close()\n    os._exit(0)\n"
                       "signal.signal(signal.SIGTERM, bye)")
    started = time.monotonic()
    status = manager.stop(container.id, grace=30)
    assert time.monotonic() - started < 15  # it did not wait for the grace period to pass
    assert (workdir / "terminated").exists()  # the kernel got SIGTERM and could clean up
    assert status.stopped
    wait_until(lambda: gone(container), 15, "the container's processes to be gone")


def test_stop_kills_a_container_that_ignores_it(manager):
    container = manager.start(spec("H100"))
    execute(container, "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)")
    started = time.monotonic()
    status = manager.stop(container.id, grace=1.0)
    assert 0.9 <= time.monotonic() - started < 20
    assert status.stopped
    wait_until(lambda: gone(container), 15, "the container's processes to be gone")
    assert set(manager.scheduler.holders().values()) == {None}


def test_stop_leaves_no_process_and_frees_the_gpu(manager):
    container = manager.start(spec("H100:2"))
    assert len(container_kernel_pids(container.directory)) >= 1
    assert {h["owner"] for h in manager.scheduler.holders().values() if h} == {"tests"}
    manager.stop(container.id)
    wait_until(lambda: gone(container), 15, "the container's processes to be gone")
    assert set(manager.scheduler.holders().values()) == {None}
    assert manager.stop(container.id) == container.exit_status  # stopping twice is harmless


def test_idle_timeout_stops_the_container(manager):
    container = manager.start(spec("A10G", idle_timeout=1))
    status = wait_exited(manager, container, timeout=30)
    assert status.stopped and "idle for 1 s" in status.describe()
    wait_until(lambda: gone(container), 15, "the container's processes to be gone")
    assert set(manager.scheduler.holders().values()) == {None}


# -- crashes --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cell", "code", "sig", "says"),
    [
        ("import os; os._exit(3)", 3, None, "crashed with exit code 3"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", None, signal.SIGKILL, "killed by SIGKILL"),
    ],
    ids=["exit-code", "sigkill"],
)
def test_a_crash_is_recorded_and_reported(manager, cell, code, sig, says):
    events = []
    manager.subscribe(events.append)
    container = manager.start(spec("H100"))
    conn = send_cell(container, cell)
    try:
        status = wait_exited(manager, container)
    finally:
        conn.close()
    assert not status.stopped and not status.oom
    if code is not None:
        assert status.code == code and status.signal is None
    assert status.signal == sig
    assert says in status.describe()
    assert events[-1]["phase"] == "exited" and events[-1]["exit"]["description"] == status.describe()
    wait_until(lambda: gone(container), 15, "the container's processes to be gone")
    assert set(manager.scheduler.holders().values()) == {None}  # its GPU is free again


@pytest.mark.parametrize("msg_type", ["cellhop_execute_request", "execute_request"],
                         ids=["shipped-cell", "plain-cell"])
def test_running_out_of_memory_ends_the_container_and_says_so(manager, msg_type):
    container = manager.start(spec("H100", memory="300M"))
    conn = send_cell(container, "x = bytearray(2**30)", msg_type=msg_type, push=[], pull=[])
    try:
        # Either the container ends (right) or the cell answers, having survived (wrong).
        ended = wait_until(lambda: manager.poll(container.id) or conn.recv("shell", timeout=0.05), 60,
                           "the container to end or the cell to answer")
    finally:
        conn.close()
    assert ended == container.exit_status, f"the kernel survived: {getattr(ended, 'content', ended)}"
    assert ended.oom
    assert "out of memory" in ended.describe()
    assert container.to_dict()["exit"]["oom"] is True
    wait_until(lambda: gone(container), 15, "the container's processes to be gone")


def test_the_memory_limit_is_enforced_inside(manager):
    container = manager.start(spec("none", memory="300M"))
    limit = 300 * 2**20
    assert evaluate(container, "os.environ['CELLHOP_MEMORY_LIMIT']") == str(limit)
    enforcement = evaluate(container, "os.environ['CELLHOP_MEMORY_ENFORCEMENT']")
    if enforcement == "cgroup":
        pid = manager.runtime._kernel_pid(container)  # its cgroup namespace shows it '/' inside: ask the host
        assert f"cellhop-{container.id}" in Path(f"/proc/{pid}/cgroup").read_text()
    else:
        assert enforcement == "rlimit"
        assert evaluate(container, "resource.getrlimit(resource.RLIMIT_DATA)", setup="import resource") == (limit,
                                                                                                            limit)
    assert evaluate(container, "len(bytearray(50 * 2**20))", setup="") == 50 * 2**20  # within the limit: fine


def test_cpu_limit_gives_the_container_that_many_cpus(manager):
    container = manager.start(spec("none", cpus=1))
    groups = manager.runtime._limits[container.id].groups
    if groups is not None and "cpu" in groups.paths:  # a quota of one CPU per period, which the cell cannot lift
        folder = groups.paths["cpu"]
        quota = ((folder / "cpu.max").read_text().split() if (folder / "cpu.max").exists() else
                 [(folder / "cpu.cfs_quota_us").read_text().strip(), (folder / "cpu.cfs_period_us").read_text().strip()])
        assert int(quota[0]) == int(quota[1])
    else:  # no cgroup: an affinity mask
        assert len(evaluate(container, "os.sched_getaffinity(0)")) == 1
    assert evaluate(container, "os.environ['OMP_NUM_THREADS']") == "1"
