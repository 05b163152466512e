"""Commands inside a running container: `POST containers/{id}/exec`, `cellhop exec`, `cellhop.Container(id).exec`,
`cellhop.Sandbox`, and a container's log followed as it grows (`logs?follow=1`, `cellhop logs -f`).

A real jupyter_server with cellhop in this process, real bubblewrap containers; the exec'd process proves
where it is (the kernel's namespaces, its CUDA_VISIBLE_DEVICES, its uid, no capabilities, the container's
control group, not the server's environment nor its runtime folder)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from cellhop.errors import CellhopError
from cellhop.server_ext.api.base import KERNEL_TOKEN_SETTING
from cellhop.server_ext.doctor import bubblewrap_problem
from cellhop.server_ext.kernel_tokens import token_for

pytestmark = [pytest.mark.timeout(240)]

SECRET = "s3cr3t-exec-value-4711"
NAMESPACES = ("pid", "net", "mnt", "uts", "ipc", "cgroup")
# what the exec'd process reports about itself, one "key=value" line each
WHERE = r"""
import os, sys
print("cvd=" + os.environ.get("CUDA_VISIBLE_DEVICES", "<none>"))
print("foo=" + os.environ.get("FOO", "<none>"))
print("server_marker=" + os.environ.get("CELLHOP_TEST_SERVER_ONLY", "<none>"))
print(f"uid={os.getuid()} gid={os.getgid()}")
status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
for key in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb", "NoNewPrivs"):
    print(key + "=" + status[key].strip())
for ns in NAMESPACES:
    print("ns_" + ns + "=" + os.readlink("/proc/self/ns/" + ns))
print("cwd=" + os.getcwd())
for folder in sys.argv[1:]:
    try:
        print(folder + "=" + ",".join(sorted(os.listdir(folder))))
    except OSError as exc:
        print(folder + "=unreadable")
""".replace("NAMESPACES", repr(NAMESPACES))


@pytest.fixture(autouse=True)
def _needs_bubblewrap():
    problem = bubblewrap_problem()
    if problem:
        pytest.skip(f"containers cannot be sandboxed here: {problem}")


async def call(jp_fetch, method, path, body=None, headers=None, params=None):
    kwargs = {"method": method, "raise_error": False, "request_timeout": 120, "headers": headers or {},
              "params": params}
    if body is not None or method == "POST":
        kwargs["body"] = json.dumps(body or {})
    r = await jp_fetch("cellhop", "api", *path.split("/"), **kwargs)
    return r.code, r.body.decode()


def lines_of(body: str) -> list[dict]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def output(lines: list[dict], stream: str = "stdout") -> str:
    return "".join(l["text"] for l in lines if l.get("stream") == stream)


async def start(jp_fetch, spec=None, headers=None) -> str:
    code, body = await call(jp_fetch, "POST", "containers", {"spec": {"gpu": "H100", "owner": "t", **(spec or {})}},
                            headers=headers)
    assert code == 201, body
    return json.loads(body)["id"]


async def execute(jp_fetch, cid, argv, headers=None, **extra):
    code, body = await call(jp_fetch, "POST", f"containers/{cid}/exec", {"argv": argv, **extra}, headers=headers)
    assert code == 200, body
    lines = lines_of(body)
    return lines, lines[-1]


async def test_an_exec_runs_inside_the_container_as_its_user_with_nothing_of_the_servers(
        jp_fetch, control_plane, runtime_root, monkeypatch):
    monkeypatch.setenv("CELLHOP_TEST_SERVER_ONLY", "the server's own")  # the server runs in this process
    neighbour = await start(jp_fetch, {"gpu": "A10G"})
    cid = await start(jp_fetch, {"env": {"FOO": "bar"}})
    container = control_plane.manager.get(cid)
    containers = container.directory.parent
    assert sorted(os.listdir(containers)) == sorted([cid, neighbour])  # on the host
    lines, last = await execute(jp_fetch, cid, [sys.executable, "-c", WHERE, str(runtime_root), str(containers),
                                                str(container.directory)])
    assert last == {"exit_code": 0}, lines
    seen = dict(line.split("=", 1) for line in output(lines).splitlines())
    assert seen["cvd"] == container.gpus[0].uuid and seen["foo"] == "bar", seen
    assert seen["server_marker"] == "<none>", "the server's environment reached the command"
    user = control_plane.manager.runtime.sandbox.user
    assert seen["uid"] == f"{user.uid} gid={user.gid}"
    assert user.uid != 0
    for key in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
        assert int(seen[key], 16) == 0, (key, seen[key])
    assert seen["NoNewPrivs"] == "1"
    kernel = control_plane.manager.runtime._kernel_pid(container)
    for ns in NAMESPACES:
        assert seen[f"ns_{ns}"] == os.readlink(f"/proc/{kernel}/ns/{ns}"), ns
        if ns != "cgroup":
            assert seen[f"ns_{ns}"] != os.readlink(f"/proc/self/ns/{ns}"), f"{ns}: the host's namespace"
    assert seen["cwd"] == str(container.directory / "sandbox" / "work")
    # the server's folders are hidden: only the way to its own sandbox folder shows, no neighbour, no log
    assert seen[str(runtime_root)] == "containers" and seen[str(containers)] == cid, seen
    assert seen[str(container.directory)] == "sandbox", seen


async def test_exit_codes_stdin_stderr_a_missing_command_and_a_timeout(jp_fetch):
    cid = await start(jp_fetch)
    lines, last = await execute(jp_fetch, cid, ["sh", "-c", "cat; echo to-err >&2; exit 7"], stdin="from stdin\n")
    assert last == {"exit_code": 7}
    assert output(lines) == "from stdin\n" and output(lines, "stderr") == "to-err\n"
    lines, last = await execute(jp_fetch, cid, ["no-such-program-here"])
    assert last == {"exit_code": 127} and "no-such-program-here: command not found" in output(lines, "stderr")
    lines, last = await execute(jp_fetch, cid, ["sh", "-c", "echo started; exec sleep 600"], timeout=1)
    assert last["timed_out"] is True and last["exit_code"] == -9 and "timeout of 1 s" in last["message"]
    assert output(lines) == "started\n"
    big = "import sys\nfor i in range(40000): sys.stdout.write(f'{i:07d}' + 'x' * 43 + '\\n')"
    lines, last = await execute(jp_fetch, cid, [sys.executable, "-c", big])  # 2 MB, through a bounded queue
    assert last == {"exit_code": 0} and output(lines).splitlines()[::10000] == [
        f"{i:07d}" + "x" * 43 for i in range(0, 40000, 10000)] and len(output(lines)) == 40000 * 51
    lines, last = await execute(jp_fetch, cid, ["sh", "-c", "kill -TERM $$"])
    assert last == {"exit_code": -15}
    for body, says in (({"argv": "ls -l"}, "without a shell"), ({"argv": []}, "non-empty list"),
                       ({"argv": ["ls"], "timeout": -1}, "timeout must be"),
                       ({"argv": ["ls"], "shell": True}, "unknown field(s) shell")):
        code, answer = await call(jp_fetch, "POST", f"containers/{cid}/exec", body)
        assert code == 400 and says in json.loads(answer)["message"], (body, answer)
    code, answer = await call(jp_fetch, "POST", "containers/nosuchcontainer/exec", {"argv": ["ls"]})
    assert code == 404, answer
    assert (await call(jp_fetch, "POST", f"containers/{cid}/stop"))[0] == 200
    code, answer = await call(jp_fetch, "POST", f"containers/{cid}/exec", {"argv": ["ls"]})
    assert code == 409 and "exited" in json.loads(answer)["message"], answer


async def test_output_streams_as_it_comes_from_inside_the_containers_control_group(
        jp_fetch, http_server_client, jp_http_port, jp_base_url, jp_auth_header, control_plane):
    cid = await start(jp_fetch)
    container = control_plane.manager.get(cid)
    script = "echo first; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo second"
    pieces: list[dict] = []
    seen_first = asyncio.Event()

    def on_chunk(chunk: bytes) -> None:
        for line in chunk.decode().splitlines():
            pieces.append(json.loads(line))
            if "first" in pieces[-1].get("text", ""):
                seen_first.set()

    request = HTTPRequest(f"http://127.0.0.1:{jp_http_port}{jp_base_url}cellhop/api/containers/{cid}/exec",
                          method="POST", headers=jp_auth_header, request_timeout=120,
                          body=json.dumps({"argv": ["sh", "-c", script], "timeout": 120}), streaming_callback=on_chunk)
    fetching = asyncio.ensure_future(AsyncHTTPClient().fetch(request))
    await asyncio.wait_for(seen_first.wait(), 60)
    assert not fetching.done() and not any("second" in p.get("text", "") for p in pieces)
    # while it waits: it is in the container's control group (its limits hold), seen from the host
    limits = control_plane.manager.runtime._limits[cid]
    if limits.groups is not None:
        members = set()
        for folder in limits.groups.folders():
            members |= set((folder / "cgroup.procs").read_text().split())
        commands = [open(f"/proc/{p}/cmdline", "rb").read() for p in members if os.path.exists(f"/proc/{p}")]
        assert any(b"/tmp/go" in c for c in commands), commands
    # the same /tmp: a second exec shares the container's mount namespace and lets the first go on
    _, last = await execute(jp_fetch, cid, ["touch", "/tmp/go"])
    assert last == {"exit_code": 0}
    await asyncio.wait_for(fetching, 60)
    assert [p.get("text") for p in pieces if "stream" in p] == ["first\n", "second\n"]
    assert pieces[-1] == {"exit_code": 0}
    assert not os.path.exists("/tmp/go") or container is None  # the host's /tmp was never touched


async def test_secrets_are_masked_in_exec_output_even_split_across_writes(jp_fetch):
    code, body = await call(jp_fetch, "POST", "secrets", {"name": "exectoken", "values": {"API_KEY": SECRET}})
    assert code == 201, body
    cid = await start(jp_fetch, {"secrets": ["exectoken"]})
    split = ("import os, sys, time\nv = os.environ['API_KEY']\n"
             "sys.stdout.write(v[:7]); sys.stdout.flush(); time.sleep(0.3)\n"
             "sys.stdout.write(v[7:] + ' end\\n'); sys.stdout.flush()\n"
             "sys.stderr.write('err ' + v + '\\n')")
    lines, last = await execute(jp_fetch, cid, [sys.executable, "-c", split])
    text = json.dumps(lines)
    assert last == {"exit_code": 0} and SECRET not in text and SECRET[:7] not in text, text
    assert output(lines) == "***** end\n" and output(lines, "stderr") == "err *****\n"


async def test_a_kernels_token_execs_only_in_its_own_containers(jp_fetch, jp_serverapp):
    key = jp_serverapp.web_app.settings[KERNEL_TOKEN_SETTING]
    mine = {"Authorization": f"token {token_for(key, 'kernel-a')}"}
    other = {"Authorization": f"token {token_for(key, 'kernel-b')}"}
    cid = await start(jp_fetch, headers=mine)
    _, last = await execute(jp_fetch, cid, ["true"], headers=mine)
    assert last == {"exit_code": 0}
    code, body = await call(jp_fetch, "POST", f"containers/{cid}/exec", {"argv": ["true"]}, headers=other)
    assert code == 403 and "acts only on the containers that kernel started" in body, body
    code, body = await call(jp_fetch, "GET", f"containers/{cid}/logs", headers=other, params={"follow": "1"})
    assert code == 403, body
    code, body = await call(jp_fetch, "POST", f"containers/{cid}/terminal", {}, headers=other)
    assert code == 403, body
    code, body = await call(jp_fetch, "POST", f"containers/{cid}/exec", {"argv": ["true"]},
                            headers={"Authorization": "token not-a-token"})
    assert code == 403, body
    _, last = await execute(jp_fetch, cid, ["true"])  # the server's user: any container
    assert last == {"exit_code": 0}


# a line into the container's log: through its kernel's stdout, from inside the container
TO_LOG = r"""
import os, sys
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            if b"container_kernel" in open(f"/proc/{pid}/cmdline", "rb").read():
                with open(f"/proc/{pid}/fd/1", "w") as out:
                    out.write(sys.argv[1] + "\n")
                break
        except OSError:
            pass
"""


async def test_logs_follow_as_the_log_grows_and_end_with_the_container(
        jp_fetch, http_server_client, jp_http_port, jp_base_url, jp_auth_header):
    code, body = await call(jp_fetch, "POST", "secrets", {"name": "logtoken", "values": {"API_KEY": SECRET}})
    assert code == 201, body
    cid = await start(jp_fetch, {"secrets": ["logtoken"]})
    _, last = await execute(jp_fetch, cid, [sys.executable, "-c", TO_LOG, "before following"])
    assert last == {"exit_code": 0}
    got: list[dict] = []
    changed = asyncio.Event()

    def on_chunk(chunk: bytes) -> None:
        got.extend(json.loads(line) for line in chunk.decode().splitlines() if line.strip())
        changed.set()

    async def until(text: str) -> None:
        while text not in "".join(g.get("log", "") for g in got):
            changed.clear()
            await asyncio.wait_for(changed.wait(), 60)

    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}cellhop/api/containers/{cid}/logs?follow=1&tail=5"
    following = asyncio.ensure_future(AsyncHTTPClient().fetch(HTTPRequest(
        url, headers=jp_auth_header, request_timeout=120, streaming_callback=on_chunk)))
    await until("before following")
    for n in range(3):
        await execute(jp_fetch, cid, [sys.executable, "-c", TO_LOG, f"live line {n}"])
        await until(f"live line {n}")
    await execute(jp_fetch, cid, ["sh", "-c", f"{sys.executable} -c '{TO_LOG}' \"key $API_KEY\""])
    await until("key *****")
    assert not following.done()
    assert (await call(jp_fetch, "POST", f"containers/{cid}/stop"))[0] == 200
    await asyncio.wait_for(following, 60)
    assert got[-1]["exited"] is True and got[-1]["status"]["stopped"] is True, got[-1]
    assert SECRET not in json.dumps(got)
    # as server-sent events (an EventSource), once it has ended: its tail, then the end
    r = await jp_fetch("cellhop", "api", "containers", cid, "logs", params={"follow": "1", "tail": "2"},
                       headers={"Accept": "text/event-stream"}, request_timeout=60)
    assert r.headers["Content-Type"] == "text/event-stream"
    events = [json.loads(e.removeprefix("data: ")) for e in r.body.decode().split("\n\n") if e.strip()]
    assert "key *****" in events[0]["log"] and events[-1]["exited"] is True, events


async def test_cellhop_exec_and_logs_from_a_shell(jp_fetch, jp_serverapp, jp_http_port, jp_base_url):
    cid = await start(jp_fetch)
    url, token = f"http://127.0.0.1:{jp_http_port}{jp_base_url}", jp_serverapp.identity_provider.token

    async def cli(*args, stdin=b""):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cellhop.server_ext.cli", *args, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
        return proc.returncode, out.decode(), err.decode()

    code, out, err = await cli("exec", cid, "--url", url, "--token", token, "--",
                               "sh", "-c", "cat; echo $CUDA_VISIBLE_DEVICES; echo oops >&2; exit 5", stdin=b"piped\n")
    assert code == 5 and out == "piped\nGPU-simulated-h100-0\n" and err == "oops\n", (code, out, err)
    code, out, err = await cli("exec", cid, "--timeout", "1", "--url", url, "--token", token, "--", "sleep", "60")
    assert code == 124 and "timeout of 1 s" in err, (code, err)
    code, out, err = await cli("exec", "nosuch", "--url", url, "--token", token, "--", "true")
    assert code == 1 and "no container 'nosuch'" in err, err
    await execute(jp_fetch, cid, [sys.executable, "-c", TO_LOG, "a line for the cli"])
    following = asyncio.ensure_future(cli("logs", "-f", cid, "--url", url, "--token", token))
    await asyncio.sleep(0)
    assert (await call(jp_fetch, "POST", f"containers/{cid}/stop"))[0] == 200
    code, out, err = await following
    assert code == 0 and "a line for the cli" in out and f"container {cid}" in err, (code, out, err)


async def test_container_exec_and_a_sandbox_from_python(jp_fetch, jp_serverapp, jp_http_port, jp_base_url,
                                                       control_plane):
    import cellhop
    from cellhop.kernel.http_control_plane import HttpControlPlane

    client = HttpControlPlane(f"http://127.0.0.1:{jp_http_port}{jp_base_url}", jp_serverapp.identity_provider.token)

    def in_a_sandbox():
        with cellhop.Sandbox(gpu="A10G", client=client, env={"GREETING": "hi"}) as box:
            result = box.exec("sh", "-c", "echo $GREETING $CUDA_VISIBLE_DEVICES; echo e >&2; exit 3")
            again = cellhop.Container(box.id, client=client).exec(["cat"], stdin="x")
            return box.id, result, again

    cid, result, again = await asyncio.to_thread(in_a_sandbox)
    # a kernel without a server: its embedded control plane enters the container from its own process
    from cellhop.kernel.embedded_control_plane import EmbeddedControlPlane

    other = await start(jp_fetch)
    embedded = EmbeddedControlPlane(control_plane=control_plane, owned=False)
    inside = await asyncio.to_thread(cellhop.Container(other, client=embedded).exec, "sh", "-c",
                                     "echo $CELLHOP_CONTAINER_ID; exit 4")
    assert (inside.stdout, inside.exit_code) == (f"{other}\n", 4)
    assert (result.stdout, result.stderr, result.exit_code) == ("hi GPU-simulated-a10g-0\n", "e\n", 3)
    assert again.stdout == "x" and again.returncode == 0
    assert control_plane.manager.get(cid).phase.value == "exited"  # terminated when the block ended
    with pytest.raises(CellhopError, match="exited with code 3"):
        result.check()



async def test_the_privileged_side_holds_nothing_of_the_containers_and_argv_meets_no_shell(jp_fetch):
    """The entering program (namespace_enter.py, root here until it forks and drops) is told what to run on a
    pipe: the container's environment (its secrets, its loader variables) is never in its environment nor
    on a command line another host user could read; the command holds no descriptor of the server's, and
    its argv is run as it is."""
    code, body = await call(jp_fetch, "POST", "secrets", {"name": "entertoken", "values": {"API_KEY": SECRET}})
    assert code == 201, body
    cid = await start(jp_fetch, {"secrets": ["entertoken"]})
    waiting = asyncio.ensure_future(execute(jp_fetch, cid, ["sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.05; done"]))
    helpers: list[int] = []
    for _ in range(600):
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if b"namespace_enter.py" in open(f"/proc/{pid}/cmdline", "rb").read():
                    helpers.append(int(pid))
            except OSError:
                pass
        if helpers:
            break
        await asyncio.sleep(0.05)
    assert helpers, "the entering program was not found"
    for pid in helpers:
        environ = open(f"/proc/{pid}/environ", "rb").read()
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        assert SECRET.encode() not in environ + cmdline
        assert b"CUDA_VISIBLE_DEVICES" not in environ and b"CELLHOP_SECRET_KEYS" not in environ, environ
    _, last = await execute(jp_fetch, cid, ["touch", "/tmp/go"])
    assert last == {"exit_code": 0} and (await asyncio.wait_for(waiting, 60))[1] == {"exit_code": 0}
    lines, last = await execute(jp_fetch, cid, ["echo", "$(id -u)", ";", "ls", "`id`", "$API_KEY"])
    assert output(lines) == "$(id -u) ; ls `id` $API_KEY\n"
    lines, last = await execute(jp_fetch, cid, ["ls", "/proc/self/fd"])
    assert sorted(output(lines).split()) == ["0", "1", "2", "3"], output(lines)  # 3: ls's own listing


async def test_a_requester_going_away_kills_its_command(jp_fetch, jp_http_port, jp_base_url, jp_serverapp):
    cid = await start(jp_fetch)
    marker = "cellhop-orphan-check"
    body = json.dumps({"argv": [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(600)",
                                marker]}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
    writer.write((f"POST {jp_base_url}cellhop/api/containers/{cid}/exec HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  f"Authorization: token {jp_serverapp.identity_provider.token}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
    await writer.drain()
    seen = b""
    while b"started" not in seen:
        chunk = await asyncio.wait_for(reader.read(4096), 60)
        assert chunk, seen
        seen += chunk

    def running() -> list[str]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if open(f"/proc/{pid}/cmdline", "rb").read().endswith(b"\0" + marker.encode() + b"\0"):
                    found.append(pid)
            except OSError:
                pass
        return found

    assert running(), "the command is not running"
    writer.close()  # the requester goes away without waiting for the end
    for _ in range(1200):
        if not running():
            break
        await asyncio.sleep(0.05)
    assert not running(), "the command outlived its request"


def test_following_a_log_loses_nothing_when_it_rotates(make_manager):
    """A log capped at 2 KiB rotates every two lines of 1 KB here; each line is written once the one before
    was seen, and the follower reads every one, in order, across the rotations."""
    import threading

    from cellhop.container import ContainerSpec
    from cellhop.server_ext.container_exec import Exec, plan
    from cellhop.server_ext.log_follow import follow

    manager = make_manager(max_log_bytes=2048)
    container = manager.start(ContainerSpec(gpu="none", owner="t"))

    async def scenario():
        got: list[str] = []
        seen = asyncio.Event()

        async def send(line):
            got.append(line.get("log", ""))
            seen.set()

        following = asyncio.ensure_future(follow(manager, container, 0, send, threading.Event()))
        for n in range(8):
            line = f"line {n} " + "y" * 990
            await Exec(plan(manager.runtime, container), [sys.executable, "-c", TO_LOG, line]).run(lambda _: None)
            while line not in "".join(got):
                seen.clear()
                await asyncio.wait_for(seen.wait(), 60)
        rotated = (container.directory / "container.log.1").exists()
        assert rotated and (container.directory / "container.log").stat().st_size <= 2048
        await asyncio.to_thread(manager.stop, container.id)
        await asyncio.wait_for(following, 60)
        return "".join(got)

    text = asyncio.run(scenario())
    assert [l.split()[1] for l in text.splitlines() if l.startswith("line ")] == [str(n) for n in range(8)]
    assert "went by faster" not in text


async def test_a_notebook_execs_in_its_own_container_with_its_own_token(start_kernel, control_plane, jp_fetch):
    from server_kernel_client import run

    kid, kc = await start_kernel()
    content, out, _ = await run(kc, "%%remote --gpu H100 --no-pull\nx = 1", timeout=180)
    assert content["status"] == "ok", (content, out)
    [container] = control_plane.manager.list()
    other = await start(jp_fetch, {"gpu": "A10G"})  # the server's user's: not this kernel's
    content, out, _ = await run(kc, "import cellhop\n"
                                    f"r = cellhop.Container({container.id!r}).exec('sh', '-c', "
                                    "'echo $CUDA_VISIBLE_DEVICES; exit 2')\n"
                                    "print('GOT', r.stdout.strip(), r.exit_code)\n"
                                    "try:\n"
                                    f"    cellhop.Container({other!r}).exec('true')\n"
                                    "except Exception as e:\n"
                                    "    print('REFUSED', type(e).__name__, e)", timeout=120)
    assert content["status"] == "ok", (content, out)
    assert f"GOT {container.gpus[0].uuid} 2" in out, out
    assert "REFUSED" in out and "acts only on the containers that kernel started" in out, out
