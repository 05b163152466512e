"""No way out of a volume: `..`, absolute paths, odd names, NUL bytes and symbolic links that point
outside are refused by every operation, through the store, the Python API and the CLI (the REST routes
are tried with the same list in test_volumes_rest.py), and nothing outside the volume changes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cellhop.volume_paths import VolumePathError, parse_mount, parse_path
from cellhop.server_ext.volumes import VolumeStore

HOSTILE = [
    "..", "../", "../x", "../../etc/passwd", "a/../../x", "a/../b", "a/b/../../..", "./../x",
    "../" * 20 + "etc/passwd", "/", "/etc/passwd", "//etc/passwd", "/tmp/../etc", "a/./b", "a//b", "./a",
    "a\x00b", "\x00", "x.txt\x00.png", "a\\..\\b", "..\\..\\x", "a\nb", "tab\there", "\x1b[31mred", "del\x7f",
    "n" * 256, "a/" * 2100 + "x",
]
BAD_VOLUME_NAMES = ["..", "../x", "a/b", "", ".hidden", "x\x00", "-rf", "a" * 64, "name.", "sp ace"]


@pytest.fixture
def world(runtime_root):
    """A volume with links a container could have made, and a folder outside it that must never change."""
    store = VolumeStore(runtime_root / "state" / "volumes")
    store.create("v")
    outside = runtime_root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("outside")
    data = store.data_path("v")
    store.put("v", "sub/ok.txt", b"inside")
    os.symlink(outside, data / "esc_abs")
    os.symlink("../../../outside", data / "esc_rel")
    os.symlink(outside / "secret.txt", data / "esc_file")
    os.symlink("sub", data / "inner_link")
    return store, outside


def snapshot(folder):
    return sorted((p.relative_to(folder).as_posix(), p.read_bytes() if p.is_file() else None)
                  for p in folder.rglob("*"))


def every_operation(store, path):
    """Each store operation on `path`, as (name, thunk)."""
    return [
        ("ls", lambda: store.ls("v", path)),
        ("put", lambda: store.put("v", path, b"pwned")),
        ("open", lambda: store.open("v", path)),
        ("rm", lambda: store.rm("v", path, recursive=True)),
        ("mv from", lambda: store.mv("v", path, "moved")),
        ("mv to", lambda: store.mv("v", "sub/ok.txt", path)),
        ("mkdir", lambda: store.mkdir("v", path)),
    ]


@pytest.mark.parametrize("path", HOSTILE, ids=[repr(p)[:40] for p in HOSTILE])
def test_every_store_operation_refuses_a_hostile_path(world, path):
    store, outside = world
    before = snapshot(outside)
    for name, op in every_operation(store, path):
        with pytest.raises(VolumePathError):
            op()
            pytest.fail(f"{name} accepted {path!r}")
    assert snapshot(outside) == before
    assert b"".join(store.read_chunks("v", "sub/ok.txt")) == b"inside"


def test_refusals_say_what_was_wrong():
    cases = {"../x": "contains '..'", "/etc/passwd": "is absolute", "a\x00b": "NUL byte", "a//b": "empty",
             "a\nb": "control character", "n" * 256: "longer than 255 bytes"}
    for path, words in cases.items():
        with pytest.raises(VolumePathError, match=words):
            parse_path(path)


@pytest.mark.parametrize("link", ["esc_abs", "esc_rel"])
def test_links_that_lead_outside_are_not_followed(world, link):
    store, outside = world
    before = snapshot(outside)
    for path in (link, f"{link}/secret.txt", f"{link}/new.txt"):
        for name, op in every_operation(store, path):
            if name == "rm" and path == link:
                continue  # deleting the link itself is fine (below)
            if name == "ls" and path == link:
                assert store.ls("v", path)[0]["type"] == "link"  # shown as a link, not followed
                continue
            if name == "mv from" and path == link:
                continue  # renaming a link moves the link, not its target
            with pytest.raises(VolumePathError, match="symbolic link"):
                op()
                pytest.fail(f"{name} followed {path!r}")
    assert snapshot(outside) == before
    store.rm("v", link)
    assert snapshot(outside) == before  # the link went, its target stayed


def test_a_link_to_a_file_outside_is_neither_read_nor_overwritten(world):
    store, outside = world
    with pytest.raises(VolumePathError, match=r"pointing outside the volume \(.*secret.txt\)"):
        store.open("v", "esc_file")
    with pytest.raises(VolumePathError):
        store.put("v", "esc_file", b"pwned")
    with pytest.raises(VolumePathError, match="symbolic link"):
        store.mv("v", "sub/ok.txt", "esc_file")
    assert (outside / "secret.txt").read_text() == "outside"
    assert store.usage("v") == {"bytes": 6, "files": 1, "quota": None}  # links count as nothing


def test_a_link_inside_the_volume_is_not_followed_either(world):
    store, _ = world
    with pytest.raises(VolumePathError, match="use the path it points to"):
        store.open("v", "inner_link/ok.txt")


@pytest.mark.parametrize("name", BAD_VOLUME_NAMES)
def test_bad_volume_names_are_refused(world, name):
    store, _ = world
    with pytest.raises(VolumePathError, match="name"):
        store.create(name)
    with pytest.raises(VolumePathError):
        store.ls(name)


@pytest.mark.parametrize("mount", ["v:data", "v:/", "v:/proc", "v:/dev/x", "v:/usr", "v:/a/../etc", "../v:/data",
                                   "v:/data:rx", "v", "v:/data\x00"])
def test_bad_mounts_are_refused(mount):
    with pytest.raises(VolumePathError):
        parse_mount(mount)


def test_the_python_api_refuses_hostile_paths(world, tmp_path):
    from cellhop.kernel.storage_client import LocalStorageClient
    from cellhop.kernel.volume import Volume

    store, outside = world
    vol = Volume("v", client=LocalStorageClient(store, None))
    src = tmp_path / "f.txt"
    src.write_text("x")
    before = snapshot(outside)
    for path in HOSTILE:
        for op in (lambda: vol.put(src, path), lambda: vol.get(path, tmp_path / "out"), lambda: vol.ls(path),
                   lambda: vol.rm(path), lambda: vol.mv("sub/ok.txt", path), lambda: vol.read_bytes(path)):
            with pytest.raises(VolumePathError):
                op()
    assert snapshot(outside) == before
    assert not (tmp_path / "out").exists()


def test_the_cli_refuses_hostile_paths(world, runtime_root, tmp_path):
    store, outside = world
    src = tmp_path / "f.txt"
    src.write_text("x")
    before = snapshot(outside)
    state = str(runtime_root / "state")
    argvs = []
    for path in HOSTILE:
        if "\x00" in path:
            continue  # an argv cannot carry a NUL byte at all
        argvs += [["volume", "put", "v", str(src), path], ["volume", "get", "v", path, str(tmp_path / "out")],
                  ["volume", "rm", "v", path], ["volume", "mv", "v", "sub/ok.txt", path]]
    argvs += [["volume", "ls", "v", "../"], ["volume", "mkdir", "v", "/abs"], ["volume", "ls", "esc_abs/../.."],
              ["volume", "ls", "v", "esc_abs"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLHOP_CONTROL")}
    procs = [subprocess.Popen([sys.executable, "-m", "cellhop.server_ext.cli", *a, "--state-dir", state],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for a in argvs]
    outcomes = [(a, p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for a, p in zip(argvs, procs)]
    for argv, code, out, err in outcomes[:-1]:
        assert code == 1, (argv, out, err)
        assert err.startswith("cellhop: ") and "Traceback" not in err, (argv, err)
    argv, code, out, err = outcomes[-1]
    assert code == 0 and out.startswith("link"), (out, err)  # the link is listed, not followed
    assert snapshot(outside) == before
    assert not (tmp_path / "out").exists()
    assert [e["path"] for e in store.ls("v", "sub")] == ["sub/ok.txt"]
