"""The local runtime: containers are sandboxed processes on this host.

Each container gets a folder under the control plane's runtime directory
that only the server can reach: its log (container.log, capped and rotated,
container_log.py), owner.json (orphans.py) and, in `sandbox/`, all the
container may touch: its connection file (fresh HMAC key; ipc sockets or
loopback ports), its working folder (`work/`), its HOME (`home/`), IPython's
and matplotlib's settings and the kernel's ipc sockets. Only `sandbox/` (owned
by the container's uid) is bound into the sandbox, so nothing the server reads
after the launch is a path the container could have replaced by a link; what
it writes there (the connection file, on a restart) it makes afresh with
O_EXCL|O_NOFOLLOW under the folder's descriptor.

The kernel runs under bubblewrap (sandbox.py) as an unprivileged uid with no
capabilities (container_user.py), in its own network namespace where the host
allows it (container_network.py), under memory, process and CPU limits it
cannot lift (resource_limits.py, cgroups.py), with an environment built from an
allow-list (container_env.py), its GPUs pinned by UUID and only their device
files in its /dev. cellhop's state, runtime and Jupyter runtime folders and the
host's home folders are hidden from it, all but its own folder and its
volumes. Without bubblewrap it runs unsandboxed, and the control plane says so
once. The kernel's output reaches container.log through a pipe, masked
(cellhop.masking.mask_text) when the container has secrets.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import pwd
import signal
import subprocess
import sys
import threading
from pathlib import Path

from traitlets import CaselessStrEnum, Int, Unicode

from ...container import OOM_EXIT_CODE, ExitStatus
from ...errors import CellhopError
from ...masking import SECRET_KEYS_ENV, masked_values
from ...wire import connection_info
from .. import cgroups
from ..container_env import allowed_environment
from ..container_log import DEFAULT_MAX_BYTES, CappedLog, MaskedLog, SharedLog, pump, read_log
from ..container_network import find_slirp4netns
from ..container_record import Container
from ..container_storage import unsandboxed_mount_error
from ..container_user import DEFAULT_UID, ContainerUser
from ..file_tree import remove_path
from ..paths import private_dir
from ..process_groups import kill_own_group
from ..resource_limits import ResourceLimits, describe_enforcement
from ..sandbox import Sandbox, find_bubblewrap, gpu_device_files
from .base import ContainerRuntime, Launched
from .. import late_mounts
from .local_standby import StandbyClaims
from .orphans import reap_orphans, record_owner
from .spawner import Spawner

__all__ = ["LocalRuntime", "MaskedLog", "connection_info", "default_hidden_folders"]

log = logging.getLogger("cellhop")

SANDBOX = "sandbox"  # the container's own folder, inside its server-only folder
_SIGKILL_EXIT = 128 + signal.SIGKILL


def default_hidden_folders(root: Path, state_dir: Path | None = None) -> list[Path]:
    """What no container may see of its host (none of these is created here):

    - the runtime's root (other containers' connection files with their HMAC keys, their logs) and, when it
      is a control plane's `<runtime root>/containers`, that whole runtime root (GPU leases, queue tickets);
    - jupyter_runtime_dir(): notebook kernels' connection files and jupyter_server's jpserver-*.json with its
      token (the default runtime root, jupyter_runtime_dir()/cellhop, is inside);
    - the state directory (secrets, every volume's data, images), `state_dir` (c.Cellhop.state_dir), and
      the default one, jupyter_data_dir()/cellhop.

    A container gets back what is its own on top: its folder, its volumes, its image's layers (read-only).
    The sandbox adds the host's home folders and /run (sandbox.HOST_HIDDEN).
    """
    from jupyter_core.paths import jupyter_data_dir, jupyter_runtime_dir

    root = Path(root)
    folders = [root.parent if root.name == "containers" else root, Path(jupyter_runtime_dir())]
    if state_dir is not None:
        folders.append(Path(state_dir))
    folders.append(Path(jupyter_data_dir()) / "cellhop")
    return folders


def _write_private(directory: Path, name: str, data: bytes, mode: int = 0o600) -> None:
    """Write a file in a server-only folder afresh, never through a link."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class LocalRuntime(StandbyClaims, ContainerRuntime):
    """Containers as bubblewrap-sandboxed processes on this host."""

    name = "local"

    transport = CaselessStrEnum(
        ["tcp", "ipc"], default_value="ipc",
        help="How notebook and container kernel talk on this host: 'ipc' (unix sockets) or 'tcp' (loopback).",
    ).tag(config=True)
    deprecated_aliases = {"transport": "transport"}  # c.Cellhop.transport
    network = CaselessStrEnum(
        ["isolated", "host"], default_value="isolated",
        help="A local container's network: 'isolated' (a namespace of its own, outbound access through "
        "slirp4netns where installed; nothing on the host's loopback is reachable) or 'host' (the host's). "
        "Containers whose kernel channels are TCP ports (transport 'tcp') share the host's network.",
    ).tag(config=True)

    container_uid = Int(
        65534, help="The host uid (and gid) local containers run as when the server runs as root (default "
        "65534, nobody); a server run by another user runs them as its own uid. Never 0.",
    ).tag(config=True)

    default_pids = Int(
        4096, help="Most processes (and threads) a container may have at once; 0 = no limit.",
    ).tag(config=True)

    cgroups = CaselessStrEnum(
        ["auto", "off"], default_value="auto",
        help="'auto': enforce memory, process and CPU limits with control groups where the host gives them "
        "(else per-process rlimits and a CPU affinity mask, said once); 'off': never touch cgroups.",
    ).tag(config=True)

    cgroup_parent = Unicode(
        "", help="A cgroup v2 folder (e.g. /sys/fs/cgroup/cellhop.slice) delegated to cellhop, whose "
        "cgroup.subtree_control enables memory, pids and cpu; containers' groups are made under it. "
        "Empty: under the server's own group.",
    ).tag(config=True)

    max_log_bytes = Int(
        DEFAULT_MAX_BYTES, help="Most bytes a container's log holds before it is rotated (one older file is kept).",
    ).tag(config=True)
    kernel_module = "cellhop.kernel.container_kernel"  # what a container runs: python -m <it> -f <connection file>

    def __init__(self, root: Path, sandbox: str = "auto", images_root: Path | None = None,
                 state_dir: Path | None = None, **kwargs):
        super().__init__(root=root, sandbox=sandbox, images_root=images_root, state_dir=state_dir, **kwargs)
        # Host folders no container may see, behind a tmpfs (which of them exist is checked at each launch:
        # they may appear later); a container's own volumes are bound back on top (sandbox.py).
        self.hidden = default_hidden_folders(self.root, state_dir)
        bwrap = None if sandbox == "none" else find_bubblewrap()
        if sandbox == "bubblewrap" and bwrap is None:
            raise CellhopError("c.Cellhop.sandbox = 'bubblewrap' but bwrap is not installed; "
                               "install it (apt-get install bubblewrap) or set sandbox to 'auto'")
        if bwrap is None and sandbox == "auto":
            log.warning("cellhop: bubblewrap (bwrap) is not installed, so containers run unsandboxed "
                        "on this host; install it with 'apt-get install bubblewrap'")
        self.bwrap = bwrap
        self.unsandboxed_why = "c.Cellhop.sandbox = 'none'" if sandbox == "none" else "bubblewrap missing"
        self.sandbox = None
        if bwrap:
            user = ContainerUser.for_this_server(self.container_uid or DEFAULT_UID)
            slirp = find_slirp4netns() if self.network == "isolated" else None
            self.sandbox = Sandbox(bwrap, user, self.hidden, slirp=slirp)
        self.network_mode = self.network if bwrap else "host"  # what containers get here
        self._said_host_network = False
        if self.network_mode == "isolated" and self.sandbox.slirp is None:
            log.warning("cellhop: slirp4netns is not installed, so containers get a network namespace with only "
                        "loopback (no outbound access); install it (apt-get install slirp4netns) or set "
                        "c.LocalRuntime.network = 'host'")
        self.placement = cgroups.place(parent=self.cgroup_parent or None) if self.cgroups == "auto" else None
        self.as_root = os.geteuid() == 0 and not bwrap
        self.limits_line = describe_enforcement(self.placement, self.as_root)
        log.info("cellhop: container limits on this host: %s", self.limits_line)
        reap_orphans(self.root)
        cgroups.sweep(self.placement)  # groups of control planes that died elsewhere (other runtime folders)
        self._spawner = Spawner()
        self._limits: dict[str, ResourceLimits] = {}
        self._log_pumps: dict[str, threading.Thread] = {}
        self._launches: dict[str, object] = {}
        self.init_standby_claims()
        # a process that exits without closing its control plane (a notebook kernel's embedded one) takes
        # its containers with it (--die-with-parent); their control groups it removes on the way out
        atexit.register(self._remove_groups_at_exit)

    def _remove_groups_at_exit(self) -> None:
        for limits in list(self._limits.values()):
            limits.remove(timeout=2.0)

    def describe(self) -> str:
        if not self.bwrap:
            return f"local, unsandboxed ({self.unsandboxed_why}); limits: {self.limits_line}"
        if self.network_mode == "isolated":
            network = ("network isolated (slirp4netns, outbound only)" if self.sandbox.slirp
                       else "network isolated (loopback only: slirp4netns missing)")
            if self.transport == "tcp":
                network = "host network (transport 'tcp' puts the kernel's channels on loopback)"
        else:
            network = "host network"
        return f"local, sandboxed with bubblewrap {self.sandbox.describe()}; {network}; limits: {self.limits_line}"

    # -- launching ----------------------------------------------------------------------
    def _own_folders(self, container: Container) -> Path:
        """The container's `sandbox/` folder with its work, home and settings folders, all its user's own."""
        box = container.directory / SANDBOX
        for path in (box, box / "work", box / "home", box / "ipython", box / "mpl"):
            path.mkdir(mode=0o700, exist_ok=True)
            if self.sandbox is not None:
                self.sandbox.user.give(path)
        return box

    # -- what the manager asks of this runtime beyond the lifecycle; hooks for subclasses (Ray's node) ------
    def check_spec(self, spec) -> None:
        """Besides the image: the interpreter and the working directory are this host's (host_checks.py)."""
        from .host_checks import check_python, check_workdir

        super().check_spec(spec)
        if spec.python:
            check_python(spec.python)
        if spec.workdir is not None:
            check_workdir(Path(spec.workdir))

    def hidden_folders(self) -> list[Path]:
        return list(self.hidden)

    def container_directory(self, container_id: str) -> Path:
        return private_dir(self.root / container_id)

    def extra_environment(self, container: Container) -> dict[str, str]:
        """Variables a subclass adds to a container's allow-listed environment (before the spec's own)."""
        return {}

    def prepare_child(self) -> None:
        """Runs in a container's process between fork and exec, before its limits are set (async-signal-safe
        work only): a subclass resets there what its host process changed (a Ray worker's signal mask)."""

    def launch(self, container: Container) -> Launched:
        spec = container.spec
        directory = container.directory
        box = self._own_folders(container)
        workdir = Path(spec.workdir) if spec.workdir else box / "work"
        workdir.mkdir(parents=True, exist_ok=True)
        # a restart (ContainerManager.restart) keeps the ports and key its clients already hold
        info = container.connection_info or connection_info(self.transport, ipc_dir=box)
        # the kernel may rewrite its connection file (ipykernel merges in what it adds, as CurveZMQ keys): it
        # lies in the container's own folder, made afresh here without following whatever is there
        conn_file = box / "connection.json"
        _write_private(box, conn_file.name, json.dumps(info).encode(), 0o600)
        if self.sandbox is not None:
            self.sandbox.user.give(conn_file, 0o600)

        limits = ResourceLimits(cpus=spec.cpus, memory=spec.memory, pids=self.default_pids or None,
                                placement=self.placement, as_root=self.as_root)
        limits.prepare(container.id)
        self._limits[container.id] = limits
        env = self._environment(container, limits)
        python = spec.python or sys.executable
        image_binds, image_mounts = [], []
        if spec.image:  # a built image: its venv's Python, its environment, its folders
            from ..images.runtime_env import apply_image, image_view

            view = image_view(self.images_root, spec.image)
            python = view["python"]
            image_mounts = apply_image(env, view, workdir, spec.env)
            # its layers: root's folders, some owner-only, shown read-only to the container's user as its own
            image_binds = [(Path(p), str(p), True) for p in view["binds"]]
        command = [python, "-m", self.kernel_module, "-f", str(conn_file)]
        launch = None
        if self.sandbox is not None:
            isolated = self.network_mode == "isolated" and info["transport"] == "ipc"
            if self.network_mode == "isolated" and not isolated and not self._said_host_network:
                self._said_host_network = True
                log.warning("cellhop: containers share the host's network: their kernel channels are TCP ports on "
                            "loopback (c.LocalRuntime.transport = 'tcp', or a runtime folder path too long for unix "
                            "sockets)")
            env["CELLHOP_NETWORK"] = "isolated" if isolated else "host"
            if info["transport"] == "ipc":  # its sandbox folder is its own: large values through shared memory
                env["CELLHOP_SHARED_MEMORY"] = "1"
            mapped = image_binds + list(container.mounts) + image_mounts
            if spec.workdir:
                mapped.append((workdir, str(workdir), spec.workdir_read_only))
            devices = gpu_device_files(g.minor for g in container.gpus if not g.simulated)
            late, late_work = self.prepare_late_folders(container)  # a standby's (local_standby.py)
            launch = self.sandbox.prepare([box, *([late_work] if late_work else [])], workdir, mapped=mapped,
                                          devices=devices, isolated=isolated, python=python,
                                          staging=directory / "mnt", late_devices=late)
            command = launch.argv + command
        elif container.mounts:
            raise unsandboxed_mount_error(container)
        elif spec.workdir and spec.workdir_read_only:  # nothing here could keep it read-only
            raise CellhopError(f"binding the notebook's folder read-only ({spec.workdir}) needs bubblewrap, and "
                               "this host runs containers unsandboxed; install bubblewrap (apt-get install "
                               "bubblewrap), or use --workdir rw or none")
        elif image_mounts:
            from ..images.runtime_env import link_mounts

            link_mounts(image_mounts)
        # the output's way to container.log: one pipe, or with secrets one per stream, each masked on its own
        values = masked_values(container.secret_env.values()) if container.secret_env else []
        pipes = [os.pipe() for _ in range(2 if values else 1)]
        log_file = CappedLog(directory, self.max_log_bytes or DEFAULT_MAX_BYTES)
        shared = SharedLog(log_file, len(pipes)) if values else None
        sinks = ([MaskedLog(shared.stream(), container.secret_env.values()) for _ in pipes] if values
                 else [log_file])
        try:
            proc = self._spawner.popen(
                command,
                cwd=str(workdir),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=pipes[0][1],
                stderr=pipes[1][1] if values else subprocess.STDOUT,
                start_new_session=True,
                pass_fds=launch.pass_fds() if launch else (),
                preexec_fn=self._preexec(limits, launch, self._late_workdirs.get(container.id)),
            )
        except BaseException:
            for read_end, write_end in pipes:
                os.close(read_end)
                os.close(write_end)
            log_file.close()
            if launch is not None:
                launch.close()
            raise
        threads = []
        for (read_end, write_end), sink in zip(pipes, sinks):
            os.close(write_end)
            threads.append(threading.Thread(target=pump, args=(read_end, sink), name=f"cellhop-log-{container.id}",
                                            daemon=True))
            threads[-1].start()
        self._log_pumps[container.id] = threads
        record_owner(directory, proc.pid, cgroups=[str(p) for p in (limits.groups.folders() if limits.groups else [])])
        if launch is not None:
            self._launches[container.id] = launch
            try:
                launch.started(log_path=directory / "network.log")  # raises if the network cannot be connected
            except BaseException:
                proc.kill()  # bubblewrap, and with it the whole sandbox (--die-with-parent)
                proc.wait()
                raise
        return Launched(connection_info=info, handle=proc, sandboxed=self.sandbox is not None)

    def _preexec(self, limits: ResourceLimits, launch=None, late_work: Path | None = None):
        bwrap = self.bwrap
        libc = None
        if bwrap is None or late_work is not None:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)

        def preexec():
            self.prepare_child()
            limits.preexec()
            if launch is not None:
                launch.attach_in_child()
            if late_work is not None:  # a standby's late folder, shared in a mount namespace of its own
                late_mounts.share_in_child(late_work, libc, own_namespace=bool(launch.trees))
            if bwrap is None:  # without bubblewrap, at least die with the owner
                libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

        return preexec

    def _environment(self, container: Container, limits: ResourceLimits) -> dict[str, str]:
        env = allowed_environment()
        box = container.directory / SANDBOX
        env["HOME"] = str(box / "home")
        if self.sandbox is not None and self.sandbox.user.switch:
            try:
                env["USER"] = env["LOGNAME"] = pwd.getpwuid(self.sandbox.user.uid).pw_name
            except KeyError:
                pass
        env.update(self.gpu_environment(container))
        env["IPYTHONDIR"] = str(box / "ipython")
        env["MPLCONFIGDIR"] = str(box / "mpl")
        env.update(limits.environment())
        env.update(self.extra_environment(container))
        env.update(container.spec.env)
        if container.secret_env:  # values only here; the container kernel masks them in its output
            env.update(container.secret_env)
            env[SECRET_KEYS_ENV] = ",".join(sorted(container.secret_env))
        return env

    # -- running --------------------------------------------------------------------------
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

    def connect_port(self, container: Container, port: int):
        """From inside the container's network namespace (container_ports.py), never through a host port."""
        from ..container_ports import PortUnreachable, connect_in_container

        pid = self._kernel_pid(container)
        if pid is None:
            raise PortUnreachable(f"container {container.id} has no running kernel; start it again")
        return connect_in_container(pid, port, still_ours=lambda: self._kernel_pid(container) == pid)

    def poll(self, container: Container) -> ExitStatus | None:
        proc: subprocess.Popen = container.handle
        if proc is None:
            return None
        code = proc.poll()
        if code is None:
            return None
        limits = self._limits.get(container.id)
        # the OOM killer's SIGKILL in the container's memory group, or the kernel's own exit under RLIMIT_DATA
        killed = code in (-signal.SIGKILL, _SIGKILL_EXIT)
        oom = (killed and limits is not None and limits.oom_killed()) or code == OOM_EXIT_CODE
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
        kill_own_group(proc)  # its own session: bwrap or the bare kernel, and children
        limits = self._limits.get(container.id)
        if limits is not None:
            limits.kill()  # anything of its groups that left the session
        proc.wait()

    def read_log(self, container: Container, tail: int | None = None) -> str:
        """The log so far, or its last `tail` lines (read from the end of the file)."""
        proc: subprocess.Popen = container.handle
        if proc is not None and proc.poll() is not None:
            for thread in self._log_pumps.get(container.id, ()):
                thread.join(timeout=2)  # the kernel has exited: let its last output reach the file
        if container.directory is None:
            return ""
        return read_log(container.directory, tail)

    def cleanup(self, container: Container) -> None:
        for thread in self._log_pumps.pop(container.id, ()):
            thread.join(timeout=2)
        self.forget_late_folders(container.id)
        launch = self._launches.pop(container.id, None)
        if launch is not None:
            launch.close()  # slirp4netns exits with its pipe
        limits = self._limits.pop(container.id, None)
        if limits is not None and not limits.remove():
            log.warning("cellhop: the control groups of container %s still hold processes; they are removed "
                        "when the next control plane starts", container.id)
        if container.directory is not None:
            remove_path(container.directory / SANDBOX, ignore_errors=True)  # any depth: the container made it
            remove_path(container.directory / "mnt", ignore_errors=True)  # empty staging folders
            remove_path(container.directory / "devices", ignore_errors=True)  # a claimed standby's GPU files

    def close(self) -> None:
        atexit.unregister(self._remove_groups_at_exit)
        if self.sandbox is not None:
            self.sandbox.close()
