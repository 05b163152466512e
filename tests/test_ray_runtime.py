"""The Ray runtime on a real two-node Ray cluster started by this module (ray_cluster.py):
H100 on the head (127.0.0.2), A10G on the second node (127.0.0.3), both simulated GPUs.

The local runtime's own %%remote tests run here too, unchanged, against a notebook whose
control plane uses `c.Cellhop.runtime = "ray"` (the `nb` fixture below): values, outputs,
errors, interrupt, timeout, dead containers. Then what is Ray's own: placement by GPU
type, the cluster's inventory with its nodes, ordered fallback, waiting for resources,
CurveZMQ on the wire, images as runtime environments, volumes, and a node lost mid-cell.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from kernel_fixtures import local_json, short_runtime_dir, start_cellhop_kernel
from ray_cluster import HEAD_IP, WORKER_IP, ray_cluster  # noqa: F401  (ray_cluster is a fixture)

# -- the local runtime's %%remote tests, collected here against the Ray runtime ------------------------
from test_remote_cells import (  # noqa: F401
    test_100mb_array_round_trip_values_and_writable,
    test_notebook_functions_and_classes_run_remotely,
    test_remote_state_persists_across_cells,
    test_out_restricts_what_comes_back,
)
from test_remote_failures import (  # noqa: F401
    test_remote_exception_shows_remote_traceback_with_cell_lines,
    test_unpicklable_variable_is_named_and_nothing_runs,
    test_container_exit_code_is_reported,
    test_async_returns_a_handle_and_wait_lands_values,
)
from test_faults import (  # noqa: F401  (fault, fault_record and notebook are fixtures)
    fault,
    fault_record,
    notebook,
    test_interrupt_stops_the_remote_cell_and_the_container_survives,
    test_second_interrupt_stops_a_stubborn_container,
    test_timeout_stops_the_cell_quickly,
    test_timeout_stops_a_cell_that_ignores_interrupt,
    test_container_killed_mid_cell,
    test_out_of_memory_is_reported,
)
from test_remote_outputs import (  # noqa: F401
    test_output_streams_while_the_cell_runs,
    test_stdout_and_stderr_keep_their_order,
)
from test_remote_workdir import (  # noqa: F401
    ray_copies_the_folder_to_the_node as test_the_notebooks_folder_is_copied_to_the_node,
)


def ray_args(cluster) -> tuple:  # c.Cellhop.ray_address: the old name of c.RayRuntime.address, still taken
    return ("--Cellhop.runtime=ray", f"--Cellhop.ray_address={cluster.address}")


@pytest.fixture(scope="module")
def nb(ray_cluster):  # noqa: F811
    """A notebook kernel whose control plane runs its containers on the Ray cluster."""
    with start_cellhop_kernel(extra_arguments=ray_args(ray_cluster), queue_timeout=30) as kernel:
        yield kernel


@pytest.fixture(scope="module")
def ray_manager(ray_cluster, tmp_path_factory):  # noqa: F811
    """A control plane in this process on the Ray runtime (for what the notebook does not show)."""
    import shutil

    import tempfile

    from traitlets.config import Config

    from cellhop.server_ext.config import Cellhop
    from cellhop.server_ext.container_manager import ContainerManager

    root = short_runtime_dir()
    # the state directory outside /tmp (the sandbox's /tmp is private anyway), so hiding it is tested
    state = tempfile.mkdtemp(prefix="cellhop-ray-state-", dir="/var/tmp")
    config = Config()
    config.RayRuntime.address = ray_cluster.address
    # kernels' working folders are the tests' own (pytest's temporary folders), as notebooks' are the server's
    manager = ContainerManager(Cellhop(config=config, runtime="ray", runtime_root=root, state_dir=state,
                                       queue_timeout=15, workdir_roots=[str(tmp_path_factory.getbasetemp())]))
    assert manager.runtime.address == ray_cluster.address
    yield manager
    manager.close()
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)




def container_view(nb, container_id: str) -> dict:
    return local_json(nb, "[c for c in __import__('cellhop.kernel.control_client', fromlist=['x'])"
                          f".get_control_plane().containers() if c['id'] == {container_id!r}][0]")


# -- inventory and placement ------------------------------------------------------------------------
def test_inventory_comes_from_the_cluster_with_nodes(ray_manager):
    inv = ray_manager.inventory
    assert sorted((g.type, g.node) for g in inv.gpus) == [("A10G", WORKER_IP), ("H100", HEAD_IP)]
    assert inv.simulated and all(g.simulated for g in inv.gpus)  # custom resources, no real GPU
    assert "(simulated)" in inv.describe()
    assert ray_manager.runtime.describe().startswith(f"ray cluster at {ray_manager.runtime.address} (2 node(s))")


def test_gpu_table_shows_nodes_and_says_simulated(nb):
    text = nb.ok("%gpu").stdout
    assert "simulated" in text
    h100 = [line for line in text.splitlines() if " H100 " in line]
    a10g = [line for line in text.splitlines() if " A10G " in line]
    assert len(h100) == 1 and f"on node {HEAD_IP}" in h100[0], text
    assert len(a10g) == 1 and f"on node {WORKER_IP}" in a10g[0], text
    assert "Runtime: ray cluster at" in text


@pytest.mark.parametrize("gpu_type, node", [("H100", HEAD_IP), ("A10G", WORKER_IP)])
def test_cells_land_on_the_node_of_their_gpu_type(nb, gpu_type, node):
    ran = nb.ok(f"%%remote --gpu {gpu_type}\nimport os\n"
                "print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ['CELLHOP_GPU_TYPE'])")
    assert ran.stdout.split() == ["0", gpu_type], ran  # CUDA_VISIBLE_DEVICES: Ray's assignment
    view = container_view(nb, ran.container)
    assert view["node"] == node
    assert [(g["type"], g["node"], g["simulated"]) for g in view["gpus"]] == [(gpu_type, node, True)]
    table = nb.ok("%gpu").stdout
    line = next(line for line in table.splitlines() if f" {gpu_type} " in line)
    assert "held by" in line and ran.container in line, table


def stop_notebook_containers(nb) -> None:
    """The notebook's warm containers hold cluster GPUs too: stop them (its next cell starts a fresh one)."""
    nb.ok("from cellhop.kernel.control_client import get_control_plane as _cp\n"
          "for _c in _cp().containers():\n"
          "    if _c['phase'] != 'exited':\n"
          "        _cp().stop(_c['id'])")


def test_fallback_takes_the_next_type_and_a_full_request_waits_for_resources(ray_manager, nb):
    from cellhop.container import ContainerSpec
    from cellhop.errors import QueueTimeout

    stop_notebook_containers(nb)
    m = ray_manager
    first = m.start(ContainerSpec(gpu="H100", owner="first"))
    try:
        assert first.node == HEAD_IP
        second = m.start(ContainerSpec(gpu="H100,A10G", owner="second"))
        assert second.node == WORKER_IP and [g.type for g in second.gpus] == ["A10G"]
        assert second.allocation.waited < 5  # it did not wait for the H100
        m.stop(second.id)

        with pytest.raises(QueueTimeout, match="waiting for resources"):
            m.start(ContainerSpec(gpu="H100", owner="impatient", queue_timeout=1))

        events, got = [], {}

        def wait_for_h100():
            got["container"] = m.start(ContainerSpec(gpu="H100", owner="patient"), on_event=events.append)

        waiter = threading.Thread(target=wait_for_h100)
        waiter.start()
        deadline = time.monotonic() + 20
        while not any(e.get("queue_position") is not None for e in events) and time.monotonic() < deadline:
            time.sleep(0.05)
        queued = [e for e in events if e.get("queue_position") is not None]
        assert queued and queued[0]["queue_position"] == 0 and queued[0]["phase"] == "queued", events
        assert waiter.is_alive()  # it waits in Ray's queue while the H100 is held
        m.stop(first.id)
        waiter.join(60)
        patient = got["container"]
        assert patient.node == HEAD_IP and patient.allocation.waited > 0.2
        m.stop(patient.id)
    finally:
        for c in m.list():
            m.stop(c.id)
    assert all(h is None for h in m.scheduler.holders().values())


def test_a_request_larger_than_any_node_is_refused_not_queued(ray_manager):
    """On the cluster itself: a request only the cluster's total could hold fails at once."""
    from cellhop.errors import GpuRequestError
    from cellhop.gpu_request import GpuRequest
    from cellhop.server_ext.runtimes.ray_scheduler import RayScheduler

    scheduler = RayScheduler(_two_node_inventory())  # one H100 per node (placement would wait forever)
    t0 = time.monotonic()
    with pytest.raises(GpuRequestError, match="no node has more than 1 H100"):
        scheduler.acquire(GpuRequest.parse("H100:2"), {"owner": "big"}, timeout=5)
    assert time.monotonic() - t0 < 2
    from cellhop.container import ContainerSpec
    from cellhop.errors import ContainerStartError

    with pytest.raises((GpuRequestError, ContainerStartError), match="all be on one node"):
        ray_manager.start(ContainerSpec(gpu="any:2", owner="big"))  # the cluster's own inventory


# -- the wire ---------------------------------------------------------------------------------------
def test_connection_is_curve_encrypted_and_keys_stay_put(ray_manager):
    from cellhop.wire import KernelConnection
    from cellhop.container import ContainerSpec

    c = ray_manager.start(ContainerSpec(gpu="none", owner="wire"))
    try:
        info = c.connection_info
        assert info["transport"] == "tcp" and info["ip"] in (HEAD_IP, WORKER_IP)
        assert len(info["curve_serverkey"]) == 40  # the kernel's public key (Z85) ...
        assert "curve_secretkey" not in info and "curve_publickey" not in info  # ... and nothing secret of it
        secure = KernelConnection(info, channels=("shell",))
        assert secure.request("shell", "kernel_info_request", {}, timeout=10).content["status"] == "ok"
        secure.close()
        plain = KernelConnection({k: v for k, v in info.items() if k != "curve_serverkey"}, channels=("shell",))
        plain.send("shell", "kernel_info_request", {})
        assert plain.recv("shell", timeout=3) is None  # an unencrypted client gets nothing
        plain.close()
        from cellhop.server_ext.runtimes.curve import keypair

        impostor = KernelConnection({**info, "curve_serverkey": keypair()[0]}, channels=("shell",))
        impostor.send("shell", "kernel_info_request", {})
        assert impostor.recv("shell", timeout=3) is None  # nor one that expects another server's key
        impostor.close()
        # the kernel admits only the client key pair the control plane derived (ZAP): one who knows the
        # kernel's public key (it went through Ray) but not that pair gets nothing, not even iopub
        from cellhop.wire import CLIENT_PUBLIC, CLIENT_SECRET

        assert info[CLIENT_PUBLIC] and info[CLIENT_SECRET]
        other_public, other_secret = keypair()
        stranger = KernelConnection({**info, CLIENT_PUBLIC: other_public, CLIENT_SECRET: other_secret},
                                    channels=("shell", "iopub"))
        stranger.send("shell", "kernel_info_request", {})
        assert stranger.recv("shell", timeout=3) is None
        watched = KernelConnection(info, channels=("shell",))
        assert watched.request("shell", "kernel_info_request", {}, timeout=10).content["status"] == "ok"
        watched.close()
        assert stranger.recv("iopub", timeout=2) is None  # the busy/idle of that request did not reach it
        stranger.close()
        # a restart (remote GPU kernels restart this way) keeps the ports and keys its clients hold
        restarted = ray_manager.restart(c.id)
        assert restarted.connection_info == info and restarted.node == c.node
        again = KernelConnection(info, channels=("shell",))
        assert again.request("shell", "kernel_info_request", {}, timeout=10).content["status"] == "ok"
        again.close()
    finally:
        ray_manager.stop(c.id)


def test_a_whole_gpu_kernel_runs_on_its_node_through_the_provisioner(ray_manager, tmp_path):
    """A kernelspec's kernel on the Ray runtime: jupyter_client talks to it through the provisioner's
    loopback tunnel (plain on this host, CurveZMQ to the node); interrupt and restart work, the GPU
    stays held across the restart, shutdown frees it."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    from cellhop.kernel.embedded_control_plane import EmbeddedControlPlane
    from cellhop.server_ext.kernelspecs import write_kernelspec
    from cellhop.server_ext.control_plane import ControlPlane

    write_kernelspec(tmp_path / "kernels" / "cellhop-h100", "H100")
    control = EmbeddedControlPlane(control_plane=ControlPlane(ray_manager.config, manager=ray_manager), owned=False)
    km = KernelManager(kernel_name="cellhop-h100",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]))
    km.cellhop_control = control  # handed to its provisioner, as a cellhop server does
    try:
        km.start_kernel(cwd=str(tmp_path))
        info = km.get_connection_info()
        assert info["ip"] == "127.0.0.1" and "curve_serverkey" not in info  # the tunnel's loopback end
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        out = []
        reply = kc.execute_interactive("import os; print(os.environ['CELLHOP_GPU_TYPE'], os.environ['CUDA_VISIBLE_DEVICES'])",
                                       output_hook=lambda m: out.append(m["content"].get("text", "")), timeout=60)
        assert reply["content"]["status"] == "ok" and "".join(out).split() == ["H100", "0"]
        # input() through the tunnel: its stdin and shell sockets share one identity, as the kernel expects
        asked = kc.execute("answer = input('name? ')", allow_stdin=True)
        assert kc.get_stdin_msg(timeout=20)["content"]["prompt"] == "name? "
        kc.input("ray")
        while True:
            msg = kc.get_shell_msg(timeout=20)
            if msg["parent_header"].get("msg_id") == asked:
                break
        assert msg["content"]["status"] == "ok"
        [container] = [c for c in ray_manager.list() if c.phase.value == "ready" and "kernel" in c.spec.owner]
        assert container.to_dict()["node"] == HEAD_IP

        msg_id = kc.execute("import time; time.sleep(60)")
        time.sleep(1.0)
        km.interrupt_kernel()
        deadline = time.monotonic() + 20
        while True:
            msg = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") == msg_id:
                break
        assert msg["content"]["status"] == "error" and msg["content"]["ename"] == "KeyboardInterrupt"

        km.restart_kernel()
        kc.wait_for_ready(timeout=60)
        assert container.phase.value == "ready" and container.to_dict()["gpus"][0]["type"] == "H100"
        reply = kc.execute_interactive("x = 1", timeout=60)
        assert reply["content"]["status"] == "ok"
        kc.stop_channels()
    finally:
        km.shutdown_kernel(now=True)
    assert container.phase.value == "exited"


def test_secret_values_reach_the_container_sealed(ray_manager):
    from cellhop.wire import KernelConnection
    from cellhop.container import ContainerSpec

    ray_manager.storage.secrets.create("ray-token", {"RAY_TEST_SECRET": "s3cr3t-value"}, session=True)
    ray_manager.storage.secrets.create("on-disk", {"RAY_DISK_SECRET": "d1sk-value"})
    state = ray_manager.config.state_dir
    assert any(Path(state).rglob("*.json"))  # the stored secret is on the node's disk ...
    c = ray_manager.start(ContainerSpec(gpu="none", owner="secret", secrets=["ray-token"]))
    try:
        conn = KernelConnection(c.connection_info, channels=("shell",))
        code = ("import os\nok = os.environ.get('RAY_TEST_SECRET') == 's3cr3t-value' and "
                f"'RAY_DISK_SECRET' not in os.environ and os.listdir({state!r}) == []")  # ... not in the container
        reply = conn.request("shell", "execute_request", {"code": code, "silent": False,
                                                          "user_expressions": {"ok": "ok"}}, timeout=20)
        assert reply.content["user_expressions"]["ok"]["data"]["text/plain"] == "True", reply.content
        conn.close()
    finally:
        ray_manager.stop(c.id)


# -- images and volumes -----------------------------------------------------------------------------
def test_image_becomes_a_ray_runtime_env(nb):
    nb.ok("import cellhop\n"
          "ray_img = cellhop.Image.current().pip_install('tomli-w').env({'CELLHOP_RAY_IMAGE': 'yes'})", timeout=240)
    ran = nb.ok("%%remote --image ray_img --no-pull\nimport os, sys, tomli_w\n"
                "print(tomli_w.dumps({'a': 1}).strip(), os.environ['CELLHOP_RAY_IMAGE'], "
                "'runtime_resources' in sys.prefix)", timeout=300)
    assert ran.stdout.split() == ["a", "=", "1", "yes", "True"], ran  # installed by Ray, in Ray's env
    # the notebook's own environment has no tomli_w: it came from the runtime_env
    assert nb.run("import tomli_w").ename == "ModuleNotFoundError"


def test_volume_without_shared_storage_is_a_clear_error(ray_manager):
    from cellhop.container import ContainerSpec
    from cellhop.errors import CellhopError, ContainerStartError

    with pytest.raises((CellhopError, ContainerStartError), match=r"c\.RayRuntime\.shared_volume_path"):
        ray_manager.start(ContainerSpec(gpu="A10G", owner="vol", volumes=[{"name": "data", "path": "/data"}]))
    assert all(h is None for h in ray_manager.scheduler.holders().values())


# -- Ray's messages to its driver stay out of cells ---------------------------------------------------------
def test_ray_cluster_messages_never_land_in_a_cell(nb, ray_manager):
    """The notebook kernel is a Ray driver (its control plane connected); Ray prints the cluster's
    error messages (a node marked dead, ...) from a thread of every driver, which in a kernel would be
    the output of whichever cell runs. A message to all drivers, published while a cell runs, must not
    show in it (it goes to the kernel's own log)."""
    from ray._private.utils import publish_error_to_driver
    from ray._private.worker import global_worker

    nb.ok("%gpu")  # the notebook's control plane is connected to the cluster: its kernel is a driver
    published = {}

    def hook(msg):
        if msg["msg_type"] == "stream" and "cell started" in msg["content"]["text"] and not published:
            publish_error_to_driver("cellhop_test", "a cluster event for every driver",
                                    global_worker.gcs_client)
            published["at"] = time.monotonic()

    ran = nb.run("import time\nprint('cell started', flush=True)\ntime.sleep(4)\nprint('cell ended')",
                 output_hook=hook, timeout=60)
    assert published, ran
    assert ran.status == "ok" and ran.stdout == "cell started\ncell ended\n" and ran.stderr == "", ran
    later = nb.ok("import time\ntime.sleep(1)")
    assert later.stdout == "" and later.stderr == "", later


# -- a node lost mid-cell (last: it restarts the node) ----------------------------------------------------
def test_worker_node_killed_mid_cell(nb, ray_cluster):  # noqa: F811
    killed = {}

    def hook(msg):
        if msg["msg_type"] == "stream" and "on the A10G node" in msg["content"]["text"] and not killed:
            killed["at"] = time.monotonic()
            threading.Thread(target=ray_cluster.kill_node, args=("worker",), daemon=True).start()

    try:
        ran = nb.run("%%remote --gpu A10G\nimport time\nnode_state = 1\nprint('on the A10G node', flush=True)\n"
                     "time.sleep(60)", output_hook=hook, timeout=90)
        assert killed, ran
        assert ran.status == "error" and ran.ename == "ContainerDied", ran
        assert "SIGKILL" in ran.evalue and f"Ray node {WORKER_IP} was lost" in ran.evalue, ran
        assert time.monotonic() - killed["at"] < 20, ran
        assert nb.ok("print('notebook alive')").stdout == "notebook alive\n"
        table = nb.ok("%gpu").stdout
        assert [line for line in table.splitlines() if " A10G " in line and "free" in line], table
    finally:
        if "worker" not in ray_cluster.nodes:
            ray_cluster.start_node("worker")
    # the node is back: the next A10G cell gets a fresh container there
    ran = nb.ok("%%remote --gpu A10G --no-pull\nprint('node_state' in dir())", timeout=120)
    assert ran.stdout == "False\n"
    assert container_view(nb, ran.container)["node"] == WORKER_IP


# -- what needs no cluster ------------------------------------------------------------------------------
def _two_node_inventory():
    from cellhop.inventory import Gpu, Inventory

    def gpu(n, node, gpu_type="H100"):
        return Gpu(index=0, uuid=f"GPU-{n}", name=gpu_type, type=gpu_type, memory_total=80 * 2**30,
                   simulated=True, node=node)

    return Inventory(gpus=(gpu(1, HEAD_IP), gpu(2, WORKER_IP), gpu(3, WORKER_IP, "A10G")), simulated=True)


def test_a_request_must_fit_on_one_node_not_on_the_cluster():
    """Two nodes with one H100 each: H100:2 can never be placed (one STRICT_PACK bundle), so it is an
    error at once naming the most on one node, not a wait forever."""
    from cellhop.errors import GpuRequestError
    from cellhop.gpu_request import GpuRequest, feasible_choices
    from cellhop.server_ext.runtimes.ray_scheduler import RayScheduler

    inv = _two_node_inventory()
    for text in ("H100:2", "any:2"):
        with pytest.raises(GpuRequestError, match="all be on one node") as err:
            feasible_choices(GpuRequest.parse(text), inv)
        assert "the most on one node: H100 ×1, A10G ×1" in str(err.value)
        with pytest.raises(GpuRequestError):
            RayScheduler(inv)._wants(GpuRequest.parse(text))
    assert "no node has more than 1 H100 (the cluster has 2 in all)" in str(
        pytest.raises(GpuRequestError, feasible_choices, GpuRequest.parse("H100:2"), inv).value)
    # a fallback skips what no node can hold; what one node holds is fine
    assert RayScheduler(inv)._wants(GpuRequest.parse("H100:2,A10G")) == [("A10G", 1)]
    assert RayScheduler(inv)._wants(GpuRequest.parse("any")) == [("H100", 1), ("A10G", 1)]


def test_requirements_become_packages_and_pip_options(tmp_path):
    from cellhop.server_ext.images.ray_env import ray_runtime_env
    from cellhop.server_ext.images.store import ImageStore

    (tmp_path / "sub").mkdir()
    (tmp_path / "requirements.txt").write_text(
        "# pinned for the cluster\n--index-url https://pypi.example/simple\n\ntomli-w==1.0.0  # writer\n"
        "-r sub/more.txt\n--extra-index-url=https://extra.example/simple\nattrs \\\n    >=20\n")
    (tmp_path / "sub" / "more.txt").write_text("--find-links /wheels\nsix\n-r ../requirements.txt\n")
    store = ImageStore(tmp_path / "images")
    spec = {"base": {"kind": "current", "python": "python3", "site": []},
            "steps": [{"op": "requirements", "path": str(tmp_path / "requirements.txt")}]}
    store.record("k" * 32, "reqs", spec, ["k" * 32], {})
    env, _ = ray_runtime_env(tmp_path / "images", "k" * 32)
    assert env["pip"]["packages"] == ["tomli-w==1.0.0", "six", "attrs >=20"]
    assert env["pip"]["pip_install_options"] == [
        "--index-url", "https://pypi.example/simple", "--find-links", "/wheels",
        "--extra-index-url", "https://extra.example/simple"]


def test_a_node_check_does_not_hold_up_the_monitor(monkeypatch):
    """An actor dead without Ray saying its node went: poll() returns at once (the monitor thread polls
    every container) and says so later, once the cluster has been asked."""
    import types

    from cellhop.server_ext.runtimes import ray as ray_module

    class ActorDied(Exception):
        pass

    asked = threading.Event()
    fake = types.SimpleNamespace(
        wait=lambda refs, timeout=0: (refs, []),
        get=lambda ref, timeout=None: (_ for _ in ()).throw(ActorDied("The actor died unexpectedly")),
        exceptions=types.SimpleNamespace(RayActorError=ActorDied),
        nodes=lambda: (asked.set(), time.sleep(0.3), [{"Alive": True, "NodeManagerAddress": WORKER_IP}])[2])
    monkeypatch.setattr(ray_module, "_ray", lambda: fake)
    monkeypatch.setattr(ray_module, "NODE_DEATH_WAIT", 1.0)
    monkeypatch.setattr(ray_module._node_lost, "__defaults__", (1.0,))
    handle = ray_module.RayHandle(actor=None, exit_ref=object(), node_ip=WORKER_IP, node_id="n")
    container = types.SimpleNamespace(handle=handle)
    runtime = ray_module.RayRuntime.__new__(ray_module.RayRuntime)
    t0 = time.monotonic()
    assert runtime.poll(container) is None
    assert time.monotonic() - t0 < 0.9  # one look at the cluster at most, never the whole wait
    deadline = time.monotonic() + 10
    while runtime.poll(container) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    status = runtime.poll(container)
    assert status is not None and "Ray actor on" in status.reason and "died" in status.reason
