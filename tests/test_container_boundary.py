"""The container as a boundary, tried from inside real bubblewrap containers (issue 18).

- no capability, no new privileges, an unprivileged uid on the host, its own host name, a read-only root,
  no host home folders;
- links a cell plants in what it can see of its folder are never followed by the server (logs, restart);
- the server's environment (its token, cloud keys, anything unknown) does not arrive;
- its own network namespace: the host's loopback is out of reach (the kernel still answers);
- limits it cannot lift: a process limit, memory of all its processes together, a CPU quota; a huge
  PROT_NONE reservation (as CUDA makes) still fits under a memory limit; its groups go away with it, and
  those of a control plane killed with SIGKILL are removed by the next one;
- a capped, rotated log whose tail is read from the end;
- image build steps run sandboxed: no host file written, no runtime folder read.

Network traffic goes only to this machine's loopback or to addresses inside the namespaces the test made.
"""

from __future__ import annotations

import ast
import json
import re
import secrets
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from processes import container_kernel_pids, wait_until

from cellhop.server_ext.doctor import bubblewrap_problem
from cellhop.wire import KernelConnection
from cellhop.container import ContainerSpec
from cellhop.server_ext.container_network import find_slirp4netns

# bubblewrap installed AND able to make a sandbox here (a container without user namespaces has the
# binary but cannot): otherwise every test below would fail on a setup problem, not a bug
NO_SANDBOX = bubblewrap_problem()
pytestmark = pytest.mark.skipif(NO_SANDBOX is not None, reason=f"{NO_SANDBOX} (`cellhop doctor` says what to do)")

SECRET_TEXT = "host-secret-5c1e9a7b"


def start(manager, **kwargs):
    return manager.start(ContainerSpec(gpu="none", owner="tests", **kwargs))


def value(container, code: str, timeout: float = 120):
    """Run `code` in the container; the value it leaves in `r` (through its repr)."""
    conn = KernelConnection(container.connection_info, channels=("shell",))
    try:
        reply = conn.request("shell", "execute_request", {"code": code, "silent": False,
                                                          "user_expressions": {"r": "r"}}, timeout=timeout).content
    finally:
        conn.close()
    assert reply["status"] == "ok", reply
    result = reply["user_expressions"]["r"]
    assert result["status"] == "ok", result
    return ast.literal_eval(result["data"]["text/plain"])


def host_status(manager, container) -> dict[str, str]:
    pid = manager.runtime._kernel_pid(container)
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(re.findall(r"^(\w+):[ \t]*(.*)$", text, re.M))


# -- privileges ----------------------------------------------------------------------------------
def test_a_container_has_no_capability_no_new_privileges_and_no_host_root(manager):
    container = start(manager)
    inside = value(container, "import re\n"
                              "r = dict(re.findall(r'^(Cap\\w+|NoNewPrivs):\\s*(\\S+)$', "
                              "open('/proc/self/status').read(), re.M))")
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(inside[cap], 16) == 0, (cap, inside)
    assert inside["NoNewPrivs"] == "1"
    outside = host_status(manager, container)  # what the host's kernel says of that process
    assert "0" not in outside["Uid"].split() and "0" not in outside["Gid"].split(), outside
    assert int(outside["CapEff"], 16) == 0 and int(outside["CapBnd"], 16) == 0
    assert outside["Groups"] == ""


def test_a_container_cannot_rename_the_host_remount_its_root_or_write_host_files(manager):
    before = socket.gethostname()
    probe = Path("/etc") / f"cellhop-boundary-{secrets.token_hex(4)}"
    container = start(manager)
    try:
        got = value(container, f"""
import socket, subprocess
r = {{}}
try:
    with open('/proc/sys/kernel/hostname', 'w') as f:
        f.write('cellhop-renamed')
    r['proc'] = 'written'
except OSError as exc:
    r['proc'] = type(exc).__name__
try:
    socket.sethostname('cellhop-renamed')
    r['sethostname'] = 'done'
except OSError as exc:
    r['sethostname'] = type(exc).__name__
r['mount'] = subprocess.run(['mount', '-o', 'remount,rw', '/'], capture_output=True).returncode
try:
    with open({str(probe)!r}, 'w') as f:
        f.write('x')
    r['etc'] = 'written'
except OSError as exc:
    r['etc'] = type(exc).__name__
""")
        assert got["proc"] != "written" and got["sethostname"] != "done", got
        assert got["mount"] != 0 and got["etc"] != "written", got
        assert socket.gethostname() == before
        assert not probe.exists()
    finally:  # were the sandbox broken, leave the host as it was
        if socket.gethostname() != before:
            socket.sethostname(before)
        probe.unlink(missing_ok=True)


def test_a_container_cannot_see_the_hosts_home_folders(manager):
    marker = Path.home() / f".cellhop-boundary-{secrets.token_hex(4)}"
    marker.write_text(SECRET_TEXT)
    try:
        container = start(manager)
        got = value(container, f"import os\nr = (os.path.exists({str(marker)!r}), os.environ['HOME'], "
                               "os.access(os.environ['HOME'], os.W_OK))")
        assert got[0] is False
        assert not Path(got[1]).is_relative_to(Path.home()) and got[2] is True  # a HOME of its own
    finally:
        marker.unlink()


# -- links the container plants ---------------------------------------------------------------------
PLANT = """
import os, shutil
planted = []
here = os.getcwd()
for folder in (os.path.dirname(os.path.dirname(here)), os.path.dirname(here), here):
    names = set(os.listdir(folder)) | {'container.log', 'container.log.1', 'owner.json', 'connection.json'}
    for name in sorted(names):
        path = os.path.join(folder, name)
        if name.startswith('k-') or path in (here, os.path.dirname(here)):
            continue  # its own sockets, and the folders it stands in
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)
            os.symlink(SECRET, path)
            planted.append(path)
        except OSError:
            pass
print('printed after planting')
r = planted
"""


def test_links_a_container_plants_are_never_followed_by_the_server(manager):
    folder = Path(tempfile.mkdtemp(prefix="ch-bnd-", dir="/var/tmp"))
    secret = folder / "secret.txt"
    secret.write_text(SECRET_TEXT)
    try:
        container = start(manager)
        planted = value(container, f"SECRET = {str(secret)!r}\n" + PLANT)
        assert planted, "the cell could plant no link at all: the test would prove nothing"
        assert SECRET_TEXT not in manager.logs(container.id)
        assert SECRET_TEXT not in manager.logs(container.id, tail=5)
        manager.restart(container.id)  # rewrites the connection file and the owner record
        assert secret.read_text() == SECRET_TEXT
        assert value(container, "r = 'answers after the restart'") == "answers after the restart"
        assert SECRET_TEXT not in manager.logs(container.id)
        manager.stop(container.id)
        assert SECRET_TEXT not in manager.logs(container.id)
        manager.remove(container.id)
        assert secret.read_text() == SECRET_TEXT
    finally:
        shutil.rmtree(folder)


# -- the server's environment -------------------------------------------------------------------------
def test_the_servers_environment_does_not_reach_a_container(manager, monkeypatch):
    monkeypatch.setenv("JUPYTER_TOKEN", "server-token-3f9d2c")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-8b7a6c")
    monkeypatch.setenv("CELLHOP_BOUNDARY_UNKNOWN", "unknown-1e2d3c")
    monkeypatch.setenv("LC_TIME", "C.UTF-8")  # the allow-list's kind of variable
    container = start(manager, env={"SET_BY_SPEC": "yes"})
    env = value(container, "import os\nr = dict(os.environ)")
    for name in ("JUPYTER_TOKEN", "AWS_SECRET_ACCESS_KEY", "CELLHOP_BOUNDARY_UNKNOWN"):
        assert name not in env, name
    assert not [v for v in env.values() if "server-token-3f9d2c" in v or "aws-secret-8b7a6c" in v]
    assert env["LC_TIME"] == "C.UTF-8" and env["SET_BY_SPEC"] == "yes" and env["PATH"]


# -- the network ----------------------------------------------------------------------------------------
@pytest.fixture
def host_port():
    """A port listening on this host's loopback."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


REACH = """
import os, socket
def reach(host, port):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((host, port))
        return 'connected'
    except OSError as exc:
        return type(exc).__name__
    finally:
        s.close()
"""


def test_an_isolated_container_cannot_reach_the_hosts_loopback(manager, host_port):
    container = start(manager)
    got = value(container, REACH + f"r = {{'loopback': reach('127.0.0.1', {host_port}), "
                                   "'network': os.environ.get('CELLHOP_NETWORK'), "
                                   "'interfaces': [n for _, n in socket.if_nameindex()], "
                                   "'routes': open('/proc/net/route').read().splitlines()[1:]}")
    assert got["loopback"] != "connected", got
    assert got["network"] == "isolated"
    if find_slirp4netns():  # outbound access through slirp4netns: an interface and a default route
        assert "tap0" in got["interfaces"], got
        assert [r for r in got["routes"] if r.split()[:2] == ["tap0", "00000000"]], got["routes"]
        # its gateway (an address inside the namespace, answered by slirp4netns) does not lead to the
        # host's loopback either (--disable-host-loopback)
        assert value(container, REACH + f"r = reach('10.0.2.2', {host_port})") != "connected"
    assert "network isolated" in manager.runtime.describe()


def test_a_container_on_the_host_network_does_reach_it(make_manager, host_port):
    """The check above can fail: with c.LocalRuntime.network = 'host' the same port answers."""
    manager = make_manager(network="host")
    container = start(manager)
    assert value(container, REACH + f"r = (reach('127.0.0.1', {host_port}), os.environ['CELLHOP_NETWORK'])") == \
        ("connected", "host")


def test_tcp_channels_mean_the_host_network_and_say_so(make_manager):
    manager = make_manager(transport="tcp")
    container = start(manager)
    assert value(container, "import os\nr = os.environ['CELLHOP_NETWORK']") == "host"
    assert "host network (transport 'tcp'" in manager.runtime.describe()


# -- limits ---------------------------------------------------------------------------------------------
FORKS = """
import os, signal, time
children, error = [], None
for _ in range(800):
    try:
        pid = os.fork()
    except OSError as exc:
        error = type(exc).__name__
        break
    if pid == 0:
        time.sleep(300)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.kill(pid, signal.SIGKILL)
for pid in children:
    os.waitpid(pid, 0)
lifted = []
for path in LIMIT_FILES:
    try:
        with open(path, 'w') as f:
            f.write('max')
        lifted.append(path)
    except OSError:
        pass
r = (len(children), error, lifted)
"""


def test_800_forks_under_a_limit_of_200_fail_and_the_cell_cannot_lift_it(make_manager):
    manager = make_manager(default_pids=200)
    container = start(manager)
    groups = getattr(manager.runtime._limits[container.id], "groups", None)
    files = [str(groups.paths["pids"] / "pids.max")] if groups is not None and "pids" in groups.paths else []
    forked, error, lifted = value(container, f"LIMIT_FILES = {files!r}\n" + FORKS, timeout=300)
    assert forked < 200 and error == "BlockingIOError", (forked, error)
    assert lifted == []
    assert "pids:" in value(container, "import os\nr = os.environ.get('CELLHOP_LIMITS_ENFORCEMENT', '')")


RESERVE = """
import ctypes, mmap, os
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
size = 64 << 30  # what CUDA reserves up front, with no memory behind it
addr = libc.mmap(None, size, 0, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000, -1, 0)  # PROT_NONE, NORESERVE
reserved = addr is not None and addr != ctypes.c_void_p(-1).value
if reserved:
    libc.munmap(ctypes.c_void_p(addr), ctypes.c_size_t(size))
r = (reserved, os.environ['CELLHOP_MEMORY_ENFORCEMENT'])
"""


@pytest.mark.parametrize("cgroups", ["auto", "off"])
def test_a_64_gib_prot_none_reservation_fits_under_a_1g_limit(make_manager, cgroups):
    manager = make_manager(cgroups=cgroups)
    container = start(manager, memory="1G")
    reserved, enforcement = value(container, RESERVE)
    assert reserved, f"a PROT_NONE reservation failed under the {enforcement} memory limit"
    placed = manager.runtime.placement is not None and manager.runtime.placement.enforcement("memory")
    assert enforcement == ("cgroup" if placed else "rlimit")


HOLDERS = """
import select, subprocess, sys
HOLD = ("import sys\\nb = bytearray(600 << 20)\\nb[::4096] = b'x' * len(range(0, 600 << 20, 4096))\\n"
        "print('held', flush=True)\\nsys.stdin.read()")
procs = []
for _ in range(3):
    p = subprocess.Popen([sys.executable, '-c', HOLD], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    select.select([p.stdout], [], [], 60)
    p.stdout.readline()  # 'held', or end of file once it was killed
    procs.append(p)
holding = sum(p.poll() is None for p in procs)
for p in procs:
    p.stdin.close()
    p.wait()
r = holding
"""


def test_three_processes_of_600_mib_cannot_together_pass_a_1g_limit(manager):
    from cellhop.server_ext.cgroups import place

    if place(("memory",)).enforcement("memory") is None:
        pytest.skip("this host gives no memory control group: RLIMIT_DATA limits each process, not their sum")
    container = start(manager, memory="1G")
    holding = value(container, HOLDERS, timeout=300)
    assert holding * 600 < 1024, f"{holding} processes held 600 MiB each under a 1 GiB limit"


def test_a_containers_groups_are_removed_when_it_ends(manager):
    container = start(manager, memory="512M", cpus=1)
    groups = manager.runtime._limits[container.id].groups
    if groups is None:
        pytest.skip("this host gives no control group to this server")
    folders = groups.folders()
    assert folders and all(f.is_dir() for f in folders)
    manager.stop(container.id)
    assert not [f for f in folders if f.exists()]


OWNER = r"""
import json, sys
from cellhop.server_ext.config import Cellhop
from cellhop.container import ContainerSpec
from cellhop.server_ext.container_manager import ContainerManager

manager = ContainerManager(Cellhop(simulated_gpus="H100:1", runtime_root=sys.argv[1]))
container = manager.start(ContainerSpec(gpu="none", owner="doomed", memory="512M"))
groups = manager.runtime._limits[container.id].groups
print(json.dumps({"directory": str(container.directory),
                  "groups": [str(f) for f in groups.folders()] if groups else []}), flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("where", ["same runtime folder", "another runtime folder"])
def test_groups_a_killed_control_plane_left_are_removed_by_the_next_one(runtime_root, python_child, make_manager,
                                                                      where):
    owner = python_child(OWNER, runtime_root)
    info = json.loads(owner.expect("{", timeout=90))
    if not info["groups"]:
        pytest.skip("this host gives no control group to this server")
    owner.proc.kill()
    owner.proc.wait()
    wait_until(lambda: not container_kernel_pids(info["directory"]), 15, "the container to die with its owner")
    if where == "same runtime folder":  # its record (owner.json) names them
        make_manager()
    else:  # the groups name their owner's pid, which is dead
        other = Path(tempfile.mkdtemp(prefix="ch-", dir="/tmp"))
        try:
            make_manager(runtime_root=str(other))
        finally:
            shutil.rmtree(other, ignore_errors=True)
    assert not [g for g in info["groups"] if Path(g).exists()]


# -- the log ----------------------------------------------------------------------------------------------
def test_the_log_is_capped_and_rotated_and_its_tail_read_from_the_end(make_manager):
    manager = make_manager(max_log_bytes=64 * 1024)
    container = start(manager)
    value(container, "import os\n"
                     "for n in range(0, 100000, 1000):\n"
                     "    os.write(1, ''.join(f'line {i:06d}\\n' for i in range(n, n + 1000)).encode())\n"
                     "r = 1")
    wait_until(lambda: "line 099999" in manager.logs(container.id, tail=1), 30, "the last line to reach the log")
    sizes = {p.name: p.stat().st_size for p in container.directory.iterdir() if p.name.startswith("container.log")}
    assert set(sizes) == {"container.log", "container.log.1"} and max(sizes.values()) <= 64 * 1024, sizes
    assert manager.logs(container.id, tail=3).splitlines() == ["line 099997", "line 099998", "line 099999"]


def test_a_tail_of_a_huge_log_reads_only_its_end(tmp_path):
    import tracemalloc

    from cellhop.server_ext.container_log import read_log

    with open(tmp_path / "container.log", "wb") as f:
        f.truncate(512 << 20)  # half a GiB (a hole: no disk is used), then the lines that matter
        f.seek(0, 2)
        f.write(b"".join(b"line %d\n" % i for i in range(1000)))
    tracemalloc.start()
    try:
        text = read_log(tmp_path, tail=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert text.splitlines() == ["line 997", "line 998", "line 999"]
    assert peak < 4 << 20, f"reading a 3-line tail took {peak >> 20} MiB"


# -- image build steps ---------------------------------------------------------------------------------------
def test_an_image_build_step_cannot_write_a_host_file_or_read_the_runtime_folder(tmp_path):
    from jupyter_core.paths import jupyter_runtime_dir

    from cellhop.server_ext.images.builder import ImageBuildError
    from cellhop.server_ext.images.service import Images
    from cellhop.image_spec import Image

    state = Path(tempfile.mkdtemp(prefix="ch-bnd-img-", dir="/var/tmp"))
    victim = state / "host-file.txt"
    victim.write_text("untouched\n")
    victim.chmod(0o666)  # even a file anyone may write: the host's root is read-only to a step
    runtime = Path(jupyter_runtime_dir())
    runtime.mkdir(parents=True, exist_ok=True)
    token_file = runtime / f"jpserver-boundary-{secrets.token_hex(4)}.json"
    token_file.write_text(json.dumps({"token": SECRET_TEXT}))
    try:
        images = Images(state / "images")
        for step in (f"echo pwned >> {victim}", f"cat {token_file}"):
            events = []
            with pytest.raises(ImageBuildError, match="run_commands"):
                images.build(Image.current().run_commands(step).to_json(), on_event=events.append)
            assert SECRET_TEXT not in json.dumps(events)
        assert victim.read_text() == "untouched\n"
        # what a step may do: write its own layer
        info = images.build(Image.current().run_commands("echo mine > $CELLHOP_LAYER_DIR/mine.txt").to_json())
        assert (images.store.layer_dir(info["key"]) / "mine.txt").read_text() == "mine\n"
    finally:
        token_file.unlink(missing_ok=True)
        shutil.rmtree(state, ignore_errors=True)

