"""Whole kernels on GPU containers inside a cellhop-enabled jupyter_server (pytest-jupyter):
the launcher's generated GPU kernelspecs, start/interrupt/restart/shutdown through the REST API,
two kernels contending for one simulated GPU, launch failures the launcher shows, idle culling,
and get/load_provisioner_info. Real container kernels under bubblewrap."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from server_kernel_client import run as run_cell

from cellhop.server_ext.kernelspecs import write_kernelspec

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def server_extra():
    """More server configuration; a test changes it with @pytest.mark.parametrize("server_extra", [...])."""
    return {}


@pytest.fixture
def jp_server_config(runtime_root, server_extra):
    config = {
        "ServerApp": {"jpserver_extensions": {"cellhop": True}},
        "Cellhop": {"simulated_gpus": "H100:1,A10G:1", "runtime_root": str(runtime_root), "idle_timeout": 0},
        "CellhopProvisioner": {"launch_timeout": 60},
    }
    for section, values in server_extra.items():
        config.setdefault(section, {}).update(values)
    return config


@pytest.fixture
def control_plane(jp_serverapp):
    return jp_serverapp.web_app.settings["cellhop_control_plane"]


@pytest.fixture
def notebook_dir(jp_root_dir):
    path = jp_root_dir / "work" / "nb"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def kernels(jp_serverapp, jp_fetch, jp_asyncio_loop, http_server_client):
    """start(name, path) -> kernel id through POST /api/kernels; every kernel is shut down afterwards."""
    started = []

    async def start(name="cellhop-h100", path="work/nb", expect=201):
        r = await jp_fetch("api", "kernels", method="POST", raise_error=False,
                           body=json.dumps({"name": name, "path": path}))
        body = json.loads(r.body)
        assert r.code == expect, body
        if r.code == 201:
            started.append(body["id"])
            return body["id"]
        return body

    yield start
    km = jp_serverapp.kernel_manager

    async def shutdown():
        for kid in started:
            if kid in km:
                await km.shutdown_kernel(kid, now=True)

    jp_asyncio_loop.run_until_complete(shutdown())


async def run(kc, code: str, timeout: float = 30):
    """(reply content, stdout) without blocking the server's event loop."""
    content, stdout, _ = await run_cell(kc, code, timeout)
    return content, stdout


async def client_of(jp_serverapp, kid):
    kc = jp_serverapp.kernel_manager.get_kernel(kid).client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=30)
    return kc


def container_of(control_plane, owner_part: str):
    return [c for c in control_plane.manager.list() if owner_part in c.spec.owner]


async def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# -- the launcher's kernelspecs ------------------------------------------------------------------
@pytest.mark.parametrize("server_extra", [{"Cellhop": {"simulated_gpus": "H100:2,A10G:1"}}])
async def test_the_launcher_lists_a_kernel_per_gpu_type_without_a_manual_step(jp_fetch, jp_serverapp, jp_kernel_dir):
    r = await jp_fetch("api", "kernelspecs")
    specs = json.loads(r.body)["kernelspecs"]
    cellhop = {name: s["spec"]["display_name"] for name, s in specs.items() if name.startswith("cellhop-")}
    assert cellhop == {"cellhop-h100": "Python 3 · H100 (simulated)", "cellhop-h100x2": "Python 3 · H100 ×2 (simulated)",
                       "cellhop-a10g": "Python 3 · A10G (simulated)"}
    provisioner = specs["cellhop-h100x2"]["spec"]["metadata"]["kernel_provisioner"]
    assert provisioner == {"provisioner_name": "cellhop",
                           "config": {"gpu": "H100:2", "image": None, "cpus": None, "memory": None,
                                      "volumes": [], "secrets": []}}
    assert specs["cellhop-h100"]["resources"].get("logo-64x64")  # the Python logo
    assert "python3" in specs  # the plain kernel is still there
    assert not list(Path(jp_kernel_dir).glob("cellhop-*"))  # generated, never written to disk
    r = await jp_fetch("kernelspecs", "cellhop-h100", "logo-64x64.png")
    assert r.code == 200


# -- a kernel's life through the REST API ------------------------------------------------------
# When the kernel's process started (clock ticks since boot: /proc/self/stat's 22nd field)
STARTED = "int(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19])"


async def test_a_gpu_kernel_runs_sandboxed_in_the_notebooks_folder_and_restarts_keeping_its_gpu(
        kernels, jp_serverapp, jp_fetch, control_plane, notebook_dir):
    (notebook_dir / "data.txt").write_text("from the notebook's folder")
    kid = await kernels("cellhop-h100", "work/nb/analysis.ipynb")
    [container] = container_of(control_plane, kid[:8])
    assert container.phase.value == "ready" and container.sandboxed
    assert [g.type for g in container.gpus] == ["H100"]
    kc = await client_of(jp_serverapp, kid)
    probe = f"cellhop-probe-{kid[:8]}"
    outside = ["/usr", "/root", "/etc", str(notebook_dir.parent)]  # the host root, and beside the notebook
    content, out = await run(kc, "import os\n"
                                  "print(os.getcwd(), open('data.txt').read(), os.environ['CUDA_VISIBLE_DEVICES'],"
                                  " os.environ['CELLHOP_CONTAINER_ID'], sep='|')\n"
                                  "open('written.txt', 'w').write('by the kernel')\n"
                                  "for folder in %r:\n"
                                  "    try:\n"
                                  "        open(os.path.join(folder, %r), 'w').write('escaped')\n"
                                  "        print('WROTE', folder)\n"
                                  "    except OSError as exc:\n"
                                  "        print('REFUSED', folder, exc.errno)\n"
                                  "x = 42\n"
                                  "print('STARTED', %s)" % (outside, probe, STARTED))
    assert content["status"] == "ok", content
    *lines, started_line = out.strip().splitlines()
    first_started = int(started_line.split()[1])
    cwd, data, gpus, cid = lines[0].split("|")
    assert (cwd, data, gpus, cid) == (str(notebook_dir), "from the notebook's folder", "GPU-simulated-h100-0",
                                      container.id)
    assert (notebook_dir / "written.txt").read_text() == "by the kernel"  # bound read-write
    attempts = dict(line.split(" ", 2)[:2][::-1] for line in lines[1:])
    for folder in outside[:3]:  # the host root is read-only inside
        assert attempts[folder] == "REFUSED", (folder, lines)
    for folder in outside:  # and nothing written in there reached the host (beside the notebook: a
        assert not (Path(folder) / probe).exists(), folder  # private /tmp at most)
    holder = control_plane.manager.scheduler.holders()["GPU-simulated-h100-0"]
    assert holder["container"] == container.id

    # interrupt through the REST API stops a running cell
    waiting = asyncio.ensure_future(run(kc, "import time\ntime.sleep(60)"))
    server_kernel = jp_serverapp.kernel_manager.get_kernel(kid)
    await wait_for(lambda: server_kernel.execution_state == "busy", what="the cell to start")
    r = await jp_fetch("api", "kernels", kid, "interrupt", method="POST", body="")
    assert r.code == 204
    content, _ = await asyncio.wait_for(waiting, 20)
    assert content["status"] == "error" and content["ename"] == "KeyboardInterrupt"

    # restart through the REST API: a fresh kernel process in the same container, the GPU held throughout
    seen_holders = []
    watcher = control_plane.subscribe(lambda e: seen_holders.append(
        control_plane.manager.scheduler.holders()["GPU-simulated-h100-0"]) if e.get("type") == "container" else None)
    try:
        r = await jp_fetch("api", "kernels", kid, "restart", method="POST", body="")
        assert r.code == 200
    finally:
        watcher.close()
    assert seen_holders and all(h and h["container"] == container.id for h in seen_holders)
    assert [p for p, _ in container.phases][-2:] == ["starting", "ready"]
    assert control_plane.manager.list() == [container] and container.phase.value == "ready"
    kc.stop_channels()
    kc = await client_of(jp_serverapp, kid)
    # a fresh process (its pid inside the new sandbox may well be the same number): it started later
    content, out = await run(kc, "import os\nprint('x' in globals(), %s > %d, os.getcwd())" % (STARTED, first_started))
    assert content["status"] == "ok", content
    assert out.split() == ["False", "True", str(notebook_dir)]
    kc.stop_channels()

    # shutdown: the container stops and the GPU is free at once
    r = await jp_fetch("api", "kernels", kid, method="DELETE")
    assert r.code == 204
    assert container.phase.value == "exited"
    assert control_plane.manager.scheduler.holders()["GPU-simulated-h100-0"] is None


async def test_two_kernels_contend_for_one_gpu_and_the_second_starts_when_the_first_shuts_down(
        kernels, jp_serverapp, jp_fetch, control_plane, notebook_dir):
    first = await kernels("cellhop-h100")
    [held] = container_of(control_plane, first[:8])
    events = []
    subscription = control_plane.subscribe(events.append)
    second = asyncio.ensure_future(kernels("cellhop-h100"))
    try:
        await wait_for(lambda: any(c.phase.value == "queued" for c in control_plane.manager.list()),
                       what="the second kernel to queue")
        [queued] = [c for c in control_plane.manager.list() if c.phase.value == "queued"]
        assert queued.queue_position == 0
        # restarting the first kernel does not let the waiting one take its GPU
        r = await jp_fetch("api", "kernels", first, "restart", method="POST", body="")
        assert r.code == 200 and held.phase.value == "ready"
        assert queued.phase.value == "queued" and not second.done()
        r = await jp_fetch("api", "kernels", first, method="DELETE")
        assert r.code == 204
        second_id = await asyncio.wait_for(second, 30)
    finally:
        subscription.close()
    [got] = container_of(control_plane, second_id[:8])
    assert got is queued and got.phase.value == "ready" and held.phase.value == "exited"
    assert control_plane.manager.scheduler.holders()["GPU-simulated-h100-0"]["container"] == got.id
    positions = [e.get("queue_position") for e in events if e.get("id") == got.id and e.get("phase") == "queued"]
    assert 0 in positions  # the queue position went out on the event stream
    kc = await client_of(jp_serverapp, second_id)
    content, out = await run(kc, "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])")
    assert out.strip() == "GPU-simulated-h100-0"
    kc.stop_channels()


# -- failures the launcher shows ------------------------------------------------------------------
def _nothing_left(control_plane):
    manager = control_plane.manager
    live = [c for c in manager.list() if c.phase.value != "exited"]
    tickets = [p for p in (manager.root / "queue").glob("*.ticket")]
    return not live and not tickets


async def test_no_gpu_within_the_launch_timeout_says_so_and_leaves_nothing(kernels, control_plane, notebook_dir,
                                                                          jp_kernel_dir):
    # the holder starts with the server's launch timeout (a loaded host may take seconds); the second
    # kernel's own timeout (its kernelspec's) runs out while it waits in the queue
    write_kernelspec(Path(jp_kernel_dir) / "cellhop-h100-impatient", "H100", launch_timeout=1.5)
    first = await kernels("cellhop-h100")
    error = await kernels("cellhop-h100-impatient", expect=503)
    message = error["message"]
    assert "launch timeout" in message and "phase: queued" in message and "H100" in message, message
    assert "launch_timeout" in message  # what to do
    [only] = [c for c in control_plane.manager.list() if c.phase.value != "exited"]
    assert first[:8] in only.spec.owner
    assert not list((control_plane.manager.root / "queue").glob("*.ticket"))


async def test_an_unknown_gpu_type_and_a_container_dying_while_starting_are_explained(
        kernels, control_plane, jp_kernel_dir, notebook_dir):
    write_kernelspec(Path(jp_kernel_dir) / "cellhop-a100", "A100-80GB")
    error = await kernels("cellhop-a100", expect=400)
    assert "A100-80GB" in error["message"] and "H100, A10G (simulated)" in error["message"], error
    assert "kernelspec install --gpu" in error["message"]
    assert _nothing_left(control_plane)

    write_kernelspec(Path(jp_kernel_dir) / "cellhop-broken", "A10G", python="/bin/false")  # cannot start a kernel
    error = await kernels("cellhop-broken", expect=500)
    assert "died while starting" in error["message"] and "start the kernel again" in error["message"], error
    assert "launch phases: queued" in error["message"]
    assert _nothing_left(control_plane)
    assert control_plane.manager.scheduler.holders()["GPU-simulated-a10g-0"] is None


async def test_a_kernel_in_an_image_that_is_not_built_or_with_a_missing_interpreter_says_what_to_do(
        kernels, control_plane, jp_kernel_dir, notebook_dir):
    write_kernelspec(Path(jp_kernel_dir) / "cellhop-noimage", "A10G", image="never-built-env")
    error = await kernels("cellhop-noimage", expect=400)
    message = error["message"]
    assert "image 'never-built-env'" in message and "does not know" in message, message
    assert "died" not in message and "build()" in message and "kernel_provisioner.config" in message, message
    assert _nothing_left(control_plane)
    assert control_plane.manager.scheduler.holders()["GPU-simulated-a10g-0"] is None

    write_kernelspec(Path(jp_kernel_dir) / "cellhop-nopython", "A10G", python="/nonexistent/bin/python3")
    error = await kernels("cellhop-nopython", expect=400)
    assert "/nonexistent/bin/python3" in error["message"] and "died" not in error["message"], error
    assert _nothing_left(control_plane)


# -- culling and reconnecting ------------------------------------------------------------------------
@pytest.mark.parametrize("server_extra", [{"MappingKernelManager": {"cull_idle_timeout": 2, "cull_interval": 1}}])
async def test_an_idle_gpu_kernel_is_culled_and_its_gpu_freed(kernels, jp_serverapp, control_plane, notebook_dir):
    kid = await kernels("cellhop-a10g")
    [container] = container_of(control_plane, kid[:8])
    km = jp_serverapp.kernel_manager
    await wait_for(lambda: kid not in km, timeout=20, what="the idle kernel to be culled")
    await wait_for(lambda: container.phase.value == "exited", timeout=10, what="its container to stop")
    assert control_plane.manager.scheduler.holders()["GPU-simulated-a10g-0"] is None


async def test_provisioner_info_reconnects_to_a_running_container_or_finds_it_gone(
        kernels, jp_serverapp, control_plane, notebook_dir):
    from jupyter_client.asynchronous import AsyncKernelClient

    from cellhop.kernel.provisioner import CellhopProvisioner

    kid = await kernels("cellhop-a10g")
    km = jp_serverapp.kernel_manager.get_kernel(kid)
    info = json.loads(json.dumps(await km.provisioner.get_provisioner_info()))  # survives being stored as JSON
    [container] = container_of(control_plane, kid[:8])
    assert info["container_id"] == container.id

    # as a restarted server makes it: its kernel manager (the parent) hands it the server's control plane
    again = CellhopProvisioner(kernel_id=kid, kernel_spec=km.kernel_spec, parent=km)
    await again.load_provisioner_info(info)
    assert again.has_process and await again.poll() is None
    kc = AsyncKernelClient()
    kc.load_connection_info(again.connection_info)
    kc.start_channels()
    try:
        reply = await kc.kernel_info(reply=True, timeout=10)
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()

    gone = CellhopProvisioner(kernel_id="x" * 8, kernel_spec=km.kernel_spec, parent=km)
    await gone.load_provisioner_info({**info, "container_id": "not-a-container"})
    assert await gone.poll() not in (None, 0)
    await gone.cleanup()  # nothing to stop, no error
    assert not gone.has_process and container.phase.value == "ready"


# -- the control plane's restart and interrupt routes (what the provisioner uses over HTTP) -----------
async def test_restart_and_interrupt_routes_through_the_http_control_plane(jp_fetch, jp_serverapp, control_plane,
                                                                             http_server_client):
    from cellhop.kernel.http_control_plane import HttpControlPlane
    from cellhop.server_ext.api.base import KERNEL_TOKEN_SETTING
    from cellhop.container import ContainerSpec
    from cellhop.server_ext.kernel_tokens import token_for

    loop = asyncio.get_running_loop()
    client = HttpControlPlane(jp_serverapp.connection_url,
                              token_for(jp_serverapp.web_app.settings[KERNEL_TOKEN_SETTING], "test-kernel"))

    def blocking(fn, *args):
        return loop.run_in_executor(None, lambda: fn(*args))

    started = await blocking(client.start, ContainerSpec(gpu="A10G", owner="http test"))
    container = control_plane.manager.get(started["id"])
    pid = container.handle.pid
    await blocking(client.interrupt, started["id"])
    restarted = await blocking(client.restart, started["id"])
    assert restarted["id"] == started["id"] and restarted["phase"] == "ready"
    assert restarted["connection_info"] == started["connection_info"]  # the same ports and key
    assert container.handle.pid != pid and [g.type for g in container.gpus] == ["A10G"]
    r = await jp_fetch("cellhop", "api", "containers", started["id"], "restart", method="POST", body="",
                       headers={"Authorization": ""}, raise_error=False)
    assert r.code == 403 and container.handle.pid != pid
    await blocking(client.stop, started["id"])
    r = await jp_fetch("cellhop", "api", "containers", started["id"], "restart", method="POST", body="",
                       raise_error=False)
    assert r.code == 409 and "exited" in json.loads(r.body)["message"]
    client.close()


async def test_a_forced_restart_also_keeps_the_container_and_its_gpu(kernels, jp_serverapp, control_plane,
                                                                     notebook_dir):
    kid = await kernels("cellhop-a10g")
    [container] = container_of(control_plane, kid[:8])
    pid = container.handle.pid
    await jp_serverapp.kernel_manager.restart_kernel(kid, now=True)  # what the auto-restarter does
    await asyncio.sleep(2.5)  # past the provisioner's kill grace: the container must still be there
    assert container_of(control_plane, kid[:8]) == [container] and container.phase.value == "ready"
    assert container.handle.pid != pid
    assert control_plane.manager.scheduler.holders()["GPU-simulated-a10g-0"]["container"] == container.id
    kc = await client_of(jp_serverapp, kid)
    content, out = await run(kc, "print(6 * 7)")
    assert out.strip() == "42"
    kc.stop_channels()


# -- the server shutting down with a GPU kernel running ---------------------------------------------------
def test_a_server_shutting_down_with_a_gpu_kernel_stops_its_container_without_a_second_control_plane(runtime_root):
    import http.client
    import signal

    from processes import container_kernel_pids, wait_until
    from server_process import ServerProcess

    jupyter_runtime = runtime_root / "jrt"  # where a stray default control plane would make cellhop/
    server = ServerProcess(runtime_root, simulated_gpus="H100:1",
                           env={"JUPYTER_RUNTIME_DIR": str(jupyter_runtime)}).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=90)
        conn.request("POST", "/api/kernels", body=json.dumps({"name": "cellhop-h100", "path": ""}),
                     headers={"Authorization": f"token {server.token}"})
        response = conn.getresponse()
        kernel = json.loads(response.read())
        conn.close()
        assert response.status == 201, kernel
        _, listed = server.api("GET", "containers")
        [container] = listed["containers"]
        assert container["phase"] == "ready" and kernel["id"][:8] in container["owner"]
        assert container_kernel_pids(runtime_root)
    finally:
        assert server.stop(signal.SIGTERM) == 0, server.log()[-3000:]
    log = server.log()
    assert not (jupyter_runtime / "cellhop").exists(), log[-3000:]  # no default control plane was made
    wait_until(lambda: not container_kernel_pids(runtime_root), timeout=10, what="the container to be gone")
    assert "Traceback" not in log, log[-3000:]


def test_a_server_stops_on_sigterm_after_gpu_kernel_launches_failed(runtime_root):
    """A failed launch (a kernel that cannot start; a GPU type this host has not) must not keep the server
    from stopping: jupyter_client keeps a failed start's id among its pending kernels, and jupyter_server's
    shutdown of every kernel then failed on it ("Kernel does not exist"), so the server never exited (seen:
    the browser tests' JupyterLab SIGKILLed after 30 s of trying to stop)."""
    import http.client
    import signal

    from server_process import ServerProcess

    kernels = runtime_root / "jupyter-path" / "kernels"
    write_kernelspec(kernels / "cellhop-broken", "H100", python="/bin/false")  # its kernel dies while starting
    write_kernelspec(kernels / "cellhop-a100", "A100-80GB")  # a GPU type this host does not have
    server = ServerProcess(runtime_root, simulated_gpus="H100:1",
                           env={"JUPYTER_PATH": str(runtime_root / "jupyter-path")}).start()
    try:
        # a kernel that starts (with none, jupyter_server skips its kernel clean-up), then two that cannot
        for name, status in (("python3", 201), ("cellhop-broken", 500), ("cellhop-a100", 400)):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
            conn.request("POST", "/api/kernels", body=json.dumps({"name": name, "path": ""}),
                         headers={"Authorization": f"token {server.token}"})
            response = conn.getresponse()
            answer = response.read()
            conn.close()
            assert response.status == status, (name, response.status, answer)
    finally:
        code = server.stop(signal.SIGTERM, timeout=30)
    log = server.log()
    assert code == 0, f"the server did not stop cleanly on SIGTERM (exit {code}):\n{log[-3000:]}"
    assert "Kernel does not exist" not in log, log[-3000:]
