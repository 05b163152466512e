"""Real notebook kernels driven over the wire protocol, with cellhop loaded.

`start_cellhop_kernel()` starts an ipykernel (jupyter_client) against a
simulated GPU inventory, in its own short runtime folder (so GPU leases and
ipc socket paths are private to it and stay under the AF_UNIX limit), loads
the extension, and hands back a `NotebookKernel` whose `run(code)` executes a
cell like a frontend does and returns `(status, outputs)`.

`cellhop_kernel` is the module-scoped fixture form: one kernel per test module.
Use it in a test module with

    from kernel_fixtures import cellhop_kernel  # noqa: F401  (a pytest fixture)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SIMULATED_GPUS = "H100:2,A10G:1"
# A request that cannot be served fails after this many seconds instead of the default 600.
QUEUE_TIMEOUT = 8

# Output messages worth keeping (status and execute_input say nothing about the cell's output).
_SKIPPED = {"status", "execute_input"}


def short_runtime_dir() -> str:
    """A fresh runtime folder short enough for unix socket paths (< 100 characters)."""
    return tempfile.mkdtemp(prefix="ch-", dir="/tmp")


@dataclass
class Ran:
    """One executed cell. Unpacks as `status, outputs`."""

    status: str
    outputs: list  # [(msg_type, content)] in arrival order
    reply: dict = field(default_factory=dict)  # the execute_reply content
    arrivals: list = field(default_factory=list)  # [(seconds since the request, msg_type, content)]
    elapsed: float = 0.0  # seconds from the request to the reply

    def __iter__(self):
        return iter((self.status, self.outputs))

    # -- what a user sees ------------------------------------------------------
    def stream(self, name: str = "stdout") -> str:
        return "".join(c["text"] for t, c in self.outputs if t == "stream" and c.get("name") == name)

    @property
    def stdout(self) -> str:
        return self.stream("stdout")

    @property
    def stderr(self) -> str:
        return self.stream("stderr")

    def displays(self, mime: str | None = None) -> list[dict]:
        """display_data/execute_result contents, without cellhop's own status line."""
        found = []
        for t, c in self.outputs:
            if t not in ("display_data", "execute_result") or is_status_line(c):
                continue
            if mime is None or mime in c.get("data", {}):
                found.append(c)
        return found

    def of_type(self, msg_type: str) -> list[dict]:
        return [c for t, c in self.outputs if t == msg_type]

    @property
    def container(self) -> str | None:
        """The container id the cell's status line names (last one shown)."""
        found = None
        for t, c in self.outputs:
            if t in ("display_data", "update_display_data"):
                m = re.search(r"on container ([0-9a-f]+)", c.get("data", {}).get("text/plain", ""))
                if m:
                    found = m.group(1)
        return found

    @property
    def ename(self) -> str | None:
        return self.reply.get("ename")

    @property
    def evalue(self) -> str:
        return self.reply.get("evalue", "")

    @property
    def traceback_text(self) -> str:
        return strip_ansi("\n".join(self.reply.get("traceback", [])))

    def __repr__(self) -> str:  # shown by pytest when an assertion on it fails
        return (f"Ran(status={self.status!r}, ename={self.ename!r}, evalue={self.evalue[:300]!r}, "
                f"stdout={self.stdout[-500:]!r}, stderr={self.stderr[-800:]!r}, "
                f"outputs={[t for t, _ in self.outputs]!r}, elapsed={self.elapsed:.2f})")


def local_json(nb, expression: str):
    """Evaluate `expression` in the notebook kernel (not remotely) and return it, via JSON on stdout."""
    ran = nb.ok(f"import json as _json\nprint(_json.dumps({expression}))")
    return json.loads(ran.stdout.strip().splitlines()[-1])


def is_status_line(content: dict) -> bool:
    return "cellhop-status" in content.get("data", {}).get("text/html", "")


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class NotebookKernel:
    """A notebook kernel as a frontend drives it."""

    def __init__(self, km, kc, runtime_dir: str):
        self.km = km
        self.kc = kc
        self.runtime_dir = runtime_dir

    def run(self, code: str, timeout: float = 90, allow_stdin: bool = False, stdin_hook=None,
            output_hook=None) -> Ran:
        """Execute a cell; returns when its reply and all its outputs (up to idle) have arrived."""
        arrivals = []
        t0 = time.monotonic()

        def hook(msg):
            arrivals.append((time.monotonic() - t0, msg["msg_type"], msg["content"]))
            if output_hook is not None:
                output_hook(msg)

        kwargs = {}
        if stdin_hook is not None:
            kwargs["stdin_hook"] = stdin_hook
        try:
            reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook,
                                                allow_stdin=allow_stdin, **kwargs)
        except TimeoutError:
            self.km.interrupt_kernel()  # leave the kernel usable for the next test
            raise AssertionError(f"cell did not finish within {timeout} s: {code!r}; "
                                 f"outputs so far: {[(round(t, 2), m, c) for t, m, c in arrivals][-10:]}")
        elapsed = time.monotonic() - t0
        kept = [(t, m, c) for t, m, c in arrivals if m not in _SKIPPED]
        content = reply["content"]
        return Ran(content["status"], [(m, c) for _, m, c in kept], content, kept, elapsed)

    def ok(self, code: str, **kwargs) -> Ran:
        """Run a cell that must succeed."""
        ran = self.run(code, **kwargs)
        assert ran.status == "ok", ran
        return ran

    def send_shell(self, msg_type: str, content: dict) -> str:
        """Send a frontend message (comm_msg, ...) on the shell channel; returns its msg_id."""
        msg = self.kc.session.msg(msg_type, content)
        self.kc.shell_channel.send(msg)
        return msg["header"]["msg_id"]

    def iopub_until(self, predicate, timeout: float = 10) -> list[dict]:
        """Read IOPub messages until `predicate(msg)` holds; returns those read (raises on timeout)."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(0.05, deadline - time.monotonic()))
            except Exception:  # queue.Empty
                continue
            seen.append(msg)
            if predicate(msg):
                return seen
        raise AssertionError(f"no matching IOPub message within {timeout} s; saw "
                             f"{[(m['msg_type'], str(m['content'])[:120]) for m in seen]}")

    def container_processes(self) -> dict[int, str]:
        """{host pid: container id} of the live processes of this kernel's containers."""
        return container_processes(self.runtime_dir)

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=False)


def container_processes(runtime_dir: str) -> dict[int, str]:
    """{host pid: container id} of live container processes under `runtime_dir` (bwrap and the kernel)."""
    pattern = re.compile(re.escape(runtime_dir).encode() + rb"/cellhop/containers/([0-9a-f]+)/sandbox/connection\.json")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        m = pattern.search(cmdline)
        if m and state != "Z":
            found[int(entry.name)] = m.group(1).decode()
    return found


def kernel_env(runtime_dir: str, gpus: str = SIMULATED_GPUS) -> dict:
    env = {**os.environ, "CELLHOP_SIMULATED_GPUS": gpus, "JUPYTER_RUNTIME_DIR": runtime_dir}
    env.pop("JPY_PARENT_PID", None)
    return env


@contextlib.contextmanager
def start_cellhop_kernel(runtime_dir: str | None = None, gpus: str = SIMULATED_GPUS, load: bool = True,
                         queue_timeout: float = QUEUE_TIMEOUT, extra_arguments: tuple = ()):
    """A notebook kernel with cellhop loaded; shut down (containers and all) on exit.

    Kernels given the same `runtime_dir` share GPU leases, like two notebooks of one server.
    """
    from jupyter_client.manager import start_new_kernel

    owns_dir = runtime_dir is None
    runtime_dir = runtime_dir or short_runtime_dir()
    # The notebook's folder: its own, never the repository (%%remote cells work in it read-write by default).
    folder = tempfile.mkdtemp(prefix="ch-nb-", dir="/tmp")
    args = [f"--Cellhop.queue_timeout={queue_timeout:g}", *extra_arguments]
    km, kc = start_new_kernel(env=kernel_env(runtime_dir, gpus), extra_arguments=args, startup_timeout=60,
                              cwd=folder)
    kernel = NotebookKernel(km, kc, runtime_dir)
    try:
        if load:
            kernel.ok("%load_ext cellhop")
        yield kernel
    finally:
        kernel.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
        if owns_dir:
            shutil.rmtree(runtime_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cellhop_kernel():
    """One notebook kernel with cellhop loaded, shared by the tests of a module."""
    with start_cellhop_kernel() as kernel:
        yield kernel
