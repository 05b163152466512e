"""Volumes inside containers, from a real notebook kernel: `%%remote --volume`, read-only mounts,
`%gpu` defaults, `cellhop.remote(volumes=...)`, two containers writing to one volume at once, and a
mounted volume that cannot be deleted."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from kernel_fixtures import local_json, start_cellhop_kernel


@pytest.fixture(scope="module")
def nb():
    state = tempfile.mkdtemp(prefix="ch-", dir="/tmp")
    with start_cellhop_kernel(extra_arguments=(f"--Cellhop.state_dir={state}",)) as kernel:
        kernel.state = Path(state)
        kernel.ok("import cellhop, json\nvol = cellhop.Volume('ds')\nvol.put(b'from the notebook', 'in.txt')")
        yield kernel
    shutil.rmtree(state, ignore_errors=True)




def test_a_remote_cell_reads_and_writes_a_mounted_volume(nb):
    ran = nb.ok("%%remote --volume ds:/data\n"
                "print(open('/data/in.txt').read())\n"
                "with open('/data/out.txt', 'w') as f:\n"
                "    f.write('from the container')")
    assert ran.stdout == "from the notebook\n"
    assert local_json(nb, "vol.read_bytes('out.txt').decode()") == "from the container"
    assert (nb.state / "volumes" / "ds" / "data" / "out.txt").read_text() == "from the container"


def test_a_read_only_mount_refuses_writes(nb):
    ran = nb.run("%%remote --volume ds:/ro:ro\n"
                 "print(open('/ro/in.txt').read())\n"
                 "open('/ro/new.txt', 'w')")
    assert ran.status == "error"
    assert ran.stdout == "from the notebook\n"
    assert "Read-only file system" in ran.evalue
    assert local_json(nb, "[e['path'] for e in vol.ls()]") == ["in.txt", "out.txt"]


def test_gpu_defaults_mount_for_every_cell_and_a_cell_adds_its_own(nb):
    shown = nb.ok("%gpu --volume ds:/data --volume extra:/extra").stdout
    assert "volumes ds:/data, extra:/extra" in shown
    ran = nb.ok("%%remote --volume ds:/more:ro\n"
                "import os\n"
                "print(sorted(os.listdir('/data')), os.listdir('/extra'), os.path.exists('/more/in.txt'))")
    assert ran.stdout == "['in.txt', 'out.txt'] [] True\n"
    assert "volumes" not in nb.ok("%gpu --volume none").stdout
    assert local_json(nb, "sorted(v['name'] for v in cellhop.Volume.list())") == ["ds", "extra"]  # made on use


def test_cellhop_remote_mounts_volumes(nb):
    nb.ok("@cellhop.remote(volumes={'/weights': vol})\n"
          "def read(name):\n"
          "    return open('/weights/' + name).read()\n"
          "@cellhop.remote(volumes=['ds:/w:ro'])\n"
          "def read_only():\n"
          "    open('/w/x', 'w')")
    assert local_json(nb, "read.remote('in.txt')") == "from the notebook"
    ran = nb.run("read_only.remote()")
    assert ran.status == "error" and "Read-only file system" in ran.evalue
    nb.ok("read.shutdown(); read_only.shutdown()")


WRITER = '''
def writer(me, other):
    import fcntl, os, time
    with open(f"/shared/{me}.txt", "w") as f:
        f.write(os.environ["CELLHOP_CONTAINER_ID"])
    deadline = time.monotonic() + 30
    while not os.path.exists(f"/shared/{other}.txt") and time.monotonic() < deadline:
        time.sleep(0.01)
    seen = open(f"/shared/{other}.txt").read()
    fd = os.open("/shared/log.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    for i in range(300):
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{me} {i:04d} {'x' * 200}\\n".encode())
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return os.environ["CELLHOP_CONTAINER_ID"], seen
'''


def test_two_containers_write_to_one_volume_at_once(nb):
    nb.ok(WRITER + "\n"
          "shared = cellhop.Volume('shared')\n"
          "w1 = cellhop.remote(volumes={'/shared': shared})(writer)\n"
          "w2 = cellhop.remote(volumes={'/shared': shared})(writer)\n"
          "h1, h2 = w1.spawn('A', 'B'), w2.spawn('B', 'A')\n"
          "(id_a, seen_by_a), (id_b, seen_by_b) = h1.wait(timeout=60), h2.wait(timeout=60)")
    ids = local_json(nb, "[id_a, seen_by_a, id_b, seen_by_b]")
    assert ids[0] != ids[2]  # two containers
    assert ids[1] == ids[2] and ids[3] == ids[0]  # each saw what the other wrote
    lines = local_json(nb, "shared.read_bytes('log.txt').decode().splitlines()")
    assert len(lines) == 600
    for who in "AB":
        assert [line[:6] for line in lines if line.startswith(who)] == [f"{who} {i:04d}" for i in range(300)]
    assert all(len(line) == 207 for line in lines)  # no torn writes
    nb.ok("w1.shutdown(); w2.shutdown()")


def test_a_volume_in_use_cannot_be_deleted_from_the_notebook(nb):
    ran = nb.ok("%%remote --volume ds:/data\nx = 1")
    container = ran.container
    assert container
    assert container in local_json(nb, "[m['container'] for m in vol.info()['mounted_by']]")  # warm ones too
    refused = nb.run("vol.delete()")
    assert refused.status == "error" and refused.ename == "VolumeInUse"
    assert container in refused.evalue and "stop those containers" in refused.evalue
    assert local_json(nb, "vol.read_bytes('in.txt').decode()") == "from the notebook"
