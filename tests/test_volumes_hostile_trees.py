"""What a container can leave in a volume, and the REST routes that must still work on it (a real
jupyter_server with the cellhop extension): a FIFO swapped in for a file mid-download, a folder chain
1,500 deep, names with a newline, a backslash, bytes that are not UTF-8 or a bidirectional override.

The container's side is played by writing straight into the volume's data folder on the host, as a
container's bind mount would.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import secrets
import stat

import pytest

from test_volumes_rest import control_plane, jp_server_config  # noqa: F401  (the same server)

pytestmark = pytest.mark.timeout(180)

DEPTH = 1500


async def call(jp_fetch, method, path, body=None, params=None, raw=False, timeout=60):
    """(status, JSON body or bytes) of a cellhop API call, errors included."""
    kwargs = {"method": method, "raise_error": False, "params": params, "request_timeout": timeout}
    if body is not None or method in ("POST", "PUT"):
        kwargs["body"] = body if isinstance(body, (str, bytes)) else json.dumps(body or {})
    r = await jp_fetch("cellhop", "api", *path.split("/"), **kwargs)
    if raw and r.code < 400:
        return r.code, r.body
    return r.code, (json.loads(r.body) if r.body else None)


def make_chain(top_fd: int, depth: int = DEPTH, name: str = "d") -> None:
    """`depth` nested folders `d/d/d/...` under the folder `top_fd`, a small file in each (fd-relative: the
    path is far longer than PATH_MAX)."""
    fd = os.dup(top_fd)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
            f = os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            os.write(f, b"x" * 10)
            os.close(f)
    finally:
        os.close(fd)


def everything_under(folder) -> list[str]:
    return [os.path.join(d, n) for d, dirs, files in os.walk(folder) for n in dirs + files]


async def test_a_1500_deep_folder_chain_is_listed_counted_and_deleted(jp_fetch, control_plane):
    for name in ("deep", "other"):
        assert (await call(jp_fetch, "POST", "volumes", {"name": name}))[0] == 201
    data = control_plane.volumes.data_path("deep")
    top = os.open(data, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.mkdir("a", dir_fd=top)
        a = os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=top)
        make_chain(a)
        os.close(a)
        os.mkdir("b", dir_fd=top)
        b = os.open("b", os.O_RDONLY | os.O_DIRECTORY, dir_fd=top)
        make_chain(b)
        os.close(b)
    finally:
        os.close(top)
    status, listing = await call(jp_fetch, "GET", "volumes")  # every volume's usage walks the chain
    assert status == 200, listing
    assert {v["name"]: v["usage"] for v in listing["volumes"]} == {"deep": 2 * DEPTH * 10, "other": 0}
    status, usage = await call(jp_fetch, "GET", "volumes/deep/usage")
    assert status == 200 and usage["files"] == 2 * DEPTH and usage["bytes"] == 2 * DEPTH * 10, usage
    status, entries = await call(jp_fetch, "GET", "volumes/deep/files")
    assert status == 200 and [e["path"] for e in entries["entries"]] == ["a", "b"]
    # rm -r: gone from the volume at once and from the disk
    status, reply = await call(jp_fetch, "DELETE", "volumes/deep/files", params={"path": "a", "recursive": "1"})
    assert status == 200, reply
    assert sorted(os.listdir(data)) == ["b"]
    assert os.listdir(data.parent / "trash") == []  # nothing left behind, even out of sight
    # DELETE the volume: no byte of it stays on disk
    volumes_root = control_plane.volumes.root
    status, reply = await call(jp_fetch, "DELETE", "volumes/deep")
    assert status == 200, reply
    assert sorted(os.listdir(volumes_root)) == ["other"], everything_under(volumes_root)[:5]


async def test_a_fifo_swapped_in_during_a_download_is_refused_and_blocks_no_thread(jp_fetch, control_plane,
                                                                                   monkeypatch):
    from cellhop.server_ext import volumes as volumes_module

    await call(jp_fetch, "POST", "volumes", {"name": "v"})
    assert (await call(jp_fetch, "PUT", "volumes/v/upload", b"regular", params={"path": "swap.bin"}))[0] == 201
    data = control_plane.volumes.data_path("v")
    fifo = data / "swap.bin"
    real_lstat_in = volumes_module.lstat_in
    regular = os.stat(fifo)

    def container_wins_the_race(dir_fd, name):  # each check sees the file; a FIFO is there when it is opened
        st = real_lstat_in(dir_fd, name)
        if name != "swap.bin" or st is None:
            return st
        if stat.S_ISREG(st.st_mode):
            made = f"swap.{secrets.token_hex(4)}.fifo"
            os.mkfifo(made, dir_fd=dir_fd)
            os.rename(made, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return regular

    monkeypatch.setattr(volumes_module, "lstat_in", container_wins_the_race)
    try:
        # 13 at once stopped the server before: each held a worker thread on open() forever
        replies = await asyncio.gather(*(call(jp_fetch, "GET", "volumes/v/download", params={"path": "swap.bin"},
                                              timeout=20) for _ in range(13)))
    finally:
        _release_blocked_readers(fifo)
    for status, reply in replies:
        assert status == 409 and reply["error"] == "NotARegularFile" and "FIFO" in reply["message"], reply
    monkeypatch.setattr(volumes_module, "lstat_in", real_lstat_in)
    # and a FIFO sitting there: listed as "other", downloads refused, usage ignores it, rm removes it
    status, entries = await call(jp_fetch, "GET", "volumes/v/files")
    assert status == 200 and [(e["path"], e["type"]) for e in entries["entries"]] == [("swap.bin", "other")]
    status, reply = await call(jp_fetch, "GET", "volumes/v/download", params={"path": "swap.bin"}, timeout=20)
    assert status == 409, reply
    status, usage = await call(jp_fetch, "GET", "volumes/v/usage")
    assert status == 200 and usage["files"] == 0
    assert (await call(jp_fetch, "DELETE", "volumes/v/files", params={"path": "swap.bin"}))[0] == 200
    assert os.listdir(data) == []


def _release_blocked_readers(fifo) -> None:
    """A server thread stuck opening the FIFO (before the fix) is released by a writer opening it."""
    for _ in range(20):
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno in (errno.ENXIO, errno.ENOENT):  # no reader waits (any more)
                return
            raise
        os.close(fd)


ODD_NAMES = {  # what a container named it -> how listings give it back
    b"new\nline.txt": "new\\x0aline.txt",
    b"back\\slash.txt": "back\\x5cslash.txt",
    b"latin1-\xe9t\xe9.txt": "latin1-\\xe9t\\xe9.txt",
    "evil\u202etxt.exe".encode(): "evil\\xe2\\x80\\xaetxt.exe",
    b"tab\there": "tab\\x09here",
    "caf\u00e9.txt".encode(): "caf\u00e9.txt",  # plain text stays as it is
}


async def test_names_a_container_made_are_listed_in_a_form_that_names_them_back(jp_fetch, control_plane):
    await call(jp_fetch, "POST", "volumes", {"name": "odd"})
    data = os.fsencode(control_plane.volumes.data_path("odd"))
    for raw in ODD_NAMES:
        with open(os.path.join(data, raw), "wb") as f:
            f.write(raw)
    os.mkdir(os.path.join(data, b"dir\nwith\xffodd"))
    with open(os.path.join(data, b"dir\nwith\xffodd", b"inner\\x"), "wb") as f:
        f.write(b"inner")
    status, listing = await call(jp_fetch, "GET", "volumes/odd/files")
    assert status == 200, listing
    shown = {e["path"] for e in listing["entries"]}
    assert shown == set(ODD_NAMES.values()) | {"dir\\x0awith\\xffodd"}, shown
    status, inner = await call(jp_fetch, "GET", "volumes/odd/files", params={"path": "dir\\x0awith\\xffodd"})
    assert status == 200 and [e["path"] for e in inner["entries"]] == ["dir\\x0awith\\xffodd/inner\\x5cx"], inner
    for raw, path in ODD_NAMES.items():  # each listed path reads back the right file, and removes it
        status, body = await call(jp_fetch, "GET", "volumes/odd/download", params={"path": path}, raw=True)
        assert status == 200 and body == raw, (path, status, body)
        status, reply = await call(jp_fetch, "DELETE", "volumes/odd/files", params={"path": path})
        assert status == 200, (path, reply)
    status, reply = await call(jp_fetch, "DELETE", "volumes/odd/files",
                               params={"path": "dir\\x0awith\\xffodd", "recursive": "1"})
    assert status == 200, reply
    assert os.listdir(data) == []
