"""Volumes from outside a container: the Python API and the CLI round trip, uploads land whole or not at
all, quotas hold, and a mounted volume cannot be deleted (from this process or another)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cellhop.container import ContainerSpec
from cellhop.errors import (VolumeConflict, VolumeFileNotFound, VolumeInUse, VolumeNotFound,
                            VolumeQuotaExceeded)
from cellhop.server_ext.volumes import VolumeStore


@pytest.fixture
def state(runtime_root):
    return runtime_root / "state"


@pytest.fixture
def store(state):
    return VolumeStore(state / "volumes")


@pytest.fixture
def embedded(runtime_root, state):
    """This process's control plane client, embedded, over a private state directory."""
    from cellhop.kernel.control_client import use_control_plane
    from cellhop.kernel.embedded_control_plane import EmbeddedControlPlane
    from cellhop.server_ext.config import Cellhop

    client = EmbeddedControlPlane(Cellhop(simulated_gpus="H100:1", runtime_root=str(runtime_root),
                                          state_dir=str(state)))
    with use_control_plane(client):
        yield client
    client.close()


def cli(state, *args, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLHOP_CONTROL")}
    done = subprocess.run([sys.executable, "-m", "cellhop.server_ext.cli", *args, "--state-dir", str(state)],
                          input=stdin, capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert done.returncode == 0, done.stderr
    return done


# -- round trips --------------------------------------------------------------------------------------
def test_python_api_round_trip(embedded, tmp_path, state):
    import cellhop

    vol = cellhop.Volume("datasets")
    src = tmp_path / "train.csv"
    src.write_text("a,b\n1,2\n")
    folder = tmp_path / "raw"
    (folder / "sub").mkdir(parents=True)
    (folder / "x.bin").write_bytes(b"\x00\x01" * 1000)
    (folder / "sub" / "y.txt").write_text("y")

    assert [e["path"] for e in vol.put(src)] == ["train.csv"]  # made on first use
    assert sorted(e["path"] for e in vol.put(folder, "raw")) == ["raw/sub/y.txt", "raw/x.bin"]
    vol.put(b"blob", "blobs/one.bin")
    assert [(e["name"], e["type"]) for e in vol.ls()] == [("blobs", "dir"), ("raw", "dir"), ("train.csv", "file")]
    assert vol.ls("raw/x.bin")[0]["size"] == 2000

    got = vol.get("train.csv", tmp_path / "copy.csv")
    assert got.read_text() == "a,b\n1,2\n"
    assert vol.read_bytes("blobs/one.bin") == b"blob"

    vol.mv("train.csv", "csv/train.csv")
    assert vol.read_bytes("csv/train.csv") == b"a,b\n1,2\n"
    with pytest.raises(VolumeFileNotFound, match="train.csv"):
        vol.read_bytes("train.csv")
    vol.mkdir("empty/deeper")
    with pytest.raises(VolumeConflict, match="not empty"):
        vol.rm("raw")
    vol.rm("raw", recursive=True)
    vol.rm("empty/deeper")
    usage = vol.usage()
    assert usage == {"bytes": len("a,b\n1,2\n") + 4, "files": 2, "quota": 100 * 2**30}
    assert [v["name"] for v in cellhop.Volume.list()] == ["datasets"]
    assert (state / "volumes" / "datasets" / "data" / "csv" / "train.csv").exists()

    vol.delete()
    assert cellhop.Volume.list() == []
    with pytest.raises(VolumeNotFound, match="cellhop volume create"):
        embedded.storage().volume_ls("datasets")


def test_cli_round_trip(state, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(os.urandom(100_000))
    (tmp_path / "notes.txt").write_text("hello\n")

    assert "quota 1.0 GiB" in cli(state, "volume", "create", "ckpt", "--quota", "1G").stdout
    cli(state, "volume", "put", "ckpt", str(tmp_path / "model"))
    cli(state, "volume", "put", "ckpt", str(tmp_path / "notes.txt"), "docs/")
    listing = json.loads(cli(state, "volume", "ls", "ckpt", "--json").stdout)
    assert [(e["path"], e["type"]) for e in listing] == [("docs", "dir"), ("model", "dir")]
    assert "model/weights.bin" in cli(state, "volume", "ls", "ckpt", "model").stdout
    cli(state, "volume", "get", "ckpt", "model/weights.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == (tmp_path / "model" / "weights.bin").read_bytes()
    cli(state, "volume", "mv", "ckpt", "docs/notes.txt", "notes.txt")
    cli(state, "volume", "rm", "ckpt", "docs")
    usage = json.loads(cli(state, "volume", "usage", "ckpt", "--json").stdout)
    assert usage == {"bytes": 100_006, "files": 2, "quota": 2**30}
    assert "ckpt" in cli(state, "volume", "list").stdout

    missing = cli(state, "volume", "get", "ckpt", "nope.bin", check=False)
    assert missing.returncode == 1 and "no file or folder 'nope.bin'" in missing.stderr
    not_empty = cli(state, "volume", "rm", "ckpt", "model", check=False)
    assert not_empty.returncode == 1 and "rm -r" in not_empty.stderr
    cli(state, "volume", "rm", "ckpt", "model", "-r")
    cli(state, "volume", "delete", "ckpt", "--yes")
    assert "no volumes" in cli(state, "volume", "list").stdout


# -- no data lost or half-written -----------------------------------------------------------------------
def test_an_aborted_upload_leaves_the_previous_version(store):
    store.create("v")
    store.put("v", "model.bin", b"version 1")
    upload = store.upload("v", "model.bin")
    upload.write(b"version 2, half of it")
    assert store.read_chunks("v", "model.bin").__next__() == b"version 1"  # not visible while written
    upload.abort()
    assert b"".join(store.read_chunks("v", "model.bin")) == b"version 1"
    assert list((store.root / "v" / "staging").iterdir()) == []
    store.put("v", "model.bin", iter([b"version ", b"3"]))
    assert b"".join(store.read_chunks("v", "model.bin")) == b"version 3"


KILLED_MID_UPLOAD = textwrap.dedent("""
    import sys
    from cellhop.server_ext.volumes import VolumeStore
    store = VolumeStore(sys.argv[1])
    up = store.upload("v", "data/big.bin")
    up.write(b"x" * (8 << 20))
    print("half", flush=True)
    sys.stdin.readline()  # killed here
""")


def test_a_process_killed_mid_upload_leaves_the_previous_version(store, python_child):
    store.create("v")
    store.put("v", "data/big.bin", b"old")
    child = python_child(KILLED_MID_UPLOAD, str(store.root))
    child.expect("half", timeout=30)
    staging = store.root / "v" / "staging"
    assert len(list(staging.iterdir())) == 1  # written aside
    child.kill(signal.SIGKILL)
    assert b"".join(store.read_chunks("v", "data/big.bin")) == b"old"
    assert store.usage("v")["bytes"] == 3
    store.put("v", "other.bin", b"new")  # the next upload sweeps what the dead one left
    assert list(staging.iterdir()) == []


def test_quota_refuses_an_upload_and_keeps_the_old_file(store):
    store.create("small", quota="1M")
    store.put("small", "a.bin", b"a" * 600_000)
    with pytest.raises(VolumeQuotaExceeded, match="quota of 1.0 MiB"):
        store.put("small", "b.bin", b"b" * 600_000)  # size known up front
    with pytest.raises(VolumeQuotaExceeded):
        store.put("small", "b.bin", iter([b"b" * 300_000, b"b" * 300_000]))  # found while streaming
    assert [e["path"] for e in store.ls("small")] == ["a.bin"]
    store.put("small", "a.bin", b"c" * 1_000_000)  # replacing a file counts only the difference
    assert store.usage("small")["bytes"] == 1_000_000
    assert list((store.root / "small" / "staging").iterdir()) == []


def test_folders_and_files_do_not_replace_each_other(store):
    store.create("v")
    store.put("v", "d/f.txt", b"1")
    with pytest.raises(VolumeConflict, match="is a folder"):
        store.put("v", "d", b"2")
    with pytest.raises(VolumeConflict):
        store.put("v", "d/f.txt/g", b"3")
    with pytest.raises(VolumeConflict, match="into itself"):
        store.mv("v", "d", "d/inner")
    with pytest.raises(VolumeConflict, match="is a folder"):
        store.open("v", "d")
    assert b"".join(store.read_chunks("v", "d/f.txt")) == b"1"


# -- deleting a mounted volume ----------------------------------------------------------------------------
def test_deleting_a_mounted_volume_is_refused_naming_the_container(make_manager, state):
    manager = make_manager(state_dir=str(state))
    container = manager.start(ContainerSpec(gpu="none", owner="notebook A", volumes=["ds:/data"]))
    with pytest.raises(VolumeInUse) as refused:
        manager.storage.volumes.delete("ds")
    assert container.id in str(refused.value) and "notebook A" in str(refused.value) and "/data" in str(refused.value)
    assert manager.storage.volumes.info("ds")["mounted_by"] == [
        {"container": container.id, "owner": "notebook A", "path": "/data", "read_only": False}]
    manager.stop(container.id)
    manager.storage.volumes.delete("ds")
    assert manager.storage.volumes.names() == []


OTHER_PROCESS_MOUNTS = textwrap.dedent("""
    import sys
    from cellhop.server_ext.config import Cellhop
    from cellhop.container import ContainerSpec
    from cellhop.server_ext.container_manager import ContainerManager
    manager = ContainerManager(Cellhop(simulated_gpus="", runtime_root=sys.argv[1], state_dir=sys.argv[2]))
    c = manager.start(ContainerSpec(gpu="none", owner="other process", volumes=["shared:/data:ro"]))
    print("id", c.id, flush=True)
    sys.stdin.readline()
    manager.close()
    print("closed", flush=True)
""")


def test_a_volume_mounted_by_another_control_plane_cannot_be_deleted(python_child, runtime_root, state):
    store = VolumeStore(state / "volumes")
    store.create("shared")
    child = python_child(OTHER_PROCESS_MOUNTS, str(runtime_root / "other"), str(state))
    container_id = child.expect("id ", timeout=60).split()[1]
    with pytest.raises(VolumeInUse, match=f"container {container_id} of other process at /data"):
        store.delete("shared")
    child.send("")
    child.expect("closed", timeout=30)
    store.delete("shared")
    assert not store.exists("shared")


def test_a_read_only_mount_needs_an_existing_volume(make_manager, state):
    manager = make_manager(state_dir=str(state))
    with pytest.raises(VolumeNotFound, match="no volume 'missing'"):
        manager.start(ContainerSpec(gpu="none", volumes=["missing:/data:ro"]))
    assert manager.list() == []


def test_big_streamed_put_matches_its_hash(store):
    store.create("v")
    chunk = os.urandom(1 << 20)
    digest = hashlib.sha256()
    for _ in range(64):
        digest.update(chunk)
    t0 = time.monotonic()
    store.put("v", "big.bin", (chunk for _ in range(64)))
    got = hashlib.sha256()
    for part in store.read_chunks("v", "big.bin"):
        got.update(part)
    assert got.hexdigest() == digest.hexdigest()
    assert time.monotonic() - t0 < 20
    assert Path(store.root / "v" / "data" / "big.bin").stat().st_size == 64 << 20


def test_a_kernelspec_config_names_volumes_and_secrets():
    from jupyter_client.kernelspec import KernelSpec

    from cellhop.kernel.provisioner import CellhopProvisioner

    provisioner = CellhopProvisioner(kernel_spec=KernelSpec(argv=[sys.executable], display_name="H100", env={}),
                                     kernel_id="k1", gpu="none", volumes=["datasets:/data", "weights:/models:ro"],
                                     secrets=["hf"])
    spec = provisioner._spec([sys.executable], {"cwd": "/tmp"})
    assert spec.volumes == [{"name": "datasets", "path": "/data", "read_only": False},
                            {"name": "weights", "path": "/models", "read_only": True}]
    assert spec.secrets == ["hf"]
