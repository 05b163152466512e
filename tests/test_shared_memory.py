"""Large values through memory shared by the notebook kernel and its local container (shared_buffers.py).

A real notebook kernel with cellhop loaded (embedded control plane), real sandboxed containers: arrays of
several MiB go both ways through sealed memfds, arrive intact and writable, and leave nothing behind
(no descriptor, no mapping once dropped, no file in /dev/shm or the sandbox folder); a second container
sees neither the first's socket nor its segments; a container that sends an unsealed memfd, a truncated
one, a file that is not a memfd, or garbage has its values refused with a clear error, and the notebook
kernel carries on (over the wire).
"""

from __future__ import annotations

import fcntl
import os

import pytest

from cellhop.kernel.shared_buffers import (SharedMemoryRefused, map_memfd, restore, socket_path, to_memfd)
from kernel_fixtures import cellhop_kernel  # noqa: F401  (a pytest fixture)

pytestmark = pytest.mark.timeout(300)

SETUP = """
import gc, os, cellhop, numpy as np
from cellhop.kernel.extension import remote_cells

def _segments():
    '''memfd descriptors and mappings of this process'''
    fds = []
    for fd in os.listdir('/proc/self/fd'):
        try:
            if os.readlink(f'/proc/self/fd/{fd}').startswith('/memfd:'):
                fds.append(fd)
        except OSError:
            pass
    maps = [line for line in open('/proc/self/maps') if 'memfd:' in line]
    return len(fds), len(maps)

def _settled():
    '''_segments() once dropped segments are unmapped (a thread of their own does it)'''
    import time
    gc.collect()
    for _ in range(100):
        if _segments() == (0, 0):
            break
        time.sleep(0.1)
    return _segments()

def _linked():
    '''whether every warm container of this notebook has its shared-memory connection'''
    sessions = [s for s in remote_cells(get_ipython()).pool.sessions().values()]
    return bool(sessions) and all(s.shared.channel is not None and not s.shared.channel.broken for s in sessions)

@cellhop.remote(gpu='H100')
def work(op, x=None):
    # in one container: x + 1, or what it holds (memfd descriptors, mappings, its sandbox folder)
    import gc, os
    from ipykernel.kernelapp import IPKernelApp
    if op == 'plus':
        return x + 1
    if op == 'same':
        return x
    if op == 'poke':  # one page of the received array changes: it cannot go back as the segment it came in
        x[len(x) // 2] = -1.0
        return x
    import time
    gc.collect()
    for _ in range(100):  # dropped segments are unmapped by a thread of their own
        fds = [fd for fd in os.listdir('/proc/self/fd') if os.path.exists(f'/proc/self/fd/{fd}')
               and os.readlink(f'/proc/self/fd/{fd}').startswith('/memfd:')]
        maps = [line for line in open('/proc/self/maps') if 'memfd:' in line]
        if not fds and not maps:
            break
        time.sleep(0.1)
    box = os.path.dirname(os.path.abspath(IPKernelApp.instance().connection_file))
    return len(fds), len(maps), sorted(os.listdir(box))
"""


@pytest.fixture(scope="module")
def nb(cellhop_kernel):  # noqa: F811
    cellhop_kernel.ok(SETUP)
    return cellhop_kernel


def test_a_large_array_goes_and_comes_back_through_shared_memory_intact_and_writable(nb):
    ran = nb.ok("a = np.arange(4 * 2**20, dtype='f8')\n"  # 32 MiB
                "b = work.remote('plus', a)\n"
                "print(_linked(), b.flags.writeable, bool((b == a + 1).all()))\n"
                "b += 1\n"
                "print(float(b[-1]), float(a[-1]))")
    assert ran.stdout.split() == ["True", "True", "True", f"{4 * 2**20 + 1:.1f}", f"{4 * 2**20 - 1:.1f}"]


def test_an_array_sent_back_unchanged_or_changed_comes_back_as_it_is_in_the_container(nb):
    ran = nb.ok("g = np.arange(2**21, dtype='f8')\n"
                "same, poked = work.remote('same', g), work.remote('poke', g)\n"
                "print(bool((same == g).all()), same.flags.writeable, float(poked[2**20]), float(g[2**20]))\n"
                "same[0] = 42.0\n"  # the notebook's own copy: neither g nor the next result sees it
                "print(float(g[0]), float(work.remote('same', g)[0]), float(work.remote('poke', same)[0]))")
    assert ran.stdout.split() == ["True", "True", "-1.0", f"{2.0**20:.1f}", "0.0", "0.0", "42.0"], ran.stdout


def test_a_remote_cell_pushes_and_pulls_a_large_array_through_shared_memory(nb):
    nb.ok("c = c0 = np.full(3 * 2**20, 7.0)")  # 24 MiB
    ran = nb.ok("%%remote\nprint(c.flags.writeable, float(c.sum()))\nc += 1\nd = c * 2")
    assert ran.stdout.split() == ["True", f"{7.0 * 3 * 2**20:.1f}"]
    # d and the container's c came back; the notebook's own array was never written through
    ran = nb.ok("d += 1\nprint(_linked(), d.flags.writeable, float(d[0]), float(c[0]), float(c0[0]), d.nbytes)")
    assert ran.stdout.split() == ["True", "True", "17.0", "8.0", "7.0", str(24 * 2**20)]


def test_nothing_is_left_behind_once_the_values_are_dropped(nb):
    before = nb.ok("shm_before = set(os.listdir('/dev/shm'))\nprint(work.remote('look'))").stdout
    ran = nb.ok("for _ in range(3):\n"
                "    e = work.remote('plus', np.ones(2**21))\n"
                "print(_segments()[1] > 0)\n"  # the result maps its segment while it lives
                "for name in ('a', 'b', 'c', 'c0', 'd', 'e', 'g', 'same', 'poked'):\n"
                "    globals().pop(name, None)\n"
                "print(_settled(), set(os.listdir('/dev/shm')) - shm_before)\n"
                "print(work.remote('look'))")
    lines = ran.stdout.splitlines()
    assert lines[0] == "True"
    assert lines[1] == "(0, 0) set()", ran.stdout  # no memfd descriptor or mapping left in the notebook
    # in the container: none either once its values are gone, and its sandbox folder holds what it held
    assert lines[2].startswith("(0, 0, ") and lines[2] == before.strip(), (before, lines[2])


def test_another_container_sees_neither_the_socket_nor_the_segments(nb):
    ran = nb.ok(
        "@cellhop.remote(gpu='H100')\n"
        "def keep(x):\n"
        "    global KEPT\n"
        "    KEPT = x\n"
        "    return [l for l in open('/proc/self/maps') if 'memfd:cellhop' in l] != []\n"
        "print(keep.remote(np.ones(2**21)))\n"
        "path = [s.shared.path for s in remote_cells(get_ipython()).pool.sessions().values()\n"
        "        if s.shared.channel is not None][0]\n"
        "@cellhop.remote(gpu='H100')\n"
        "def look(path):\n"
        "    import os\n"
        "    found = []\n"
        "    for pid in os.listdir('/proc'):\n"
        "        if not pid.isdigit():\n"
        "            continue\n"
        "        try:\n"
        "            found += [l for l in open(f'/proc/{pid}/maps') if 'memfd:' in l]\n"
        "            found += [fd for fd in os.listdir(f'/proc/{pid}/fd')\n"
        "                      if os.readlink(f'/proc/{pid}/fd/{fd}').startswith('/memfd:')]\n"
        "        except OSError:\n"
        "            pass\n"
        "    return os.path.lexists(path), os.path.lexists(os.path.dirname(path)), found\n"
        "print(look.remote(path))\n"
        "keep.shutdown(); look.shutdown()")
    assert ran.stdout.splitlines() == ["True", "(False, False, [])"], ran.stdout


HOSTILE = """
@cellhop.remote(gpu='H100')
def hostile(kind):
    import os, socket
    import numpy as np
    import cellhop.kernel.shared_buffers as sb

    real_to_memfd, real_send = sb.to_memfd, sb.Channel.send
    n = 2**23

    def bad(buffer):
        sb.to_memfd = real_to_memfd  # once
        if kind == 'unsealed':
            fd = os.memfd_create('cellhop', os.MFD_ALLOW_SEALING)
            os.ftruncate(fd, n)
            return fd, n
        if kind == 'truncated':
            fd, size = real_to_memfd(memoryview(buffer)[:n // 2])
            return fd, n
        if kind == 'file':
            fd = os.open('/tmp', os.O_TMPFILE | os.O_RDWR)
            os.ftruncate(fd, n)
            return fd, n
        if kind == 'pipe':
            r, w = os.pipe()
            os.close(w)
            return r, n
        return real_to_memfd(buffer)

    def garbage(self, items):
        sb.Channel.send = real_send
        self.sock.sendmsg([b'\\x00not json at all'])

    sb.to_memfd = bad
    if kind == 'garbage':
        sb.Channel.send = garbage
    return np.ones(n // 8)
"""


@pytest.mark.parametrize("kind", ["unsealed", "truncated", "file", "pipe", "garbage"])
def test_a_hostile_container_has_its_values_refused_and_the_notebook_carries_on(nb, kind):
    nb.ok(HOSTILE)
    ran = nb.run(f"hostile.remote({kind!r})")
    assert ran.status == "error" and ran.ename == "SharedMemoryRefused", ran
    expected = {"unsealed": "unsealed memfd", "truncated": "bytes where the message says", "file": "not a memfd",
                "pipe": "not a regular file", "garbage": "garbage on the shared-memory connection"}[kind]
    assert expected in ran.evalue, ran.evalue
    # the notebook kernel is fine, nothing of the refused values stays, and the next call works over the wire
    ran = nb.ok("print(_settled(), hostile.remote('none').nbytes)\nhostile.shutdown()")
    assert ran.stdout.split() == ["(0,", "0)", str(2**23)], ran.stdout


# -- the pieces, without a container --------------------------------------------------------------------
def test_a_sealed_segment_cannot_be_shrunk_grown_or_written_and_maps_privately():
    fd, size = to_memfd(b"x" * 4096)
    try:
        for change in (lambda: os.ftruncate(fd, 10), lambda: os.ftruncate(fd, 10**6),
                       lambda: os.pwrite(fd, b"y", 0)):
            with pytest.raises(PermissionError):
                change()
        view = map_memfd(fd, size)
        view[0] = ord("z")  # the receiver's own copy-on-write page
        assert os.pread(fd, 1, 0) == b"x"
        with pytest.raises(SharedMemoryRefused, match="where the message says"):
            map_memfd(fd, size + 1)
    finally:
        os.close(fd)
    unsealed = os.memfd_create("x", os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(unsealed, 4096)
        fcntl.fcntl(unsealed, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW)
        with pytest.raises(SharedMemoryRefused, match="unsealed"):
            map_memfd(unsealed, 4096)
    finally:
        os.close(unsealed)


def test_only_ipc_connections_have_a_socket_and_a_message_naming_shared_memory_needs_one():
    assert socket_path({"transport": "tcp", "ip": "127.0.0.1"}) is None
    assert socket_path({"transport": "ipc", "ip": "/run/x/k"}) == "/run/x/k-shm"
    with pytest.raises(SharedMemoryRefused, match="no shared-memory connection"):
        restore(None, [b"", b""], {"frames": {"1": ["t", 10]}})
    with pytest.raises(SharedMemoryRefused, match="malformed"):
        restore(None, [b""], {"frames": {"7": ["t", 10]}})
