"""What a container can see of its host: none of cellhop's secrets, volumes or keys, only its GPUs' devices.

The end-to-end test keeps the state directory and the Jupyter runtime folder outside /tmp (the sandbox's
private /tmp would hide them anyway, which is how earlier tests missed that a container could read them):
a remote cell looks for the secrets, a volume it did not mount, a sibling container's connection file and
the notebook kernel's own connection file, and finds none, while its own volume and working folder work.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from cellhop.container import ContainerSpec
from cellhop.server_ext.container_record import Container
from cellhop.inventory import Gpu
from cellhop.server_ext.sandbox import (NVIDIA_CONTROL_DEVICES, bubblewrap_argv, find_bubblewrap,
                                        folders_to_hide, gpu_device_files)
from cellhop.server_ext.secrets import SecretStore
from cellhop.server_ext.volumes import VolumeStore
from kernel_fixtures import local_json, start_cellhop_kernel

VALUE = "sk-isolation-4b9e21d7c3"
OTHER_VOLUME_TEXT = "in a volume this container did not mount"


def _mount_ops(argv: list[str]) -> list[tuple[str, ...]]:
    """The mount options of a bubblewrap command line, as (option, args...) in order."""
    arity = {"--tmpfs": 1, "--bind": 2, "--ro-bind": 2, "--ro-bind-try": 2, "--dev-bind-try": 2, "--dev": 1,
             "--proc": 1, "--symlink": 2, "--remount-ro": 1}
    ops, i = [], 1
    while i < len(argv) and argv[i] != "--":
        n = arity.get(argv[i], 0)
        ops.append(tuple(argv[i:i + 1 + n]))
        i += 1 + n
    return ops


# ---------------------------------------------------------------- the command line


def test_hidden_folders_are_covered_before_what_is_bound_back(tmp_path):
    state, runtime = Path("/srv/cellhop-state"), Path("/srv/jupyter-runtime")
    own = runtime / "cellhop" / "containers" / "abc"
    argv = bubblewrap_argv("bwrap", [own], own / "work", ro_binds=[(state / "images" / "layers",) * 2],
                           volumes=[(state / "volumes" / "mine" / "data", "/data", False)],
                           hidden=[state, runtime])
    ops = _mount_ops(argv)
    at = {op: n for n, op in enumerate(ops)}
    assert at[("--tmpfs", str(state))] < at[("--ro-bind", str(state / "images" / "layers"),
                                              str(state / "images" / "layers"))]
    assert at[("--tmpfs", str(runtime))] < at[("--bind", str(own), str(own))]
    assert ("--bind", str(state / "volumes" / "mine" / "data"), "/data") in at
    assert at[("--tmpfs", "/tmp")] < at[("--tmpfs", str(state))]


def test_a_bound_folder_above_a_hidden_one_does_not_show_it_again():
    """A kernel's working folder (the notebook's, say /root) holding the state directory: hidden after the bind."""
    home, state = Path("/root"), Path("/root/.local/share/jupyter/cellhop")
    ops = _mount_ops(bubblewrap_argv("bwrap", [home], home, hidden=[state]))
    assert ops.index(("--bind", str(home), str(home))) < ops.index(("--tmpfs", str(state)))


def test_folders_to_hide_keeps_existing_outermost_folders_outside_tmp(tmp_path):
    outside = Path(tempfile.mkdtemp(prefix="ch-hide-", dir="/var/tmp"))
    try:
        (outside / "a" / "b").mkdir(parents=True)
        got = folders_to_hide([outside / "a" / "b", outside / "a", outside / "missing", tmp_path, None, Path("/")])
        assert got == [(outside / "a").resolve()]
    finally:
        shutil.rmtree(outside)


def test_gpu_device_files_are_the_control_devices_and_the_held_gpus_only():
    assert gpu_device_files([]) == [] and gpu_device_files([None, None]) == []
    assert gpu_device_files([3, None, 0]) == [*NVIDIA_CONTROL_DEVICES, "/dev/nvidia3", "/dev/nvidia0"]
    ops = _mount_ops(bubblewrap_argv("bwrap", [], Path("/"), devices=gpu_device_files([5])))
    binds = [op for op in ops if op[0] == "--dev-bind-try"]
    assert [op[1] for op in binds] == ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools",
                                       "/dev/nvidia-modeset", "/dev/nvidia-caps", "/dev/nvidia5"]
    assert all(op[1] == op[2] for op in binds)
    assert ops.index(("--dev", "/dev")) < ops.index(binds[0])  # on top of the minimal /dev, not under it


class _Allocation:
    def __init__(self, gpus):
        self.gpus = tuple(gpus)


class _Started:
    pid = 1

    def poll(self):
        return 0


def _launched_argv(tmp_path, gpus) -> list[str]:
    """The command LocalRuntime.launch runs for a container holding `gpus` (nothing is started)."""
    from cellhop.server_ext.runtimes.local import LocalRuntime

    runtime = LocalRuntime(tmp_path / "containers", sandbox="auto")
    if runtime.bwrap is None:
        runtime.bwrap = "/usr/bin/bwrap"  # the command line is the same; nothing runs here
    seen = []
    runtime._spawner.popen = lambda argv, **kwargs: seen.append(argv) or _Started()
    container = Container(id="c0ffee000001", spec=ContainerSpec())
    container.allocation = _Allocation(gpus)
    container.directory = tmp_path / "containers" / container.id
    container.directory.mkdir(parents=True)
    runtime.launch(container)
    runtime.cleanup(container)  # its control groups, its log's pump
    runtime.close()
    return seen[0]


def _gpu(index, minor, simulated=False):
    return Gpu(index=index, uuid=f"GPU-{index}", name="NVIDIA H100 80GB HBM3", type="H100",
               memory_total=80 << 30, simulated=simulated, minor=minor)


def test_a_container_gets_the_device_files_of_its_own_gpus_only(tmp_path):
    argv = _launched_argv(tmp_path, [_gpu(1, 4), _gpu(3, 6)])  # the host has more; it holds these two
    binds = [op[1] for op in _mount_ops(argv) if op[0] == "--dev-bind-try"]
    assert binds == [*NVIDIA_CONTROL_DEVICES, "/dev/nvidia4", "/dev/nvidia6"]
    assert not [op for op in _mount_ops(argv) if op[0] == "--dev-bind-try" and op[1] in ("/dev/nvidia1",
                                                                                           "/dev/nvidia3")]


def test_simulated_gpus_and_cpu_only_containers_get_no_nvidia_device(tmp_path):
    for gpus in ([], [_gpu(0, None, simulated=True)], [_gpu(0, 0, simulated=True)], [_gpu(0, None)]):
        argv = _launched_argv(tmp_path / str(len(list(tmp_path.iterdir()))), gpus)
        assert not [a for a in argv if a.startswith("/dev/nvidia")], gpus


def test_the_inventory_records_nvml_minor_numbers(fake_nvml_dir):
    from test_gpu_inventory import INVENTORY_SCRIPT, run_with_nvml

    inventory, _ = run_with_nvml(fake_nvml_dir, INVENTORY_SCRIPT,
                                 FAKE_NVML_DEVICES="NVIDIA H100 80GB HBM3:81559:0;Tesla T4:15360:na:nominor;"
                                                   "NVIDIA L4:23034:0")
    assert [(g["index"], g["minor"]) for g in inventory["gpus"]] == [(0, 7), (1, None), (2, 9)]


def test_a_simulated_inventory_has_no_minor_numbers():
    from cellhop.server_ext.gpu_inventory import load_inventory

    assert [g.minor for g in load_inventory("H100:2").gpus] == [None, None]


# ---------------------------------------------------------------- end to end, in a real sandbox


@pytest.fixture(scope="module")
def isolated():
    if find_bubblewrap() is None:
        pytest.skip("bubblewrap is not installed, so containers are not sandboxed")
    base = Path(tempfile.mkdtemp(prefix="ch-iso-", dir="/var/tmp"))  # not under /tmp: the sandbox hides /tmp
    runtime, state = base / "rt", base / "state"
    runtime.mkdir()
    SecretStore(state / "secrets").create("tok", {"API_TOKEN": VALUE})
    volumes = VolumeStore(state / "volumes")
    volumes.create("other")
    (volumes.data_path("other") / "private.txt").write_text(OTHER_VOLUME_TEXT)
    try:
        with start_cellhop_kernel(runtime_dir=str(runtime), extra_arguments=(f"--Cellhop.state_dir={state}",)) \
                as kernel:
            kernel.base, kernel.state = base, state
            yield kernel
    finally:
        shutil.rmtree(base, ignore_errors=True)


PROBE = """%%remote --workdir none --volume mine:/data --secret tok
import json, os
def look(path):
    try:
        return {"exists": os.path.exists(path), "list": sorted(os.listdir(path)) if os.path.isdir(path) else None,
                "text": open(path).read() if os.path.isfile(path) else None}
    except OSError as exc:
        return {"exists": True, "error": str(exc)}
with open("/data/written.txt", "w") as f:
    f.write("from the container")
with open("here.txt", "w") as f:
    f.write("in my working folder")
seen = {p: look(p) for p in PATHS}
own = os.path.join(CONTAINERS, os.environ["CELLHOP_CONTAINER_ID"], "sandbox", "connection.json")
print(json.dumps({"seen": seen, "own_key": "key" in json.load(open(own)), "me": os.environ["CELLHOP_CONTAINER_ID"],
                  "containers": sorted(os.listdir(CONTAINERS)), "cwd": os.getcwd(),
                  "here": open("here.txt").read(), "data": open("/data/written.txt").read(),
                  "token_set": bool(os.environ.get("API_TOKEN"))}))
"""


def test_a_container_sees_no_secret_foreign_volume_or_key_of_its_host(isolated):
    nb = isolated
    runtime, state = nb.base / "rt", nb.state
    containers = runtime / "cellhop" / "containers"
    nb.ok("import cellhop\n"
          "@cellhop.remote()\n"
          "def sibling():\n"
          "    import os\n"
          "    return os.environ['CELLHOP_CONTAINER_ID']")
    sibling = local_json(nb, "sibling.remote()")
    sibling_conn = containers / sibling / "sandbox" / "connection.json"
    # the notebook kernel's real connection file and a server's token file, where jupyter_server keeps them
    kernel_conn = runtime / "kernel-5e1f0c2a.json"
    kernel_conn.write_text(Path(nb.km.connection_file).read_text())
    (runtime / "jpserver-4242.json").write_text(json.dumps({"token": "server-token-9d8c7b6a"}))
    secret_file = state / "secrets" / "tok.json"
    other_file = state / "volumes" / "other" / "data" / "private.txt"
    # on the host, each of these holds something a container must never read
    assert json.loads(sibling_conn.read_text())["key"] and json.loads(kernel_conn.read_text())["key"]
    assert VALUE in secret_file.read_text() and other_file.read_text() == OTHER_VOLUME_TEXT
    paths = [str(p) for p in (state / "secrets", secret_file, state / "volumes", other_file, sibling_conn,
                              containers / sibling, kernel_conn, runtime, state)]
    nb.ok(f"PATHS = {paths!r}\nCONTAINERS = {str(containers)!r}")
    ran = nb.ok(PROBE)
    got = json.loads(ran.stdout.strip().splitlines()[-1])
    seen = got["seen"]
    for path in map(str, (state / "secrets", secret_file, state / "volumes", other_file, sibling_conn,
                          containers / sibling, kernel_conn)):
        assert seen[path] == {"exists": False, "list": None, "text": None}, (path, seen[path])
    assert not [name for name in seen[str(runtime)]["list"] if name.endswith(".json")]  # no kernel-*.json
    assert not seen[str(state)]["list"]  # empty, or not there at all (its 0700 parent is a tmpfs)
    assert got["containers"] == [got["me"]] and got["me"] != sibling  # only its own folder
    assert got["own_key"] and got["token_set"]
    assert got["here"] == "in my working folder" and got["cwd"] == str(containers / got["me"] / "sandbox" / "work")
    assert got["data"] == "from the container"
    assert (state / "volumes" / "mine" / "data" / "written.txt").read_text() == "from the container"
    assert VALUE not in ran.stdout and OTHER_VOLUME_TEXT not in ran.stdout and "server-token" not in ran.stdout
    nb.ok("sibling.shutdown()")


def test_a_container_in_an_image_sees_its_layers_but_not_the_rest_of_the_state_folder(make_manager, tmp_path):
    """The image's interpreter, environment and folders live under <state_dir>/images: bound back read-only."""
    import ast

    from cellhop.wire import KernelConnection
    from cellhop.server_ext.images.service import Images
    from cellhop.image_spec import Image

    if find_bubblewrap() is None:
        pytest.skip("bubblewrap is not installed, so containers are not sandboxed")
    state = Path(tempfile.mkdtemp(prefix="ch-iso-img-", dir="/var/tmp"))
    try:
        SecretStore(state / "secrets").create("tok", {"API_TOKEN": VALUE})
        (tmp_path / "shipped").mkdir()
        (tmp_path / "shipped" / "hello.txt").write_text("shipped with the image")
        manager = make_manager(state_dir=str(state))
        images = Images(state / "images")
        info = images.build(Image.current().env({"CHISO": "in the image"})
                            .add_local_dir(str(tmp_path / "shipped"), "shipped").to_json())
        container = manager.start(ContainerSpec(gpu="none", owner="tests", image=info["key"]))
        conn = KernelConnection(container.connection_info, channels=("shell",))
        try:
            reply = conn.request("shell", "execute_request", {
                "code": "import os, sys", "silent": False,
                "user_expressions": {"v": "(sys.executable, os.environ['CHISO'], open('shipped/hello.txt').read(), "
                                          f"os.path.exists({str(state / 'secrets')!r}), "
                                          f"sorted(os.listdir({str(state)!r})), os.access(sys.executable, os.W_OK))"},
            }, timeout=60).content
        finally:
            conn.close()
        assert reply["status"] == "ok", reply
        value = ast.literal_eval(reply["user_expressions"]["v"]["data"]["text/plain"])
        assert value == (images.store.runtime_view(info["key"])["python"], "in the image",
                         "shipped with the image", False, ["images"], False)
        manager.stop(container.id)
    finally:
        shutil.rmtree(state, ignore_errors=True)
