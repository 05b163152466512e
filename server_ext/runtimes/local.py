"""The local runtime: containers are sandboxed processes on this host.

Each container gets a folder under the control plane's runtime directory
holding its connection file (fresh HMAC key; ipc sockets or loopback ports),
its log and its private working directory. The kernel runs under bubblewrap
(see sandbox.py) with its GPUs pinned by UUID and only their device files in
its /dev; cellhop's state, runtime and Jupyter runtime folders are hidden from
it, all but its own folder and its volumes. Without bubblewrap it runs
unsandboxed, and the control plane says so once. The kernel's output goes to
container.log; a container with secrets writes it through a pipe, masked
(cellhop.masking.mask_text) before it reaches the disk.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from traitlets import CaselessStrEnum

from ...container import OOM_EXIT_CODE, ExitStatus
from ...errors import CellhopError
from ...masking import SECRET_KEYS_ENV, mask_text, masked_values
from ...wire import connection_info
from ..container_record import Container
from ..container_storage import unsandboxed_mount_error
from ..paths import private_dir
from ..resource_limits import ResourceLimits
from ..sandbox import bubblewrap_argv, find_bubblewrap, folders_to_hide, gpu_device_files, hidden_import_paths
from .base import ContainerRuntime, Launched
from .orphans import reap_orphans, record_owner

log = logging.getLogger("cellhop")

# Variables of the notebook's kernel that must not leak into a container kernel.
_DROPPED_ENV = ("JPY_PARENT_PID", "JPY_SESSION_NAME", "JPY_INTERRUPT_EVENT", "CELLHOP_SIMULATED_GPUS",
                "CELLHOP_CONTROL_URL", "CELLHOP_CONTROL_TOKEN")


class _Spawner:
    """One long-lived thread that forks every container.

    bubblewrap's --die-with-parent (PR_SET_PDEATHSIG) fires when the *thread*
    that forked it exits, so forking from a short-lived worker thread would
    kill containers early. A thread that lives as long as the process does not.
    """

    def __init__(self):
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="cellhop-spawner", daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            argv, kwargs, result, done = self._jobs.get()
            try:
                result.append(subprocess.Popen(argv, **kwargs))
            except BaseException as exc:  # handed back to the caller
                result.append(exc)
            done.set()

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        result: list = []
        done = threading.Event()
        self._jobs.put((argv, kwargs, result, done))
        done.wait()
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]


class MaskedLog:
    """Writes a stream of output to a log file with every secret value masked (mask_text), even one split
    across reads: after masking, the longest tail that could be the start of a value is held back until the
    next read shows whether it is one (or the stream ends)."""

    def __init__(self, file, values):
        self.file = file
        self.values = masked_values(values)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def _held(self, text: str) -> int:
        """How many characters at the end of `text` are a proper prefix of a value."""
        held = 0
        for value in self.values:
            for k in range(min(len(value) - 1, len(text)), held, -1):
                if value[k - 1] == text[-1] and text.endswith(value[:k]):
                    held = k
                    break
        return held

    def write(self, data: bytes) -> None:
        text = mask_text(self._pending + self._decoder.decode(data), self.values)
        held = self._held(text) if text else 0
        self._pending = text[len(text) - held:] if held else ""
        if len(text) > held:
            self.file.write(text[:len(text) - held].encode())
            self.file.flush()

    def close(self) -> None:
        tail = mask_text(self._pending + self._decoder.decode(b"", final=True), self.values)
        self._pending = ""
        if tail:
            self.file.write(tail.encode())
        self.file.close()

    def pump(self, fd: int) -> None:
        """Copy what is read from `fd` until end of file, then close both."""
        try:
            while True:
                try:
                    data = os.read(fd, 65536)
                except InterruptedError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                self.write(data)
        finally:
            os.close(fd)
            self.close()


def default_hidden_folders(root: Path, state_dir: Path | None = None) -> list[Path]:
    """What no container may see of its host (none of these is created here):

    - the runtime's root (other containers' connection files with their HMAC keys, their logs) and, when it
      is a control plane's `<runtime root>/containers`, that whole runtime root (GPU leases, queue tickets);
    - jupyter_runtime_dir(): notebook kernels' connection files and jupyter_server's jpserver-*.json with its
      token (the default runtime root, jupyter_runtime_dir()/cellhop, is inside);
    - the state directory (secrets, every volume's data, images), `state_dir` (c.Cellhop.state_dir), and
      the default one, jupyter_data_dir()/cellhop.

    A container gets back what is its own on top: its folder, its volumes, its image's layers (read-only).
    """
    from jupyter_core.paths import jupyter_data_dir, jupyter_runtime_dir

    root = Path(root)
    folders = [root.parent if root.name == "containers" else root, Path(jupyter_runtime_dir())]
    if state_dir is not None:
        folders.append(Path(state_dir))
    folders.append(Path(jupyter_data_dir()) / "cellhop")
    return folders


class LocalRuntime(ContainerRuntime):
    """Containers as bubblewrap-sandboxed processes on this host."""

    name = "local"

    transport = CaselessStrEnum(
        ["tcp", "ipc"], default_value="ipc",
        help="How notebook and container kernel talk on this host: 'ipc' (unix sockets) or 'tcp' (loopback).",
    ).tag(config=True)
    deprecated_aliases = {"transport": "transport"}  # c.Cellhop.transport
    kernel_module = "cellhop.kernel.container_kernel"  # what a container runs: python -m <it> -f <connection file>

    def __init__(self, root: Path, sandbox: str = "auto", images_root: Path | None = None,
                 state_dir: Path | None = None, **kwargs):
        super().__init__(root=root, sandbox=sandbox, images_root=images_root, state_dir=state_dir, **kwargs)
        # Host folders no container may see, behind a tmpfs (which of them exist is checked at each launch:
        # they may appear later); a container's own volumes are bound back on top (sandbox.py).
        self.hidden = default_hidden_folders(self.root, state_dir)
        self.bwrap = None if sandbox == "none" else find_bubblewrap()
        if sandbox == "bubblewrap" and self.bwrap is None:
            raise CellhopError("c.Cellhop.sandbox = 'bubblewrap' but bwrap is not installed; "
                               "install it (apt-get install bubblewrap) or set sandbox to 'auto'")
        if self.bwrap is None and sandbox == "auto":
            log.warning("cellhop: bubblewrap (bwrap) is not installed, so containers run unsandboxed "
                        "on this host; install it with 'apt-get install bubblewrap'")
        reap_orphans(self.root)
        self._spawner = _Spawner()
        self._limits: dict[str, ResourceLimits] = {}
        self._log_pumps: dict[str, threading.Thread] = {}
        # the import paths those folders (or the private /tmp) would hide, bound back read-only: sys.path is
        # fixed, so they are worked out once
        self._ro_binds = [(p, p) for p in hidden_import_paths(folders_to_hide(self.hidden))] if self.bwrap else []

    def describe(self) -> str:
        return "local, sandboxed with bubblewrap" if self.bwrap else "local, unsandboxed (bubblewrap missing)"

    # -- what the manager asks of this runtime beyond the lifecycle; hooks for subclasses (Ray's node) ------
    def check_spec(self, spec) -> None:
        """Besides the image: the interpreter and the working directory are this host's (host_checks.py)."""
        from .host_checks import check_python, check_workdir

        super().check_spec(spec)
        if spec.python:
            check_python(spec.python)
        if spec.workdir is not None:
            check_workdir(Path(spec.workdir))

    def container_directory(self, container_id: str) -> Path:
        return private_dir(self.root / container_id)

    def host_environment(self) -> dict[str, str]:
        """The variables of this process a container's environment starts from (cellhop's and Jupyter's
        own are dropped from it, the container's own added)."""
        return dict(os.environ)

    def prepare_child(self) -> None:
        """Runs in a container's process between fork and exec, before its limits are set (async-signal-safe
        work only): a subclass resets there what its host process changed (a Ray worker's signal mask)."""

    def launch(self, container: Container) -> Launched:
        spec = container.spec
        directory = container.directory
        workdir = Path(spec.workdir) if spec.workdir else directory / "work"
        workdir.mkdir(parents=True, exist_ok=True)
        # a restart (ContainerManager.restart) keeps the ports and key its clients already hold
        info = container.connection_info or connection_info(self.transport, ipc_dir=directory)
        conn_file = directory / "connection.json"
        fd = os.open(conn_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)

        limits = ResourceLimits(cpus=spec.cpus, memory=spec.memory)
        limits.prepare(container.id)
        self._limits[container.id] = limits
        env = self._environment(container, limits)
        python = spec.python or sys.executable
        hidden = folders_to_hide(self.hidden) if self.bwrap else []
        ro_binds = list(self._ro_binds)
        image_mounts = []
        if spec.image:  # a built image: its venv's Python, its environment, its folders
            from ..images.runtime_env import apply_image, image_view

            view = image_view(self.images_root, spec.image)
            python = view["python"]
            image_mounts = apply_image(env, view, workdir, spec.env)
            ro_binds = ro_binds + [(Path(p), Path(p)) for p in view["binds"]]
        command = [python, "-m", self.kernel_module, "-f", str(conn_file)]
        if self.bwrap:
            binds = [directory] + ([workdir] if spec.workdir else [])
            devices = gpu_device_files(g.minor for g in container.gpus if not g.simulated)
            command = bubblewrap_argv(self.bwrap, binds, workdir, ro_binds,
                                      volumes=list(container.mounts) + image_mounts, hidden=hidden,
                                      devices=devices) + command
        elif container.mounts:
            raise unsandboxed_mount_error(container)
        elif image_mounts:
            from ..images.runtime_env import link_mounts

            link_mounts(image_mounts)
        logfile = open(directory / "container.log", "ab")
        masked = MaskedLog(logfile, container.secret_env.values()) if container.secret_env else None
        if masked is not None and masked.values:  # the raw output goes through a pipe, masked on its way
            read_end, output = os.pipe()
        else:
            masked, read_end, output = None, None, logfile
        try:
            proc = self._spawner.popen(
                command,
                cwd=str(workdir),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self._preexec(limits),
            )
        except BaseException:
            if read_end is not None:
                os.close(read_end)
                os.close(output)
            logfile.close()
            raise
        if masked is None:
            logfile.close()
        else:
            os.close(output)
            pump = threading.Thread(target=masked.pump, args=(read_end,), name=f"cellhop-log-{container.id}",
                                    daemon=True)
            pump.start()
            self._log_pumps[container.id] = pump
        record_owner(directory, proc.pid)
        return Launched(connection_info=info, handle=proc, sandboxed=self.bwrap is not None)

    def _preexec(self, limits: ResourceLimits):
        bwrap = self.bwrap

        def preexec():
            self.prepare_child()
            limits.preexec()
            if bwrap is None:  # without bubblewrap, at least die with the owner
                import ctypes

                ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

        return preexec

    def _environment(self, container: Container, limits: ResourceLimits) -> dict[str, str]:
        env = {k: v for k, v in self.host_environment().items() if k not in _DROPPED_ENV}
        gpus = container.gpus
        uuids = ",".join(g.uuid for g in gpus)
        env["CUDA_VISIBLE_DEVICES"] = uuids
        env["NVIDIA_VISIBLE_DEVICES"] = uuids or "void"
        env["CELLHOP_CONTAINER_ID"] = container.id
        env["CELLHOP_GPU_TYPE"] = gpus[0].type if gpus else ""
        if gpus and gpus[0].simulated:
            env["CELLHOP_GPUS_SIMULATED"] = "1"
        env["IPYTHONDIR"] = str(container.directory / "ipython")
        env["MPLCONFIGDIR"] = str(container.directory / "mpl")
        env.update(limits.environment())
        env.update(container.spec.env)
        if container.secret_env:  # values only here; the container kernel masks them in its output
            env.update(container.secret_env)
            env[SECRET_KEYS_ENV] = ",".join(sorted(container.secret_env))
        return env

    def _kernel_pid(self, container: Container) -> int | None:
        """The kernel's pid on the host: bwrap -> bwrap's init -> kernel."""
        proc: subprocess.Popen = container.handle
        if proc is None or proc.poll() is not None:
            return None
        if not self.bwrap:
            return proc.pid
        pid = proc.pid
        for _ in range(2):
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                return None
            if not children:
                return None
            pid = int(children[0])
        return pid

    def poll(self, container: Container) -> ExitStatus | None:
        proc: subprocess.Popen = container.handle
        if proc is None:
            return None
        code = proc.poll()
        if code is None:
            return None
        limits = self._limits.get(container.id)
        oom = (limits is not None and limits.oom_killed()) or code == OOM_EXIT_CODE
        if code < 0:
            return ExitStatus(signal=-code, oom=oom)
        if self.bwrap and code > 128 and code - 128 < 65:  # bwrap reports a killed child as 128+N
            return ExitStatus(code=code, signal=code - 128, oom=oom)
        return ExitStatus(code=code, oom=oom)

    def interrupt(self, container: Container) -> None:
        pid = self._kernel_pid(container)
        if pid is not None:
            os.kill(pid, signal.SIGINT)

    def terminate(self, container: Container) -> None:
        pid = self._kernel_pid(container)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def kill(self, container: Container) -> None:
        proc: subprocess.Popen = container.handle
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: bwrap or the bare kernel, and children
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()

    def read_log(self, container: Container) -> str:
        pump = self._log_pumps.get(container.id)
        proc: subprocess.Popen = container.handle
        if pump is not None and proc is not None and proc.poll() is not None:
            pump.join(timeout=2)  # the kernel has exited: let its last output reach the file
        return super().read_log(container)

    def cleanup(self, container: Container) -> None:
        pump = self._log_pumps.pop(container.id, None)
        if pump is not None:
            pump.join(timeout=2)
        limits = self._limits.pop(container.id, None)
        if limits is not None:
            limits.remove()
        if container.directory is not None:
            shutil.rmtree(container.directory / "work", ignore_errors=True)
            for name in os.listdir(container.directory) if container.directory.exists() else ():
                if name.startswith("k-") or name == "connection.json":
                    (container.directory / name).unlink(missing_ok=True)
