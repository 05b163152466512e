"""One GPU box, many users (issue 20): two real Unix users, made here and removed after, each with a Jupyter
server of their own running as that user, sharing a host folder an admin set up, and the same simulated GPUs.

- never do both hold one GPU, and neither learns more of the other's lease than user, since and idle;
- fifty queued requests of one user and one of another are served alternately (round robin);
- max_gpus_per_user holds across a user's requests, that user's idle container yielding first;
- files planted by one user (symlinks, FIFOs, huge or malformed files, names claiming the other's uid)
  break nothing of the other's server;
- usage records survive a restart (and a SIGKILL) and their totals match the leases held;
- past monthly_gpu_hours a request is refused with the numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
from blocking_client import stdout_until_idle
from server_process import ServerProcess
from unix_users import (as_user_argv, can_make_users, make_group, make_user, remove_group, remove_user,
                        user_env)

from cellhop.server_ext.usage_log import UsageLog

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(can_make_users() is not None, reason=str(can_make_users()))]


def _set_up_host(root: Path, group: str, settings: dict | None = None) -> Path:
    """What an admin does once, with the test's own group and folder."""
    argv = [sys.executable, "-m", "cellhop.server_ext.cli", "host-setup", "--dir", str(root), "--group", group]
    for key, value in (settings or {}).items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


class UserServer(ServerProcess):
    """A cellhop Jupyter server running as `user`, its leases in the host folder `host`."""

    def __init__(self, user, host: Path, gpus: str = "H100:1", extra_args=()):
        runtime = user.home / "cellhop-rt"
        runtime.mkdir(exist_ok=True)
        os.chown(runtime, user.uid, user.gid)
        env = user_env(user, {"CELLHOP_STANDBY": "0"})
        super().__init__(runtime, gpus, env=env, extra_args=[f"--Cellhop.host_dir={host}", *extra_args])
        self.env = env  # the user's own environment, not the test's
        self.argv = as_user_argv(user, self.argv)
        self.user = user
        (runtime / "notebooks").mkdir(exist_ok=True)
        os.chown(runtime / "notebooks", user.uid, user.gid)

    def hold(self, gpu: str = "H100", queue_timeout: float | None = None) -> tuple[int, dict]:
        spec = {"gpu": gpu, "owner": f"notebook of {self.user.name}"}
        if queue_timeout is not None:
            spec["queue_timeout"] = queue_timeout
        return self.api("POST", "containers", {"spec": spec}, timeout=120)

    def stop_container(self, container_id: str) -> dict:
        """Stop and remove it; its last view."""
        status, body = self.api("DELETE", f"containers/{container_id}")
        assert status == 200, body
        return body


@pytest.fixture
def users():
    group = make_group()
    alice, bob = make_user("cha", groups=(group,)), make_user("chb", groups=(group,))
    try:
        yield alice, bob, group
    finally:
        for user in (alice, bob):
            remove_user(user)
        remove_group(group)


@pytest.fixture
def host():
    """Where the admin puts the host folder: somewhere every user can reach (pytest's tmp_path is root's)."""
    parent = Path(tempfile.mkdtemp(prefix="cellhop-host-", dir="/tmp"))
    os.chmod(parent, 0o755)
    try:
        yield parent / "host"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_two_users_never_hold_one_gpu_and_see_only_who_since_and_idle(users, host):
    alice, bob, group = users
    _set_up_host(host, group)
    with UserServer(alice, host) as a, UserServer(bob, host) as b:
        status, held = a.hold()
        assert status == 201, held
        status, refused = b.hold(queue_timeout=1)
        assert status == 503 and f"held by user {alice.name}" in refused["message"], refused
        # bob sees alice's lease: her name, since when, since when idle; nothing of her notebook or container
        _, gpus = b.api("GET", "gpus")
        [holder] = [g["holder"] for g in gpus["gpus"]]
        assert set(holder) == {"user", "since", "idle_since", "owner"} and holder["user"] == alice.name, holder
        assert held["id"] not in json.dumps(gpus) and "notebook of" not in json.dumps(gpus)
        # alice sees all of her own
        _, mine = a.api("GET", "gpus")
        assert mine["gpus"][0]["holder"]["container"] == held["id"]
        # bob waits in the host queue; alice lets go; bob gets it
        got = {}
        waiter = threading.Thread(target=lambda: got.update(zip(("status", "body"), b.hold(queue_timeout=60))))
        waiter.start()
        deadline = time.monotonic() + 30
        while not _queued(b) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _queued(b), "bob's request should wait in the queue"
        a.stop_container(held["id"])
        waiter.join(90)
        assert got["status"] == 201, got
        _, gpus = a.api("GET", "gpus")
        assert gpus["gpus"][0]["holder"]["user"] == bob.name
        status, refused = a.hold(queue_timeout=1)
        assert status == 503, refused


def _queued(server) -> bool:
    _, body = server.api("GET", "containers")
    return any(c["phase"] == "queued" for c in body["containers"])


FAIRNESS = textwrap.dedent("""
    import json, sys, threading, time
    from pathlib import Path
    from cellhop.gpu_request import GpuRequest
    from cellhop.server_ext.gpu_inventory import load_inventory
    from cellhop.server_ext.host_dir import HostPlace
    from cellhop.server_ext.scheduler import Scheduler

    host, private, n, hold_first, out = sys.argv[1:6]
    scheduler = Scheduler(load_inventory("H100:1", environ={}), HostPlace(Path(host), True, "test"),
                          private_root=Path(private), poll_interval=0.01)
    first = scheduler.acquire(GpuRequest.parse("H100"), {"owner": "first"}) if hold_first == "1" else None
    order = []

    def one(i):
        allocation = scheduler.acquire(GpuRequest.parse("H100"), {"owner": f"request {i}"}, timeout=120)
        order.append(time.time())
        time.sleep(0.02)
        scheduler.release(allocation)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(int(n))]
    for t in threads:
        t.start()
    print("queued", flush=True)
    if first is not None:
        sys.stdin.readline()  # hold the GPU until told
        scheduler.release(first)
    for t in threads:
        t.join()
    Path(out).write_text(json.dumps(order))
""")


def test_fifty_requests_of_one_user_and_one_of_another_are_served_alternately(users, host):
    alice, bob, group = users
    _set_up_host(host, group)
    outs = {}
    procs = {}
    for user, n, first in ((alice, 50, "1"), (bob, 1, "0")):
        private = user.home / "sched"
        private.mkdir()
        os.chown(private, user.uid, user.gid)
        outs[user.name] = user.home / "order.json"
        procs[user.name] = subprocess.Popen(
            as_user_argv(user, [sys.executable, "-c", FAIRNESS, str(host), str(private), str(n), first,
                                str(outs[user.name])]),
            env=user_env(user), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(user.home))
        assert procs[user.name].stdout.readline().strip() == "queued"
        if user is alice:  # her fifty tickets are in the queue before bob's one
            _wait_for_tickets(host, 50)
    _wait_for_tickets(host, 51)
    procs[alice.name].stdin.write("go\n")
    procs[alice.name].stdin.flush()
    for proc in procs.values():
        assert proc.wait(180) == 0
    grants = sorted([(t, alice.name) for t in json.loads(outs[alice.name].read_text())]
                    + [(t, bob.name) for t in json.loads(outs[bob.name].read_text())])
    position = [who for _, who in grants].index(bob.name)
    assert position <= 1, f"bob's one request was served at position {position} of {len(grants)}"


def _wait_for_tickets(host: Path, n: int) -> None:
    deadline = time.monotonic() + 60
    while len([p for p in (host / "queue").iterdir() if p.name.endswith(".ticket")]) < n:
        assert time.monotonic() < deadline, "the requests did not all queue"
        time.sleep(0.05)


def test_the_cap_per_user_holds_and_that_users_idle_container_yields_first(users, host):
    alice, bob, group = users
    _set_up_host(host, group, {"max_gpus_per_user": 1})
    with UserServer(alice, host, gpus="H100:2") as a, UserServer(bob, host, gpus="H100:2") as b:
        status, first = a.hold()
        assert status == 201, first
        status, second = a.hold(queue_timeout=30)  # her first, idle, yields: she never holds two
        assert status == 201, second
        _, view = a.api("GET", f"containers/{first['id']}")
        assert view["phase"] == "exited" and "max_gpus_per_user" in view["exit"]["description"], view
        status, bobs = b.hold(queue_timeout=30)  # the other H100 is bob's to take
        assert status == 201, bobs
        _, gpus = a.api("GET", "gpus")
        assert sorted(g["holder"]["user"] for g in gpus["gpus"]) == sorted([alice.name, bob.name])
        status, refused = a.api("POST", "containers", {"spec": {"gpu": "H100:2", "owner": "too many"}})
        assert status == 400 and "max_gpus_per_user = 1" in refused["message"], refused


PLANT = textwrap.dedent("""
    import fcntl, json, os, sys, time
    host, victim_uid = sys.argv[1], int(sys.argv[2])
    me = os.getuid()
    leases, queue = os.path.join(host, "leases"), os.path.join(host, "queue")
    os.symlink("/etc/shadow", os.path.join(leases, f"GPU-simulated-h100-0.{me}.aaaa.lock"))
    os.mkfifo(os.path.join(queue, f"00000000000000000001.{me}.bbbb.ticket"))
    with open(os.path.join(leases, f"GPU-simulated-h100-0.{me}.cccc.lock"), "w") as f:
        f.write("x" * 100000)
    # names claiming the victim's uid, owned by this user
    open(os.path.join(leases, f"GPU-simulated-h100-0.{victim_uid}.dddd.lock"), "w").write("{}")
    open(os.path.join(queue, f"00000000000000000002.{victim_uid}.eeee.ticket"), "w").write("{}")
    # live (locked) files holding garbage, and a ticket wanting a type as a list of junk
    held = []
    for name, body in ((f"GPU-simulated-h100-0.{me}.ffff.lock", b"\\x00\\xff not json"),
                       (f"00000000000000000003.{me}.gggg.ticket", b'{"types": [1, {"a": 2}]}'),
                       (f"GPU-simulated-h100-0.{me}.hhhh.lock", b"[1, 2, 3]")):
        fd = os.open(os.path.join(leases if name.endswith("lock") else queue, name), os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, body)
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.append(fd)
    os.mkdir(os.path.join(leases, f"GPU-simulated-h100-0.{me}.iiii.lock"))
    # a real lease of the second H100, saying it is the victim's (the third stays free)
    fd = os.open(os.path.join(leases, f"GPU-simulated-h100-1.{me}.jjjj.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, json.dumps({"user": sys.argv[3], "since": 1, "idle_since": None}).encode())
    fcntl.flock(fd, fcntl.LOCK_EX)
    held.append(fd)
    print("planted", flush=True)
    sys.stdin.readline()
""")


def test_files_planted_by_one_user_break_nothing_of_the_others_server(users, host):
    alice, bob, group = users
    _set_up_host(host, group)
    planter = subprocess.Popen(as_user_argv(bob, [sys.executable, "-c", PLANT, str(host), str(alice.uid),
                                                  alice.name]),
                               env=user_env(bob), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               cwd=str(bob.home))
    try:
        assert planter.stdout.readline().strip() == "planted"
        with UserServer(alice, host, gpus="H100:3") as a:
            _, gpus = a.api("GET", "gpus")
            # a file bob holds locked is his lease, whatever it holds (the lock decides, never the content);
            # a symlink, a FIFO, a folder, a huge file or one claiming her uid is no lease at all
            garbage, forged, free = (g["holder"] for g in gpus["gpus"])
            assert garbage["user"] == bob.name and garbage["owner"] == f"user {bob.name}", garbage
            assert forged["user"] == bob.name and forged["owner"] == f"user {bob.name}", forged  # not hers
            assert free is None
            status, held = a.hold(queue_timeout=10)  # nor does his garbage ticket block her
            assert status == 201, held
            _, gpus = a.api("GET", "gpus")
            assert gpus["gpus"][2]["holder"]["container"] == held["id"]
            a.stop_container(held["id"])
    finally:
        planter.kill()
        planter.wait()


def test_usage_survives_restarts_and_crashes_and_matches_the_leases(users, host):
    alice, bob, group = users
    _set_up_host(host, group)
    with UserServer(alice, host) as a:
        status, held = a.hold()
        assert status == 201, held
        time.sleep(1.0)
        view = a.stop_container(held["id"])
    phases = {p["phase"]: p["time"] for p in view["phases"]}
    crashed = UserServer(alice, host).start()
    status, second = crashed.hold()
    assert status == 201, second
    time.sleep(1.0)
    crashed.stop(signal.SIGKILL)  # no end written by it
    killed_at = time.time()
    with UserServer(alice, host):  # her next server writes the end from the lease's last sign of life
        deadline = time.monotonic() + 30
        while any(u.end is None for u in UsageLog(host / "usage").leases(uid=alice.uid)):
            assert time.monotonic() < deadline, "the crashed server's lease was not ended"
            time.sleep(0.2)
    uses = {u.lease: u for u in UsageLog(host / "usage").leases(uid=alice.uid)}
    assert len(uses) == 2, uses
    normal, recovered = sorted(uses.values(), key=lambda u: u.start)
    assert normal.user == alice.name and normal.gpu_type == "H100" and not normal.recovered
    # the lease spans the container's GPU hold: granted before it started, released once it exited
    assert normal.start <= phases["starting"] + 0.5 and normal.end >= phases["exited"] - 0.5
    assert 1.0 <= (normal.end - normal.start) < 30
    assert recovered.recovered and recovered.end is not None and recovered.end <= killed_at + 1
    assert recovered.end >= recovered.start
    # bob cannot read alice's usage
    peek = subprocess.run(as_user_argv(bob, [sys.executable, "-c", (
        "import sys; from cellhop.server_ext.usage_log import UsageLog; "
        f"print(len(UsageLog(sys.argv[1]).leases(uid={alice.uid})))"), str(host / "usage")]),
        env=user_env(bob), capture_output=True, text=True, cwd=str(bob.home))
    assert peek.returncode == 0 and peek.stdout.strip() == "0", peek.stdout + peek.stderr


def test_past_the_monthly_budget_a_request_is_refused_with_its_numbers(users, host):
    alice, bob, group = users
    _set_up_host(host, group, {"monthly_gpu_hours": 0.0002})  # 0.72 s
    with UserServer(alice, host) as a, UserServer(bob, host) as b:
        status, held = a.hold()
        assert status == 201, held
        time.sleep(1.5)
        a.stop_container(held["id"])
        status, refused = a.hold()
        assert status == 403 and refused["error"] == "GpuBudgetExceeded", refused
        message = refused["message"]
        assert f"{alice.name} has used" in message and "of 0.0002 GPU-hours this month" in message, message
        assert "resets on" in message
        status, bobs = b.hold()  # bob's budget is his own
        assert status == 201, bobs


def _kernel_of(server: UserServer):
    """A python3 kernel of `server` (running as its user), and a client over its connection file."""
    from jupyter_client import BlockingKernelClient

    status, kernel = server.request("POST", "/api/kernels", {"name": "python3"})
    assert status == 201, kernel
    runtime = server.user.home / ".local" / "share" / "jupyter" / "runtime"
    deadline = time.monotonic() + 30
    path = runtime / f"kernel-{kernel['id']}.json"
    while not path.exists():
        assert time.monotonic() < deadline, f"no connection file {path}"
        time.sleep(0.1)
    kc = BlockingKernelClient(connection_file=str(path))
    kc.load_connection_file()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return kc


def _execute(kc, code: str, timeout: float = 120) -> tuple[dict, str]:
    out = stdout_until_idle(kc, kc.execute(code), timeout)
    return kc.get_shell_msg(timeout=timeout)["content"], out


def test_two_users_kernels_take_turns_on_the_one_gpu(users, host):
    alice, bob, group = users
    _set_up_host(host, group)
    with UserServer(alice, host) as a, UserServer(bob, host) as b:
        ka, kb = _kernel_of(a), _kernel_of(b)
        try:
            content, out = _execute(ka, "%load_ext cellhop\n")
            content, out = _execute(ka, "%%remote --gpu H100\nimport os\nprint('in', os.environ['CELLHOP_CONTAINER_ID'])")
            assert content["status"] == "ok", (content, out)
            [mine] = a.api("GET", "containers")[1]["containers"]
            assert out.split() == ["in", mine["id"]] and mine["gpus"][0]["type"] == "H100"
            # bob's cell waits for the H100 alice's notebook holds, then runs once she lets it go
            _execute(kb, "%load_ext cellhop\n")
            msg_id = kb.execute("%%remote --gpu H100\nprint('bob ran')")
            deadline = time.monotonic() + 60
            while not _queued(b):
                assert time.monotonic() < deadline, "bob's cell should wait for the GPU"
                time.sleep(0.1)
            _, gpus = b.api("GET", "gpus")
            assert gpus["gpus"][0]["holder"]["user"] == alice.name
            a.stop_container(mine["id"])
            reply = kb.get_shell_msg(timeout=120)
            assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["status"] == "ok", reply
            _, gpus = a.api("GET", "gpus")
            assert gpus["gpus"][0]["holder"]["user"] == bob.name
        finally:
            ka.stop_channels()
            kb.stop_channels()
