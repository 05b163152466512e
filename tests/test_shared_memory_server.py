"""Shared memory in server mode: a notebook kernel of a real jupyter_server (a process of its own, talking
HTTP to the server's control plane) reaches its container's shared-memory socket, which the container
made as its own unprivileged user (uid 65534 when the server runs as root), and large values go both
ways through it (shared_buffers.py; the embedded mode: test_shared_memory.py)."""

from __future__ import annotations

import os

import pytest
from server_kernel_client import run

pytestmark = pytest.mark.timeout(180)


async def test_a_server_kernel_moves_large_values_through_its_containers_shared_memory(start_kernel):
    _, kc = await start_kernel()
    content, _, _ = await run(kc, "import os, numpy as np\na = np.arange(2**21, dtype='f8')")
    assert content["status"] == "ok", content
    content, out, _ = await run(kc, "%%remote\nprint(a.flags.writeable, float(a[-1]))\nb = a + 1")
    assert content["status"] == "ok", content
    assert out.split() == ["True", f"{2**21 - 1:.1f}"]
    content, out, _ = await run(
        kc, "from cellhop.kernel.extension import remote_cells\n"
            "[s] = remote_cells(get_ipython()).pool.sessions().values()\n"
            "print(s.shared.channel is not None and not s.shared.channel.broken, os.stat(s.shared.path).st_uid)\n"
            "b += 1\n"
            "print(b.flags.writeable, float(b[-1]))")
    assert content["status"] == "ok", content
    linked, owner, writable, last = out.split()
    assert linked == "True" and writable == "True" and last == f"{2**21 + 1:.1f}", out
    if os.geteuid() == 0:  # the container is uid 65534; the notebook kernel, root like the server, connects
        assert owner == "65534", out
