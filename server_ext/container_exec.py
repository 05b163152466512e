"""Entering a running local container: a process of the server's making, inside the container as one of its own.

What runs (`cellhop exec`, the exec route, a terminal's shell) is in the container's namespaces (pid,
mount, network, ipc, uts, cgroup, and its user namespace where it has one), in its control groups (its
limits hold), as its uid with no capability and no_new_privs, with its environment (rebuilt as the
runtime built it at launch: its image's variables, its GPUs' CUDA_VISIBLE_DEVICES, its secrets' values,
never the server's) in its working folder. The entering is namespace_enter.py, a standard-library
program started from the host's interpreter, told what to do on a pipe (never on a command line: the
environment holds secrets); it executes the command only once its privileges are gone, so nothing of
the container's files runs with the server's privileges (see its docstring). The command is an argv,
never given to a shell; the process keeps no descriptor of the server's (close_fds).

`plan(runtime, container)` says how to enter one container (an EntryPlan); `Exec` runs one command for
the exec route: starts the program in a session of its own (a kill of the session at the timeout ends it
and what it started, unless that left the session: it then ends with the container), streams its output
masked like the container's log, and reports how it ended. terminals.py starts it for a terminal.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..container import Phase
from ..errors import CellhopError
from .container_log import MaskedLog

HELPER = Path(__file__).with_name("namespace_enter.py")
MAX_ARGV_BYTES = 128 * 1024
MAX_STDIN_BYTES = 1 << 20
DEFAULT_TIMEOUT = 300.0
MAX_TIMEOUT = 24 * 3600.0
_CHUNK = 65536


class ExecNotSupported(CellhopError):
    """This runtime cannot run a command inside its containers."""

    http_status = 501


class ContainerNotRunning(CellhopError):
    """The container is not ready (still starting, or it exited)."""

    http_status = 409


@dataclass
class EntryPlan:
    """How to enter one container: what namespace_enter.py is told, less the command."""

    container_id: str
    pid: int  # its kernel's host pid
    start_time: str  # the kernel's start time (/proc/<pid>/stat), so a reused pid is never entered
    uid: int
    gid: int
    cwd: str
    env: dict[str, str] = field(repr=False)
    secrets: list[str] = field(default_factory=list, repr=False)  # values to mask in output
    cgroups: list[str] = field(default_factory=list)
    rlimits: dict[str, int] = field(default_factory=dict)
    affinity: list[int] | None = None

    def config(self, argv: list[str], terminal: bool = False) -> bytes:
        return json.dumps({"pid": self.pid, "start_time": self.start_time, "uid": self.uid, "gid": self.gid,
                           "cwd": self.cwd, "env": self.env, "cgroups": self.cgroups, "rlimits": self.rlimits,
                           "affinity": self.affinity, "argv": argv, "terminal": terminal}).encode()


def check_argv(argv) -> list[str]:
    """A command as an argv: a non-empty list of strings without NUL, within MAX_ARGV_BYTES."""
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise CellhopError('argv must be a non-empty list of strings, e.g. ["nvidia-smi"] or ["python", "-c", '
                           '"print(1)"]; it is run as it is, without a shell (use ["bash", "-c", "..."] for one)')
    if any("\0" in a for a in argv) or not argv[0]:
        raise CellhopError("argv must not contain NUL characters, and its first item names the program")
    if sum(len(a.encode()) + 1 for a in argv) > MAX_ARGV_BYTES:
        raise CellhopError(f"argv is longer than {MAX_ARGV_BYTES // 1024} KiB; pass large input on stdin instead")
    return list(argv)


def check_timeout(timeout) -> float:
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT:
        raise CellhopError(f"timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT:.0f} "
                           f"(default {DEFAULT_TIMEOUT:.0f})")
    return float(timeout)


def _start_time(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[19].decode()


def _limits_plan(limits) -> tuple[list[str], dict[str, int], list[int] | None]:
    """The container's groups to join and, for limits without a group, the fallbacks its kernel got
    (resource_limits.ResourceLimits.preexec)."""
    if limits is None:
        return [], {}, None
    grouped = limits.groups.paths if limits.groups is not None else {}
    cgroups = [str(p) for p in limits.groups.folders()] if limits.groups is not None else []
    rlimits = {}
    if limits.memory and "memory" not in grouped:
        rlimits["RLIMIT_DATA"] = int(limits.memory)
    if limits.pids and "pids" not in grouped and not limits.as_root:
        rlimits["RLIMIT_NPROC"] = int(limits.pids)
    affinity = None
    if limits.cpus and "cpu" not in grouped:
        affinity = sorted(os.sched_getaffinity(0))[: limits.cpus]
    return cgroups, rlimits, affinity


def plan(runtime, container) -> EntryPlan:
    """How to enter `container` (ready, on this host's local runtime); ContainerNotRunning or
    ExecNotSupported (a runtime whose containers are not processes here) otherwise."""
    if container.phase != Phase.READY:
        raise ContainerNotRunning(f"container {container.id} is {container.phase.value}; commands run only in a "
                                  "ready container (start one, or wait until it is ready)")
    kernel_pid = getattr(runtime, "_kernel_pid", None)
    if kernel_pid is None or container.node is not None or not hasattr(runtime, "_environment"):
        raise ExecNotSupported(f"the {runtime.name} runtime cannot run commands inside its containers; exec, "
                               "terminals and shells work with the local runtime (c.Cellhop.runtime = 'local')")
    pid = kernel_pid(container)
    if pid is None:
        raise ContainerNotRunning(f"container {container.id} has no running kernel; start it again")
    try:
        start_time = _start_time(pid)
    except OSError:
        raise ContainerNotRunning(f"container {container.id}'s kernel has exited; start it again") from None
    from .runtimes.local import SANDBOX

    limits = runtime._limits.get(container.id)
    env = runtime._environment(container, limits) if limits is not None else runtime._environment(
        container, _NoLimits())
    workdir = Path(container.spec.workdir) if container.spec.workdir else container.directory / SANDBOX / "work"
    if container.spec.image:
        from .images.runtime_env import apply_image, image_view

        apply_image(env, image_view(runtime.images_root, container.spec.image), workdir, container.spec.env)
    sandbox = runtime.sandbox
    if sandbox is not None:
        uid, gid = sandbox.user.uid, sandbox.user.gid
    else:  # unsandboxed (no bubblewrap): the container is the server's user in the host's namespaces
        uid, gid = os.getuid(), os.getgid()
    cgroups, rlimits, affinity = _limits_plan(limits)
    return EntryPlan(container_id=container.id, pid=pid, start_time=start_time, uid=uid, gid=gid, cwd=str(workdir),
                     env=env, secrets=list(container.secret_env.values()), cgroups=cgroups, rlimits=rlimits,
                     affinity=affinity)


class _NoLimits:
    def environment(self) -> dict[str, str]:
        return {}


def helper_argv() -> list[str]:
    """The host's interpreter, isolated (-I: no PYTHON* variables, no user site; -S: no site hooks)."""
    return [sys.executable, "-I", "-S", str(HELPER)]


class Collector:
    """A MaskedLog's file: the masked text of one stream, handed to `emit`."""

    def __init__(self, stream: str, emit):
        self.stream, self.emit = stream, emit

    def write(self, data: bytes) -> None:
        self.emit({"stream": self.stream, "text": data.decode(errors="replace")})

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class Exec:
    """One command run in a container for the exec route: `run(emit)` calls emit(line) for each piece of
    output ({"stream": "stdout"|"stderr", "text": ...}, secrets masked) and returns the last line:
    {"exit_code": N} (N < 0: killed by signal -N), plus {"timed_out": true, "message": ...} when the timeout
    killed it."""

    def __init__(self, entry: EntryPlan, argv: list[str], stdin: str | None = None, timeout: float | None = None):
        self.entry = entry
        self.argv = check_argv(argv)
        if stdin is not None and not isinstance(stdin, str):
            raise CellhopError("stdin must be a string (the text the command reads), or left out")
        self.stdin = (stdin or "").encode()
        if len(self.stdin) > MAX_STDIN_BYTES:
            raise CellhopError(f"stdin is more than {MAX_STDIN_BYTES // 2**20} MiB; copy large input into a "
                               "volume instead")
        self.timeout = check_timeout(timeout)
        self.proc: asyncio.subprocess.Process | None = None

    async def run(self, emit) -> dict:
        read_end, write_end = os.pipe()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *helper_argv(), "--config-fd", str(read_end), pass_fds=(read_end,),
                stdin=asyncio.subprocess.PIPE if self.stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, close_fds=True,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, start_new_session=True)
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(self.entry.config(self.argv))
        proc = self.proc
        pumps = [asyncio.ensure_future(self._pump(proc.stdout, "stdout", emit)),
                 asyncio.ensure_future(self._pump(proc.stderr, "stderr", emit))]
        feeder = asyncio.ensure_future(self._feed(proc)) if self.stdin else None
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), self.timeout)
        except asyncio.TimeoutError:
            timed_out = True
            self.kill()
            await proc.wait()
        finally:
            if feeder is not None:
                feeder.cancel()
        await asyncio.gather(*pumps)
        last = {"exit_code": proc.returncode}  # negative: killed by that signal (the helper ends as its child did)
        if timed_out:
            last.update(timed_out=True, message=f"the command ran past its timeout of {self.timeout:g} s and "
                                                 "was killed; give a longer \"timeout\" (seconds)")
        return last

    async def _feed(self, proc) -> None:
        try:
            proc.stdin.write(self.stdin)
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            proc.stdin.close()

    async def _pump(self, reader: asyncio.StreamReader, stream: str, emit) -> None:
        """Masked pieces to `emit`; an `emit` that is a coroutine function (a bounded queue's put) holds the
        reading back until the requester has taken what came before: a fast writer never fills the server."""
        pending: list[dict] = []
        sink = MaskedLog(Collector(stream, pending.append), self.entry.secrets)

        async def hand_on() -> None:
            for line in pending:
                handed = emit(line)
                if inspect.isawaitable(handed):
                    await handed
            pending.clear()

        try:
            while data := await reader.read(_CHUNK):
                sink.write(data)
                await hand_on()
        finally:
            sink.close()
        await hand_on()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
