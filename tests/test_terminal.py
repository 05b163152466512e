"""A terminal whose shell runs inside a container: `POST containers/{id}/terminal` makes a named terminal of
jupyter_server's, opened at /terminals/websocket/<name> (JupyterLab's terminal protocol), and `cellhop shell`.

A real jupyter_server with cellhop and its terminals, real bubblewrap containers; the shell proves where it
runs (CUDA_VISIBLE_DEVICES, uid, its namespaces), the window's size reaches it, Ctrl-C interrupts what it
runs, and the terminal ends when the container stops. tests/e2e/test_terminal_tab.py opens one in a browser."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys

import pytest

from cellhop.server_ext.doctor import bubblewrap_problem

pytestmark = [pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def _needs_bubblewrap():
    problem = bubblewrap_problem()
    if problem:
        pytest.skip(f"containers cannot be sandboxed here: {problem}")


async def api(jp_fetch, method, path, body=None):
    r = await jp_fetch("cellhop", "api", *path.split("/"), method=method, raise_error=False, request_timeout=120,
                       **({"body": json.dumps(body or {})} if method == "POST" else {}))
    return r.code, json.loads(r.body) if r.body else None


async def in_the_foreground(argv: list[str], timeout: float = 60) -> None:
    """Wait until a process running `argv` is its terminal's foreground job (seen from the host): a Ctrl-C sent
    then reaches it (sent earlier, it could land between the shell's fork and its handing over the terminal)."""
    wanted = "\0".join(argv).encode() + b"\0"
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if open(f"/proc/{pid}/cmdline", "rb").read() == wanted:
                    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                    if fields[2] == fields[5]:  # its process group is the terminal's foreground group
                        return
            except OSError:
                pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{argv} did not become the terminal's foreground job")


class Screen:
    """What a terminal's websocket has shown so far."""

    def __init__(self, ws):
        self.ws, self.text, self.ended = ws, "", None

    def type(self, text: str) -> None:
        self.ws.write_message(json.dumps(["stdin", text]))

    async def until(self, pattern: str, timeout: float = 60) -> re.Match:
        async def read():
            while not (found := re.search(pattern, self.text)):
                message = await self.ws.read_message()
                if message is None:
                    raise AssertionError(f"the terminal closed before {pattern!r} showed; it showed:\n{self.text}")
                kind, *rest = json.loads(message)
                if kind == "stdout":
                    self.text += rest[0]
                elif kind == "disconnect":
                    self.ended = rest
                    raise AssertionError(f"the terminal ended before {pattern!r} showed:\n{self.text}")
            return found

        try:
            return await asyncio.wait_for(read(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{pattern!r} did not show within {timeout} s; the terminal showed:\n{self.text}")

    async def closed(self, timeout: float = 60) -> None:
        async def read():
            while True:
                message = await self.ws.read_message()
                if message is None or json.loads(message)[0] == "disconnect":
                    return

        await asyncio.wait_for(read(), timeout)


async def test_a_terminals_shell_runs_inside_the_container(jp_fetch, jp_ws_fetch, control_plane):
    code, started = await api(jp_fetch, "POST", "containers", {"spec": {"gpu": "H100", "owner": "t"}})
    assert code == 201, started
    cid = started["id"]
    code, answer = await api(jp_fetch, "POST", f"containers/{cid}/terminal")
    assert code == 201 and answer["name"].startswith(f"cellhop_{cid}_"), answer
    screen = Screen(await jp_ws_fetch("terminals", "websocket", answer["name"]))
    screen.ws.write_message(json.dumps(["set_size", 33, 111, 600, 800]))
    kernel = control_plane.manager.runtime._kernel_pid(control_plane.manager.get(cid))
    screen.type("echo CVD=$CUDA_VISIBLE_DEVICES\\|$(id -u)\\|$(readlink /proc/self/ns/pid)"
                "\\|$(readlink /proc/self/ns/mnt)\\|$(stty size)\r")
    found = await screen.until(r"CVD=([^|\s]*)\|(\d+)\|([^|\s]+)\|([^|\s]+)\|(\d+ \d+)")
    assert found.group(1) == control_plane.manager.get(cid).gpus[0].uuid
    assert found.group(2) == str(control_plane.manager.runtime.sandbox.user.uid) != "0"
    assert found.group(3) == os.readlink(f"/proc/{kernel}/ns/pid")
    assert found.group(4) == os.readlink(f"/proc/{kernel}/ns/mnt")
    assert found.group(5) == "33 111"
    screen.type("echo FDS=$(ls /proc/self/fd | tr '\\n' ,)\r")  # nothing of the server's: only the pty
    assert (await screen.until(r"FDS=([\d,]+)")).group(1) == "0,1,2,3,"  # 3: ls's own listing
    screen.type("echo P$((1))=$PATH=\r")  # the container's PATH (its image's venv first), not a login shell's
    from cellhop.server_ext.container_exec import plan

    path = plan(control_plane.manager.runtime, control_plane.manager.get(cid)).env["PATH"]
    assert (await screen.until(r"P1=(\S+)=")).group(1) == path
    screen.ws.write_message(json.dumps(["set_size", 20, 70, 600, 800]))  # a resize reaches the shell
    screen.type("echo SIZE=$(stty size)\r")
    assert (await screen.until(r"SIZE=(\d+ \d+)")).group(1) == "20 70"
    screen.type("echo SLEEP$((1+1)); sleep 301; echo NOT-$((3*3))-INTERRUPTED\r")
    await screen.until(r"SLEEP2")  # the command's output, not its echo: sleep is starting
    await in_the_foreground(["sleep", "301"])
    screen.type("\x03")  # Ctrl-C: the foreground job ends (else AFTER shows only after 300 s), the shell stays
    screen.type("echo AFTER=$((20+22))\r")
    await screen.until(r"AFTER=42", timeout=100)
    assert "NOT-9-INTERRUPTED" not in screen.text
    assert (await api(jp_fetch, "POST", f"containers/{cid}/stop"))[0] == 200
    await screen.closed()  # the container stopped: so did its shell, and the terminal with it


async def test_exit_ends_the_terminal_and_cellhop_shell_connects_a_terminal(
        jp_fetch, jp_ws_fetch, jp_serverapp, jp_http_port, jp_base_url):
    code, started = await api(jp_fetch, "POST", "containers", {"spec": {"gpu": "A10G", "owner": "t"}})
    cid = started["id"]
    code, answer = await api(jp_fetch, "POST", f"containers/{cid}/terminal", {"shell": ["/bin/sh"]})
    screen = Screen(await jp_ws_fetch("terminals", "websocket", answer["name"]))
    screen.type("echo HERE=$CELLHOP_CONTAINER_ID; exit\r")
    await screen.until(f"HERE={cid}")
    await screen.closed()
    terminals = jp_serverapp.web_app.settings["terminal_manager"]
    assert answer["name"] not in terminals.terminals  # gone once its shell exited
    code, refused = await api(jp_fetch, "POST", f"containers/{cid}/terminal", {"shell": "bash"})
    assert code == 400 and "without a shell" in refused["message"]
    url, token = f"http://127.0.0.1:{jp_http_port}{jp_base_url}", jp_serverapp.identity_provider.token
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cellhop.server_ext.cli", "shell", cid, "--url", url, "--token", token,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(b"echo FROM-SHELL=$((6*7)) $CUDA_VISIBLE_DEVICES\nexit\n"), 120)
    assert proc.returncode == 0, err
    assert "FROM-SHELL=42 GPU-simulated-a10g-0" in out.decode(), out
    assert not [n for n in terminals.terminals if n.startswith(f"cellhop_{cid}_")]


async def test_gpu_terminal_opens_a_tab_on_the_notebooks_container(start_kernel, jp_ws_fetch, control_plane):
    from server_kernel_client import run

    events: list[dict] = []
    subscription = control_plane.bus.subscribe(events.append)
    try:
        kid, kc = await start_kernel()
        content, out, _ = await run(kc, "%gpu --terminal", timeout=120)
        assert content["status"] == "error" and "no running container yet" in out + str(content), (content, out)
        content, out, _ = await run(kc, "%%remote --gpu H100 --no-pull\nx = 1", timeout=180)
        assert content["status"] == "ok", (content, out)
        content, out, _ = await run(kc, "%gpu --terminal", timeout=120)
        assert content["status"] == "ok", (content, out)
        [container] = control_plane.manager.list()
        found = re.search(rf"terminal (cellhop_{container.id}_\d+) opened inside container {container.id}", out)
        assert found, out
        assert {"type": "terminal", "name": found.group(1), "container": container.id} in events
        screen = Screen(await jp_ws_fetch("terminals", "websocket", found.group(1)))
        screen.type("echo IN=$CELLHOP_CONTAINER_ID/$CUDA_VISIBLE_DEVICES\r")
        await screen.until(f"IN={container.id}/{container.gpus[0].uuid}")
    finally:
        subscription.close()


async def test_an_open_terminal_keeps_its_container_from_its_idle_timeout(jp_fetch, jp_ws_fetch, control_plane):
    spec = {"gpu": "A10G", "owner": "t", "idle_timeout": 4}
    code, started = await api(jp_fetch, "POST", "containers", {"spec": spec})
    cid = started["id"]
    code, answer = await api(jp_fetch, "POST", f"containers/{cid}/terminal", {"shell": ["/bin/sh"]})
    assert code == 201, answer
    screen = Screen(await jp_ws_fetch("terminals", "websocket", answer["name"]))
    await asyncio.sleep(12)  # three idle timeouts with nobody typing: the open terminal counts as activity
    assert control_plane.manager.get(cid).phase.value == "ready"
    screen.type("exit\r")
    await screen.closed()
    for _ in range(1200):  # once it is closed, the idle timeout applies again
        if control_plane.manager.get(cid).phase.value == "exited":
            break
        await asyncio.sleep(0.05)
    assert control_plane.manager.get(cid).phase.value == "exited"
    assert "idle" in control_plane.manager.get(cid).exit_status.reason


async def test_cellhop_shell_in_a_terminal_follows_its_size_and_passes_ctrl_c(
        jp_fetch, jp_serverapp, jp_http_port, jp_base_url):
    from ptyprocess import PtyProcessUnicode

    code, started = await api(jp_fetch, "POST", "containers", {"spec": {"gpu": "H100", "owner": "t"}})
    cid = started["id"]
    url, token = f"http://127.0.0.1:{jp_http_port}{jp_base_url}", jp_serverapp.identity_provider.token
    shell = PtyProcessUnicode.spawn([sys.executable, "-m", "cellhop.server_ext.cli", "shell", cid, "--url", url,
                                     "--token", token], dimensions=(30, 100),
                                    env={k: v for k, v in os.environ.items() if not k.startswith("CELLHOP_")})
    seen = ""

    def read_some() -> str:
        import select

        if select.select([shell.fd], [], [], 0.5)[0]:
            try:
                return os.read(shell.fd, 4096).decode(errors="replace")
            except OSError:  # EIO: it ended
                raise AssertionError(f"cellhop shell ended; it showed:\n{seen}") from None
        return ""

    async def until(pattern: str) -> re.Match:
        nonlocal seen
        deadline = asyncio.get_running_loop().time() + 60
        while not (found := re.search(pattern, seen)):
            assert asyncio.get_running_loop().time() < deadline, f"{pattern!r} did not show:\n{seen}"
            seen += await asyncio.to_thread(read_some)
        return found

    try:
        await until(r"work\$ ")  # the prompt: cellhop shell is connected (and its terminal in raw mode)
        shell.write("echo SIZE=$(stty size)-$CUDA_VISIBLE_DEVICES\r")
        assert (await until(r"SIZE=(\d+ \d+)-(\S+)")).groups() == ("30 100", "GPU-simulated-h100-0")
        shell.setwinsize(40, 120)  # SIGWINCH to cellhop shell, which tells the server
        shell.write("echo RESIZED=$(stty size)\r")
        found = await until(r"RESIZED=(\d+ \d+)")
        while found.group(1) != "40 120":  # the resize and the command race: ask until the size has come
            seen = ""
            shell.write("echo RESIZED=$(stty size)\r")
            found = await until(r"RESIZED=(\d+ \d+)")
        shell.write("echo NAP$((1+1)); sleep 302\r")
        await until(r"NAP2")
        await in_the_foreground(["sleep", "302"])
        shell.write("\x03")  # Ctrl-C reaches the shell inside, not cellhop shell
        shell.write("echo BACK=$((40+2))\r")
        await until(r"BACK=42")
        shell.write("exit\r")
        await asyncio.to_thread(shell.wait)
        assert shell.exitstatus == 0
    finally:
        if shell.isalive():
            shell.terminate(force=True)
