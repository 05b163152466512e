"""A container's log is read from its end, and exited containers do not pile up.

`GET containers/{id}/logs?tail=5` on a 300 MiB log reads only its end (the
server's memory barely moves), and the route never returns more than 1 MiB;
exited containers are forgotten, their folders deleted from disk, past
c.Cellhop.keep_exited of them or c.Cellhop.exited_ttl seconds, even when a
container left a folder tree thousands deep behind.
"""

from __future__ import annotations

import json
import os
import tracemalloc

import pytest
from processes import wait_until

from cellhop.container import ContainerSpec

pytestmark = pytest.mark.timeout(180)

HUGE = 300 * 2**20


async def call(jp_fetch, method, path, body=None, params=None):
    kwargs = {"method": method, "raise_error": False, "params": params, "request_timeout": 120}
    if body is not None or method in ("POST", "PUT"):
        kwargs["body"] = json.dumps(body or {})
    r = await jp_fetch("cellhop", "api", *path.split("/"), **kwargs)
    return r.code, (json.loads(r.body) if r.body else None)


async def test_the_logs_route_reads_a_huge_logs_end_only_and_caps_what_it_returns(jp_fetch, control_plane):
    status, started = await call(jp_fetch, "POST", "containers", {"spec": {"gpu": "A10G", "owner": "t"}})
    assert status == 201, started
    cid = started["id"]
    assert (await call(jp_fetch, "POST", f"containers/{cid}/stop"))[0] == 200
    log_path = control_plane.manager.get(cid).log_path
    with open(log_path, "r+b") as f:  # 300 MiB that nobody should load (sparse: no disk is used), then lines
        f.truncate(HUGE)
        f.seek(0, os.SEEK_END)
        f.write(b"".join(b"line %d of the end\n" % i for i in range(200_000)))
    tracemalloc.start()  # the server runs in this process: its allocations are traced too
    try:
        tracemalloc.reset_peak()
        status, reply = await call(jp_fetch, "GET", f"containers/{cid}/logs", params={"tail": "5"})
        _, tail_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        status_all, everything = await call(jp_fetch, "GET", f"containers/{cid}/logs")
        _, all_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 200, reply
    assert reply["log"].splitlines() == [f"line {i} of the end" for i in range(199_995, 200_000)], reply["log"][-300:]
    assert tail_peak < 32 * 2**20, f"reading 5 lines took {tail_peak / 2**20:.0f} MiB"
    assert status_all == 200
    text = everything["log"]
    assert len(text.encode()) <= 2**20 + 200 and text.endswith("line 199999 of the end"), len(text)
    assert text.startswith("[... earlier output cut"), text[:100]
    assert all_peak < 64 * 2**20, f"reading the log's end took {all_peak / 2**20:.0f} MiB"


def _chain(folder, depth: int) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    os.close(fd)


def test_exited_containers_are_forgotten_and_their_folders_deleted(make_manager):
    manager = make_manager(keep_exited=20, exited_ttl=0)
    ended = []
    for label in ("first", "second", "third"):
        container = manager.start(ContainerSpec(gpu="none", owner="tests", label=label))
        manager.stop(container.id)
        ended.append(container)
    oldest = ended[0]
    _chain(oldest.directory, 1500)  # a container may leave a tree deeper than any recursive walker goes
    manager.config.keep_exited = 2
    manager.expire()  # (the monitor may have got there first)
    assert [c.spec.label for c in manager.list()] == ["second", "third"]
    assert not oldest.directory.exists()
    assert all(c.directory.exists() for c in ended[1:])

    manager.config.exited_ttl = 1.0  # the monitor forgets them once they have been exited that long
    # it forgets them, then deletes their folders (outside its lock): wait for both
    wait_until(lambda: not manager.list() and not any(c.directory.exists() for c in ended), timeout=30,
               what="the monitor to forget the exited containers and delete their folders")
    live = manager.start(ContainerSpec(gpu="none", owner="tests", label="live"))
    assert manager.expire() == [] and [c.id for c in manager.list()] == [live.id]  # a live one always stays


DEEP_CHAIN_CELL = """
import os
for _ in range(1500):
    os.mkdir('d')
    os.chdir('d')
open('bottom.txt', 'w').write('deep')
"""


def test_a_container_that_leaves_a_1500_deep_tree_behind_stops_cleanly_and_its_folder_goes(make_manager):
    from test_containers import execute

    manager = make_manager(keep_exited=0)
    container = manager.start(ContainerSpec(gpu="none", owner="tests"))
    reply = execute(container, DEEP_CHAIN_CELL)
    assert reply["status"] == "ok", reply
    status = manager.stop(container.id)  # its cleanup walks the tree it made in its own folder
    assert status.stopped, status
    manager.expire()
    assert manager.list() == [] and not container.directory.exists()


def test_the_next_control_plane_reaps_a_dead_ones_container_folder_however_deep(runtime_root):
    from cellhop.server_ext.runtimes.orphans import OWNER_FILE, reap_orphans

    folder = runtime_root / "containers" / "0123456789ab"
    folder.mkdir(parents=True)
    (folder / OWNER_FILE).write_text(json.dumps({"owner_pid": 2**22 + 1, "owner_start": 1, "pid": None}))
    _chain(folder, 1500)  # what its container left (its control plane was SIGKILLed)
    assert reap_orphans(runtime_root / "containers") == ["0123456789ab"]
    assert not folder.exists()
