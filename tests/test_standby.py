"""Standby containers (issue 14): started without a GPU, claimed by a request, never seen by another.

Real control planes, real bubblewrap containers over the simulated inventory; the
device-file test makes a stand-in NVIDIA device node on the host (root only), as a
real GPU's would be, and removes it afterwards.
"""

from __future__ import annotations

import ast
import os
import stat
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from processes import container_kernel_pids, wait_until

from cellhop.container import ContainerSpec, Phase
from cellhop.wire import KernelConnection


def ask(container, **expressions) -> dict:
    """Evaluate Python expressions in a container's kernel (user_expressions of an empty execute)."""
    conn = KernelConnection(container.connection_info, channels=("shell",))
    try:
        msg_id = conn.send("shell", "execute_request", {"code": "", "silent": True, "store_history": False,
                                                       "user_expressions": expressions})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reply = conn.recv("shell", timeout=1.0)
            if reply is not None and reply.parent_id == msg_id:
                out = {}
                for name, value in reply.content["user_expressions"].items():
                    assert value["status"] == "ok", value
                    out[name] = ast.literal_eval(value["data"]["text/plain"])
                return out
        raise AssertionError("the container did not answer")
    finally:
        conn.close()


GPU_VIEW = dict(
    cuda="__import__('os').environ.get('CUDA_VISIBLE_DEVICES')",
    nvidia="__import__('os').environ.get('NVIDIA_VISIBLE_DEVICES')",
    gpu_type="__import__('os').environ.get('CELLHOP_GPU_TYPE')",
    own_id="__import__('os').environ.get('CELLHOP_CONTAINER_ID')",
    devices="sorted(n for n in __import__('os').listdir('/dev') if n.startswith('nvidia') "
            "and __import__('os').path.exists('/dev/' + n))",
)


def ready_standbys(manager) -> list:
    """The standbys a request can claim now (started, preloads imported)."""
    pool = manager.standby
    with pool._lock:
        return [c for ready in pool._ready.values() for c in ready if c.phase == Phase.READY]


def wait_for_standbys(manager, n: int = 1) -> list:
    wait_until(lambda: len(ready_standbys(manager)) >= n, timeout=60, what=f"{n} standby container(s) ready")
    return ready_standbys(manager)


def test_a_standby_holds_no_gpu_until_claimed_and_then_exactly_its_own(make_manager):
    manager = make_manager(standby=1)
    standby, = wait_for_standbys(manager)
    before = ask(standby, **GPU_VIEW)
    assert before["cuda"] == "" and before["nvidia"] == "void" and before["gpu_type"] == ""
    assert before["devices"] == []
    assert standby.gpus == () and standby.to_dict()["standby"] is True

    claimed = manager.start(ContainerSpec(gpu="H100", owner="notebook a"))
    assert claimed.claimed_from == standby.id and claimed.id != standby.id
    assert standby.id not in {c.id for c in manager.list()}  # the standby's record went with the claim
    after = ask(claimed, **GPU_VIEW)
    gpu, = claimed.gpus
    assert after["cuda"] == gpu.uuid and after["nvidia"] == gpu.uuid and after["gpu_type"] == "H100"
    assert after["own_id"] == claimed.id
    assert claimed.spec.owner == "notebook a" and claimed.to_dict()["standby"] is False

    # the pool starts another; it holds nothing of the claimed one's GPU, and no one else gets that GPU
    fresh, = wait_for_standbys(manager)
    assert fresh.id != standby.id
    assert ask(fresh, **GPU_VIEW)["cuda"] == ""
    second = manager.start(ContainerSpec(gpu="H100", owner="notebook b"))
    assert second.claimed_from == fresh.id
    assert {g.uuid for g in second.gpus}.isdisjoint({g.uuid for g in claimed.gpus})

    # a claimed container is never given back: stopped, it is gone, and the next standby is a new process
    manager.stop(claimed.id)
    manager.stop(second.id)
    third, = wait_for_standbys(manager)
    assert third.id not in (standby.id, fresh.id)


def test_requests_a_standby_cannot_be_start_fresh(make_manager, runtime_root):
    manager = make_manager(standby=1)
    wait_for_standbys(manager)
    # (a working folder no longer starts fresh where the server is root: tests/test_remote_workdir.py)
    for spec in (ContainerSpec(gpu="H100", env={"X": "1"}), ContainerSpec(gpu="H100", cpus=1)):
        container = manager.start(spec)
        assert container.claimed_from is None
        manager.stop(container.id)
    assert len(ready_standbys(manager)) == 1  # still there, unclaimed


def test_standbys_preload_modules_and_stop_with_the_control_plane(make_manager):
    manager = make_manager(standby=1, preload=["numpy", "no_such_module_xyz"])
    wait_for_standbys(manager)
    container = manager.start(ContainerSpec(gpu="A10G"))
    assert container.claimed_from
    assert ask(container, numpy="'numpy' in __import__('sys').modules")["numpy"] is True
    assert "preloading no_such_module_xyz failed" in manager.logs(container.id)
    view = manager.standby.view()
    assert view[0]["image"] is None and view[0]["wanted"] == 1 and "numpy" in view[0]["preload"]
    root = manager.root
    manager.close()
    assert not container_kernel_pids(root), "standby or claimed containers outlived their control plane"


def test_a_standby_is_not_claimed_by_a_request_stopped_while_queued(make_manager):
    manager = make_manager(simulated_gpus="H100:1", standby=1)
    standby, = wait_for_standbys(manager)
    holder = manager.start(ContainerSpec(gpu="H100"))  # claims the standby, holds the only H100
    assert holder.claimed_from == standby.id
    fresh, = wait_for_standbys(manager)
    import threading

    errors = []
    waiter = threading.Thread(target=lambda: _start_expecting_stop(manager, errors))
    waiter.start()
    wait_until(lambda: any(c.phase == Phase.QUEUED for c in manager.list()), timeout=10, what="a queued request")
    queued = next(c for c in manager.list() if c.phase == Phase.QUEUED)
    manager.stop(queued.id)
    waiter.join(timeout=30)
    assert errors and "stopped" in errors[0]
    assert fresh.phase == Phase.READY and fresh in ready_standbys(manager)  # untouched


def _start_expecting_stop(manager, errors):
    try:
        manager.start(ContainerSpec(gpu="H100"))
    except Exception as exc:
        errors.append(str(exc))


@contextmanager
def stand_in_gpu_device(minor: int):
    """/dev/nvidia<minor> and /dev/nvidiactl as character devices with /dev/null's numbers (root only)."""
    made = []
    try:
        for name in (f"nvidia{minor}", "nvidiactl"):
            path = Path("/dev") / name
            if not path.exists():
                os.mknod(path, stat.S_IFCHR | 0o666, os.stat("/dev/null").st_rdev)
                os.chmod(path, 0o666)
                made.append(path)
        yield
    finally:
        for path in made:
            path.unlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="making device files (and a claim's device files) needs root")
def test_a_claim_makes_only_the_leased_gpus_device_files_visible(runtime_root):
    from cellhop.inventory import Gpu, Inventory
    from cellhop.server_ext.config import Cellhop
    from cellhop.server_ext.container_manager import ContainerManager

    minor = 57  # no real GPU has this one here
    if Path(f"/dev/nvidia{minor}").exists():
        pytest.skip("the host has the stand-in's device file")
    with stand_in_gpu_device(minor):
        gpu = Gpu(index=0, uuid="GPU-stand-in-57", name="stand-in", type="H100", memory_total=80 << 30, minor=minor,
                  simulated=False)
        manager = ContainerManager(Cellhop(runtime_root=str(runtime_root), standby=2),
                                   inventory=Inventory(gpus=(gpu,)))
        try:
            first, second = wait_for_standbys(manager, 2)
            for standby in (first, second):  # links named like the host's devices, dangling
                seen = ask(standby, devices=GPU_VIEW["devices"],
                           links="sorted(n for n in __import__('os').listdir('/dev') if n.startswith('nvidia'))")
                assert seen["devices"] == [] and f"nvidia{minor}" in seen["links"]
            claimed = manager.start(ContainerSpec(gpu="H100"))
            assert claimed.claimed_from in (first.id, second.id)
            other = second if claimed.claimed_from == first.id else first
            now = ask(claimed, devices=GPU_VIEW["devices"],
                      opened=f"len(open('/dev/nvidia{minor}', 'rb').read(10))",
                      writable=f"__import__('os').access('/dev/cellhop-gpu', __import__('os').W_OK)")
            assert now["devices"] == sorted([f"nvidia{minor}", "nvidiactl"]) and now["opened"] == 0
            assert now["writable"] is False  # the container cannot add device files of its own
            assert ask(other, devices=GPU_VIEW["devices"])["devices"] == []  # the other standby: still none
        finally:
            manager.close()
        wait_until(lambda: not container_kernel_pids(manager.root), timeout=15, what="containers gone")


def test_an_image_a_request_used_gets_standbys_with_its_preloads(runtime_root, tmp_path):
    from cellhop.image_spec import Image
    from cellhop.server_ext.config import Cellhop
    from cellhop.server_ext.control_plane import ControlPlane

    plane = ControlPlane(Cellhop(runtime_root=str(runtime_root), state_dir=str(tmp_path / "state"),
                                 simulated_gpus="H100:1", standby=1))
    try:
        manager = plane.manager
        info = plane.images.build(Image.current().preload("json", "numpy").to_json())
        wait_for_standbys(manager)  # the default image's
        first = manager.start(ContainerSpec(gpu="H100", image=info["key"]))
        assert first.claimed_from is None  # no standby of that image yet: now the pool keeps one
        manager.stop(first.id)
        wait_until(lambda: any(k["image"] == info["key"] and k["ready"] for k in manager.standby.view()),
                   timeout=60, what="a standby of the image")
        second = manager.start(ContainerSpec(gpu="H100", image=info["key"]))
        assert second.claimed_from is not None
        seen = ask(second, numpy="'numpy' in __import__('sys').modules",
                   image="__import__('os').environ.get('CELLHOP_IMAGE')")
        assert seen == {"numpy": True, "image": info["key"]}
    finally:
        plane.close()
