"""The notebook's folder as a remote cell's working folder (`--workdir rw|ro|none`).

Real notebook kernels and real containers: embedded (the kernel's working
folder is the notebook's, as Jupyter starts a notebook's kernel there) and
as a kernel of a real jupyter_server, for a notebook in a subfolder of its
root. The server's workdir policy (c.Cellhop.workdir_roots, else the folder
the control plane started in) holds for these folders as for any.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from kernel_fixtures import NotebookKernel, kernel_env, short_runtime_dir
from server_kernel_client import run


@contextlib.contextmanager
def kernel_in(folder: Path, extra_arguments: tuple = (), queue_timeout: float = 8):
    """A notebook kernel with cellhop loaded whose working folder (the notebook's) is `folder`."""
    from jupyter_client.manager import start_new_kernel

    runtime_dir = short_runtime_dir()
    km, kc = start_new_kernel(env=kernel_env(runtime_dir), cwd=str(folder), startup_timeout=60,
                              extra_arguments=[f"--Cellhop.queue_timeout={queue_timeout:g}", *extra_arguments])
    nb = NotebookKernel(km, kc, runtime_dir)
    try:
        nb.ok("%load_ext cellhop")
        yield nb
    finally:
        nb.shutdown()
        shutil.rmtree(runtime_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def notebook_folder():
    folder = Path(tempfile.mkdtemp(prefix="ch-nb-", dir="/tmp"))
    (folder / "data.txt").write_text("beside the notebook\n")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def nb(notebook_folder):
    with kernel_in(notebook_folder) as kernel:
        yield kernel


def test_rw_cell_reads_and_writes_beside_the_notebook(nb, notebook_folder):
    ran = nb.ok("%%remote --workdir rw\nimport os\nwhere = os.getcwd()\n"
                "seen = open('data.txt').read()\nopen('made_remotely.txt', 'w').write('from the container')\n")
    assert "error" not in [t for t, _ in ran.outputs], ran
    assert (notebook_folder / "made_remotely.txt").read_text() == "from the container"
    check = nb.ok("print(where == __import__('os').getcwd(), repr(seen))")
    assert check.stdout.strip() == "True 'beside the notebook\\n'", check


def test_ro_cell_reads_but_cannot_write(nb, notebook_folder):
    ran = nb.run("%%remote --workdir ro\nprint(open('data.txt').read().strip())\n"
                 "open('refused.txt', 'w').write('no')\n")
    assert ran.ename in ("OSError", "PermissionError"), ran
    assert "Read-only file system" in ran.evalue or "Permission denied" in ran.evalue, ran
    assert "beside the notebook" in ran.stdout, ran
    assert not (notebook_folder / "refused.txt").exists()


def test_none_is_a_private_folder(nb, notebook_folder):
    ran = nb.ok("%%remote --workdir none\nimport os\nprint(sorted(os.listdir('.')), os.getcwd())\n")
    assert "data.txt" not in ran.stdout, ran
    assert str(notebook_folder) not in ran.stdout, ran


def test_the_notebooks_folder_read_write_is_the_default(nb, notebook_folder):
    ran = nb.ok("%%remote\nimport os\nprint(open('data.txt').read().strip(), os.getcwd())\n"
                "open('relative.txt', 'w').write('written by a plain %%remote cell')\n")
    assert "beside the notebook" in ran.stdout and str(notebook_folder) in ran.stdout, ran
    assert (notebook_folder / "relative.txt").read_text() == "written by a plain %%remote cell"
    assert "working folder (rw)" in nb.ok("%gpu").stdout


def test_gpu_sets_the_default_and_a_cell_overrides_it(nb, notebook_folder):
    nb.ok("%gpu --workdir ro")
    try:
        ran = nb.ok("%%remote\nprint(open('data.txt').read().strip())\n")
        assert "beside the notebook" in ran.stdout, ran
        cell = nb.ok("%%remote --workdir none\nimport os\nprint(os.path.exists('data.txt'))\n")
        assert cell.stdout.strip().endswith("False"), cell
    finally:
        nb.ok("%gpu --workdir rw")


def test_a_remote_function_takes_workdir(nb, notebook_folder):
    ran = nb.ok("import cellhop\n\ndef read_it():\n    return open('data.txt').read().strip()\n\n"
                "print(cellhop.remote(workdir='ro')(read_it).remote())\n")
    assert ran.stdout.strip().endswith("beside the notebook"), ran


def test_a_bad_mode_says_which_are_allowed(nb):
    ran = nb.run("%%remote --workdir sometimes\nx = 1\n")
    assert ran.status == "error" and "none" in ran.evalue and "rw" in ran.evalue, ran
    ran = nb.run("import cellhop\ncellhop.remote(workdir='yes')(print)\n")
    assert ran.ename == "ValueError" and "'yes'" in ran.evalue, ran


def test_the_policy_refuses_a_folder_outside_its_roots(notebook_folder):
    other = Path(tempfile.mkdtemp(prefix="ch-other-", dir="/tmp"))
    try:  # the control plane allows only the notebook folder; this kernel works in another one
        with kernel_in(other, (f"--Cellhop.workdir_roots={[str(notebook_folder)]!r}",)) as outside:
            ran = outside.run("%%remote --workdir rw\nx = 1\n")
            assert ran.status == "error", ran
            assert str(other) in ran.evalue and "workdir" in ran.evalue, ran
            assert not list(other.iterdir())
    finally:
        shutil.rmtree(other, ignore_errors=True)


def _notes(ran) -> list[str]:
    return [c["data"]["text/plain"] for t, c in ran.outputs if t in ("display_data", "update_display_data")
            and "text/plain" in c.get("data", {}) and c["data"]["text/plain"].startswith("cellhop:")]


def test_a_default_folder_the_policy_refuses_runs_without_it_and_says_so_once(notebook_folder):
    other = Path(tempfile.mkdtemp(prefix="ch-other-", dir="/tmp"))
    try:  # as above, but the cells ask for no folder: the default falls back to none, quietly, once
        with kernel_in(other, (f"--Cellhop.workdir_roots={[str(notebook_folder)]!r}",)) as outside:
            first = outside.ok("%%remote\nopen('private.txt', 'w').write('x')\nimport os\nprint(os.getcwd())\n")
            notes = _notes(first)
            assert len(notes) == 1 and "not the notebook's folder" in notes[0] and str(other) in notes[0], first
            assert not first.stderr and str(other) not in first.stdout, first  # nothing red; a private folder
            second = outside.ok("%%remote\nprint(open('private.txt').read())\n")  # the same container
            assert second.stdout.strip().endswith("x") and not _notes(second), second
            assert not list(other.iterdir())
            explicit = outside.run("%%remote --workdir rw\nx = 1\n")  # asked for by name: still refused
            assert explicit.status == "error" and str(other) in explicit.evalue, explicit
    finally:
        shutil.rmtree(other, ignore_errors=True)


# -- a kernel of a real jupyter_server, for a notebook in a subfolder ----------------------------
async def test_a_server_kernel_writes_beside_its_notebook(jp_serverapp, jp_root_dir, http_server_client):
    notebooks = jp_root_dir / "project"
    notebooks.mkdir()
    (notebooks / "input.csv").write_text("a,b\n1,2\n")
    km = jp_serverapp.kernel_manager
    kid = await km.start_kernel(kernel_name="python3", path="project/analysis.ipynb")
    kc = km.get_kernel(kid).client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        content, out, _ = await run(kc, "%load_ext cellhop")
        assert content["status"] == "ok", content
        content, out, _ = await run(kc, "%%remote --workdir rw\nrows = open('input.csv').read().splitlines()\n"
                                         "open('result.txt', 'w').write(str(len(rows)))\n")
        assert content["status"] == "ok", (content, out)
        assert (notebooks / "result.txt").read_text() == "2"
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(kid, now=True)


# -- a standby container claimed with the notebook's folder (late_mounts.py) ----------------------------
def _containers(nb) -> list[dict]:
    ran = nb.ok("import json as _j, cellhop as _c\n"
                "print(_j.dumps([{k: c[k] for k in ('id', 'phase', 'standby', 'claimed_from')}"
                " for c in _c.control_plane().containers()]))")
    return json.loads(ran.stdout)


def _wait_ready_standby(nb, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(c["standby"] and c["phase"] == "ready" for c in _containers(nb)):
            return
        time.sleep(0.3)
    raise AssertionError(f"no standby became ready: {_containers(nb)}")


@pytest.mark.skipif(os.geteuid() != 0, reason="attaching a folder to a started standby needs a server run as root; "
                    "elsewhere a workdir request starts a fresh container (tested above)")
def test_a_standby_is_claimed_with_the_notebooks_folder_attached(notebook_folder):
    folder = notebook_folder / "claimed"
    folder.mkdir()
    (folder / "data.txt").write_text("beside the notebook\n")
    with kernel_in(folder, ("--Cellhop.standby=1",)) as nb:
        _wait_ready_standby(nb)
        ran = nb.ok("%%remote --workdir rw\nprint(open('data.txt').read().strip())\n"
                    "open('written.txt', 'w').write('by a claimed standby')\n")
        assert "beside the notebook" in ran.stdout, ran
        assert (folder / "written.txt").read_text() == "by a claimed standby"
        mine = next(c for c in _containers(nb) if c["id"].startswith(ran.container))
        assert mine["claimed_from"], mine  # a standby became the cell's container: no fresh start
        host_mounts = Path("/proc/self/mountinfo").read_text()  # the server's (this host's) mount namespace
        assert str(folder) not in host_mounts and nb.runtime_dir not in host_mounts  # nothing mounted on the host
        # read-only: the next standby, claimed for a ro cell (another run spec: its own container)
        _wait_ready_standby(nb)
        ro = nb.run("%%remote --workdir ro\nprint(open('data.txt').read().strip())\n"
                    "open('refused.txt', 'w').write('no')\n")
        assert "beside the notebook" in ro.stdout and ro.ename in ("OSError", "PermissionError"), ro
        assert not (folder / "refused.txt").exists()
        assert next(c for c in _containers(nb) if c["id"].startswith(ro.container))["claimed_from"]


def test_a_kernel_configured_for_it_binds_the_notebooks_folder_by_default(notebook_folder):
    folder = notebook_folder / "configured"
    folder.mkdir()
    with kernel_in(folder, ("--Cellhop.workdir=ro",)) as nb:
        (folder / "by_default.txt").write_text("yes")
        ran = nb.run("%%remote\nprint(open('by_default.txt').read())\nopen('refused.txt', 'w').write('no')\n")
        assert "yes" in ran.stdout and ran.ename in ("OSError", "PermissionError"), ran
        assert not (folder / "refused.txt").exists()
        assert "working folder (ro)" in nb.ok("%gpu").stdout


def test_read_only_without_a_sandbox_is_refused_not_ignored(make_manager, runtime_root):
    from cellhop.container import ContainerSpec
    from cellhop.errors import CellhopError

    manager = make_manager(sandbox="none")
    folder = runtime_root / "work" / "nb"
    folder.mkdir(parents=True)
    with pytest.raises(CellhopError, match="read-only .* needs bubblewrap"):
        manager.start(ContainerSpec(gpu="none", owner="tests", workdir=folder, workdir_read_only=True))
    assert not list(folder.iterdir())


@pytest.mark.skipif(os.geteuid() != 0, reason="attaching needs a server run as root")
def test_a_claim_refuses_a_link_planted_on_the_way_to_the_folder(tmp_path):
    from cellhop.server_ext import late_mounts

    real = tmp_path / "elsewhere"
    real.mkdir()
    (tmp_path / "notebooks").symlink_to(real)  # the folder swapped for a link after the policy's check
    with pytest.raises(OSError):
        late_mounts.attach(tmp_path / "late", tmp_path / "notebooks", False, os.getpid())


# -- the copy a container on another node (Ray) gets instead of a bind (workdir_sync.py) ---------------------
SYNC_CELL = """
from cellhop.kernel import workdir_sync
from cellhop.kernel.extension import remote_cells
_session = next(s for key, s in remote_cells(get_ipython()).sessions.items()
                if key[0][6] == "none")  # the %%remote --workdir none container (run spec key: its workdir)
print(workdir_sync.push(_session, {{}}, {folder!r}, limit={limit}))
"""


def test_the_folder_is_copied_changed_files_only_skipping_hidden_and_ignored(nb, notebook_folder):
    folder = notebook_folder / "copied"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("one")
    (folder / "sub" / "b.txt").write_text("two")
    (folder / ".env").write_text("SECRET=1")
    (folder / ".git").mkdir()
    (folder / ".git" / "config").write_text("x")
    (folder / "big").mkdir()
    (folder / "big" / "weights.bin").write_bytes(b"0" * 1000)
    (folder / "out.log").write_text("log")
    (folder / ".gitignore").write_text("# data\nbig/\n*.log\n")
    nb.ok("%%remote --workdir none\nx = 1\n")  # a container whose working folder is its own, as on a node
    first = nb.ok(SYNC_CELL.format(folder=str(folder), limit=10**6)).stdout.strip().splitlines()[-1]
    assert first == "['a.txt', 'sub/b.txt']", first
    seen = nb.ok("%%remote --workdir none\nimport os\nprint(open('a.txt').read(), open('sub/b.txt').read(), "
                 "os.path.exists('.env'), os.path.exists('big'), os.path.exists('out.log'))\n")
    assert seen.stdout.strip().endswith("one two False False False"), seen
    again = nb.ok(SYNC_CELL.format(folder=str(folder), limit=10**6)).stdout.strip().splitlines()[-1]
    assert again == "[]", again  # nothing changed: nothing sent
    (folder / "sub" / "b.txt").write_text("two, changed")
    changed = nb.ok(SYNC_CELL.format(folder=str(folder), limit=10**6)).stdout.strip().splitlines()[-1]
    assert changed == "['sub/b.txt']", changed
    assert nb.ok("%%remote --workdir none\nprint(open('sub/b.txt').read())\n").stdout.strip().endswith("changed")
    too_big = nb.run(SYNC_CELL.format(folder=str(folder), limit=5))
    assert too_big.status == "error" and "c.Cellhop.sync_limit" in too_big.evalue and ".gitignore" in too_big.evalue


def ray_copies_the_folder_to_the_node(ray_cluster, tmp_path):  # collected by test_ray_runtime.py (its cluster)
    """On the Ray runtime `--workdir rw` copies the notebook's folder to the container's node before each cell
    (changed files only): relative paths work there too."""
    folder = tmp_path / "notebook"
    folder.mkdir()
    (folder / "data.txt").write_text("first")
    args = ("--Cellhop.runtime=ray", f"--Cellhop.ray_address={ray_cluster.address}")
    with kernel_in(folder, args, queue_timeout=30) as on_ray:
        ran = on_ray.ok("%%remote --workdir rw\nimport os\nprint(open('data.txt').read(), os.getcwd())\n")
        assert "first" in ran.stdout and str(folder) not in ran.stdout, ran  # a copy, in the node's folder
        (folder / "data.txt").write_text("second")
        (folder / "new.txt").write_text("new")
        ran = on_ray.ok("%%remote --workdir rw\nprint(open('data.txt').read(), open('new.txt').read())\n")
        assert ran.stdout.strip().endswith("second new"), ran


def test_a_kernel_whose_folder_is_gone_runs_default_cells_without_it():
    gone = Path(tempfile.mkdtemp(prefix="ch-gone-", dir="/tmp"))
    with kernel_in(gone) as nb:
        gone.rmdir()  # the notebook's folder deleted under its running kernel
        ran = nb.ok("%%remote\nprint('ran')\n")
        assert ran.stdout.strip().endswith("ran") and len(_notes(ran)) == 1, ran
        assert "cannot be read" in _notes(ran)[0] and not ran.stderr, ran
