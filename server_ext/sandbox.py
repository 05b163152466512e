"""The bubblewrap sandbox of a local container (and of an image's build steps).

Namespaces: new pid, ipc, mount, uts (a hostname change stays inside) and
cgroup ones, and a network namespace unless the container shares the host's
(container_network.py). Privileges: none (container_user.py): as root, the
command inside starts by switching to an unprivileged uid with no capability,
an empty bounding set and no_new_privs; as another user, bubblewrap's user
namespace does the same. Files: the host root read-only; a private /tmp and
/dev/shm; empty tmpfs mounts over /root, /home and /run (home folders, the
sockets of host daemons) and over cellhop's own folders: the state directory
(secrets, every volume's data, images), the runtime root (other containers'
folders, GPU leases) and jupyter_runtime_dir() (notebook kernels' connection
files, jpserver-*.json with the server's token). Only what this container must
see is bound back on top: its own `sandbox` folder read-write (its
connection file inside), the volumes it mounts and the notebook's folder (idmapped for a
root server, so the container's uid may write them), and, read-only, its
image's layers, the folders Python imports from and the resolver
configuration. A minimal /dev, plus the NVIDIA control devices and the
/dev/nvidiaN files of the GPUs the container holds (no other GPU's). With
--die-with-parent the whole pid namespace dies with the process that started
it, so a container never outlives its owner.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .container_network import SandboxNetwork
from .container_user import ContainerUser, IdMapper

PRIVATE = (Path("/tmp"), Path("/dev/shm"))
# Host folders no sandbox sees: home folders, host daemons' sockets and state (cellhop's are added per runtime).
HOST_HIDDEN = (Path("/root"), Path("/home"), Path("/run"))
# The NVIDIA driver's control devices: every CUDA process opens them (those missing on a host are skipped).
NVIDIA_CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset",
                          "/dev/nvidia-caps")
# Files of the host a sandbox needs even where they lie in a hidden folder (systemd-resolved's resolv.conf)
NEEDED_FILES = ("/etc/resolv.conf",)


def hidden_import_paths(hidden: Iterable[Path] = (), extra: Iterable[Path] = ()) -> list[Path]:
    """Folders Python imports from (cellhop's own source included, and `extra` ones) that the private /tmp,
    or one of the `hidden` folders, would hide.

    A checkout or virtual environment under /tmp or a home folder is common (CI clones, scratch venvs,
    pyenv under /root); those folders are bound back read-only so the container imports exactly what the
    notebook does.
    """
    import importlib.util

    import cellhop

    kernel_package = importlib.util.find_spec("cellhop.kernel").origin  # where the container's kernel comes from
    covered = list(PRIVATE) + [Path(h) for h in hidden]
    candidates = [Path(p) for p in sys.path if p] + [Path(sys.prefix), Path(sys.base_prefix),
                                                     Path(sys.executable).parent]
    candidates += [Path(cellhop.__file__).parent.parent, Path(kernel_package).parent.parent]
    candidates += [Path(p) for p in extra]
    found: list[Path] = []
    for path in candidates:
        try:
            path = path.resolve()
        except OSError:
            continue
        if path.exists() and any(path.is_relative_to(p) and path != p for p in covered):
            if not any(path.is_relative_to(f) for f in found):
                found = [f for f in found if not f.is_relative_to(path)] + [path]
    return found


def interpreter_folders(python: str | os.PathLike) -> list[Path]:
    """The folders an interpreter other than this one needs: its environment's (a venv) and, through its
    links, its base installation's."""
    path = Path(python)
    folders = [path.absolute().parent.parent]
    try:
        folders.append(path.resolve().parent.parent)
    except OSError:
        pass
    return folders


def folders_to_hide(folders: Iterable[Path | str | None]) -> list[Path]:
    """The folders among `folders` that need a tmpfs over them in the sandbox: existing ones (resolved),
    not already private (under /tmp or /dev/shm), not the root, and not inside another one of them."""
    found: list[Path] = []
    for folder in folders:
        if not folder:
            continue
        try:
            path = Path(folder).resolve()
        except OSError:
            continue
        if path == Path("/") or not path.is_dir() or any(path.is_relative_to(p) for p in PRIVATE):
            continue
        if not any(path.is_relative_to(f) for f in found):
            found = [f for f in found if not f.is_relative_to(path)] + [path]
    return sorted(found)


def needed_files(hidden: Sequence[Path]) -> list[Path]:
    """Host files a sandbox needs that a hidden folder would cover (bound back read-only)."""
    found = []
    for name in NEEDED_FILES:
        real = Path(os.path.realpath(name))
        if real.is_file() and any(real.is_relative_to(h) for h in hidden):
            found.append(real)
    return found


def gpu_device_files(minors: Iterable[int | None]) -> list[str]:
    """The device files a container holding GPUs with these NVML minor numbers needs: the control devices
    and one /dev/nvidiaN per GPU (None, a GPU without a known minor number such as a simulated one: none)."""
    own = [f"/dev/nvidia{m}" for m in dict.fromkeys(m for m in minors if m is not None)]
    return list(NVIDIA_CONTROL_DEVICES) + own if own else []


LATE_DEVICES = "/dev/cellhop-gpu"  # where a standby container's GPU device files appear once it is claimed


def host_gpu_device_names() -> list[str]:
    """The names (under /dev) of every NVIDIA device file of this host: the control devices and each
    /dev/nvidiaN. A standby container's /dev holds links of these names into LATE_DEVICES, which stay
    dangling until a claim makes the files of the GPUs it leased there (runtimes/gpu_attach.py)."""
    names = [Path(p).name for p in NVIDIA_CONTROL_DEVICES if os.path.exists(p)]
    names += sorted(e.name for e in os.scandir("/dev") if e.name.startswith("nvidia") and e.name[6:].isdigit())
    return names if any(n[6:].isdigit() for n in names) else []


def find_bubblewrap() -> str | None:
    return shutil.which("bwrap")


def _root_entries() -> list[str]:
    """The host root bound entry by entry (links kept as links), so the sandbox's own root can take
    new top-level mount points such as /data; it is made read-only again once they exist."""
    argv = []
    for entry in sorted(os.scandir("/"), key=lambda e: e.name):
        path = f"/{entry.name}"
        if path in ("/proc", "/dev", "/tmp"):
            continue
        if entry.is_symlink():
            argv += ["--symlink", os.readlink(path), path]
        else:
            argv += ["--ro-bind-try", path, path]
    return argv


def _made_parents(dests: Iterable[Path], hidden: Sequence[Path]) -> list[Path]:
    """The folders between a tmpfs (the private /tmp, a hidden folder) and what is bound below it."""
    covers = [Path(p) for p in (*PRIVATE, *hidden)]
    found: dict[Path, None] = {}
    for dest in dests:
        dest = Path(os.path.realpath(dest))
        under = [c for c in covers if dest.is_relative_to(c) and dest != c]
        if not under:
            continue
        cover = max(under, key=lambda c: len(c.parts))
        for parent in reversed(dest.parents):
            if parent.is_relative_to(cover) and parent != cover:
                found[parent] = None
    return list(found)


def closed_folders(dests: Iterable[Path], hidden: Sequence[Path], uid: int, gid: int) -> list[Path]:
    """The host folders on the way to `dests` that `uid` may not walk through (a 0700 temporary folder, say),
    outside the tmpfs mounts: each gets a tmpfs of its own (hiding nothing `uid` could have seen), and the
    way below it is made anew, open to walk through."""
    covers = [Path(p) for p in (*PRIVATE, *hidden)]
    found: list[Path] = []
    for dest in dests:
        dest = Path(os.path.realpath(dest))
        for parent in reversed(dest.parents):
            if any(parent.is_relative_to(c) for c in covers + found):
                break
            try:
                st = os.stat(parent)
            except OSError:
                break
            mode = st.st_mode
            if not (mode & 0o001 or (st.st_uid == uid and mode & 0o100) or (st.st_gid == gid and mode & 0o010)):
                found.append(parent)
                break
    return found


def _depth(dest: str) -> int:
    return len(Path(os.path.realpath(dest)).parts)


def bubblewrap_argv(bwrap: str, rw_binds: list[Path], workdir: Path, ro_binds: list[tuple[Path, Path]] = (),
                    volumes: list[tuple[Path, str, bool]] = (), hidden: Sequence[Path] = (),
                    devices: Sequence[str] = (), options: Sequence[str] = (),
                    late_devices: tuple[Path, Sequence[str]] | None = None) -> list[str]:
    """`rw_binds`: host folders bound read-write at the same path; `ro_binds`: (host path, path inside).
    `volumes`: (host folder, path inside, read-only) bind mounts of cellhop volumes.
    `hidden`: host folders covered by an empty tmpfs (see folders_to_hide); the binds are made on top.
    `devices`: host device files bound into the minimal /dev when present (see gpu_device_files).
    `options`: more of bubblewrap's options (the user's capabilities, the network's pipes).
    `late_devices`: (a server-only host folder, device names): the folder is bound at LATE_DEVICES and each
    name gets a link /dev/<name> into it, dangling until the server makes that device file there."""
    new_top = any(not os.path.lexists("/" + dest.strip("/").split("/")[0]) for _, dest, _ in volumes)
    argv = [
        bwrap,
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        *options,
        *(_root_entries() if new_top else ["--ro-bind", "/", "/"]),
        "--dev", "/dev",
    ]
    for device in devices:
        argv += ["--dev-bind-try", device, device]
    if late_devices is not None:
        folder, names = late_devices
        argv += ["--dev-bind", str(folder), LATE_DEVICES]
        for name in names:
            argv += ["--symlink", f"{Path(LATE_DEVICES).name}/{name}", f"/dev/{name}"]
    argv += [
        "--proc", "/proc",
        "--perms", "1777", "--tmpfs", "/tmp",
        "--perms", "1777", "--tmpfs", "/dev/shm",
    ]
    # Later mounts go on top of earlier ones, so mounts are made outermost first (by depth of the path
    # inside): a tmpfs hides what lies under it, and a bind inside it (the container's own folder) is made
    # after it, so it shows; at equal depth a bind wins over a tmpfs. Sources are the host's, never hidden.
    mounts = [(str(path), ["--tmpfs", str(path)]) for path in hidden]
    # folders bubblewrap makes on a tmpfs to bind into would copy the host's modes (0700 for the runtime
    # root): made first, open to walk through, so an unprivileged user reaches what is bound there
    dests = [Path(d) for _, d in ro_binds] + list(rw_binds) + [Path(d) for _, d, _ in volumes]
    mounts += [(str(p), ["--perms", "0755", "--dir", str(p)]) for p in _made_parents(dests, hidden)]
    mounts += [(str(dest), ["--ro-bind", str(src), str(dest)]) for src, dest in ro_binds]
    mounts += [(str(path), ["--bind", str(path), str(path)]) for path in rw_binds]
    mounts += [(dest, ["--ro-bind" if read_only else "--bind", str(src), dest]) for src, dest, read_only in volumes]
    for _, args in sorted(mounts, key=lambda m: _depth(m[0])):  # stable: same depth keeps this order
        argv += args
    if new_top:
        argv += ["--remount-ro", "/"]
    argv += ["--chdir", str(workdir), "--"]
    return argv


@dataclass
class Launch:
    """One sandbox being started: its command line, the descriptors bubblewrap inherits, the idmapped trees
    its starting child attaches (attach_in_child), and the network helper that lives as long as it does."""

    argv: list[str]
    network: SandboxNetwork
    mapper: IdMapper | None = None
    trees: list[tuple[int, Path]] = field(default_factory=list)  # (detached tree, staging folder)

    def pass_fds(self) -> tuple[int, ...]:
        return self.network.pass_fds()

    def attach_in_child(self) -> None:
        """Between fork and exec of bubblewrap: attach the idmapped trees in a mount namespace of its own."""
        if self.trees:
            self.mapper.attach_in_child(self.trees)

    def spawned(self) -> None:
        """In the server, once bubblewrap was forked: the trees are the child's now."""
        for fd, _ in self.trees:
            os.close(fd)
        self.trees = []

    def started(self, timeout: float = 10.0, log_path: Path | None = None) -> None:
        """After bubblewrap was spawned: connect the network and let the sandbox go on."""
        self.spawned()
        self.network.start(timeout, log_path)

    def close(self) -> None:
        self.spawned()
        self.network.close()


class Sandbox:
    """How this host sandboxes: bubblewrap, the user containers run as, the folders they never see."""

    def __init__(self, bwrap: str, user: ContainerUser, hidden: Sequence[Path], slirp: str | None = None,
                 extra_import_paths: Iterable[Path] = ()):
        self.bwrap = bwrap
        self.user = user
        self.hidden = list(hidden) + list(HOST_HIDDEN)
        self.slirp = slirp
        self.mapper = IdMapper(user)
        # the import paths the hidden folders (or the private /tmp) would hide, bound back read-only: sys.path
        # is fixed, so they are worked out once
        self.import_paths = hidden_import_paths(folders_to_hide(self.hidden), extra_import_paths)

    def prepare(self, rw_binds: list[Path], workdir: Path, ro_binds: Sequence[tuple[Path, Path]] = (),
                mapped: Sequence[tuple[Path, str, bool]] = (), devices: Sequence[str] = (),
                isolated: bool = True, python: str | None = None, staging: Path | None = None,
                late_devices: tuple[Path, Sequence[str]] | None = None) -> Launch:
        """The command line of a sandbox. `rw_binds` are folders the server made for the sandbox (owned by the
        container's user); `mapped` are host folders shown to the container's user as its own (idmapped
        where the host can), as (host folder, path inside, read-only): volumes, the notebook's folder.
        `staging`: an empty server-only folder for the idmapped trees' mount points."""
        hidden = folders_to_hide(self.hidden)
        if self.user.switch:
            dests = [Path(d) for _, d in ro_binds] + list(rw_binds) + [Path(d) for _, d, _ in mapped]
            hidden = folders_to_hide(hidden + closed_folders(dests, hidden, self.user.uid, self.user.gid))
        ro = [(p, p) for p in self.import_paths] + list(ro_binds)
        ro += [(f, f) for f in needed_files(hidden)]
        if python:  # another interpreter's folders, unless what is bound already holds them
            bound = [Path(p) for p in rw_binds] + [Path(d) for _, d, _ in mapped]
            ro += [(p, p) for p in hidden_import_paths(hidden, interpreter_folders(python))
                   if p not in self.import_paths and not any(p.is_relative_to(b) for b in bound)]
        network = SandboxNetwork(isolated, self.slirp, userns=not self.user.switch, uid=self.user.uid,
                                 gid=self.user.gid)
        launch = Launch([], network, mapper=self.mapper)
        volumes = []
        try:
            for n, (src, dest, read_only) in enumerate(mapped):
                tree = self.mapper.tree(Path(src), read_only) if self.user.switch and staging else None
                if tree is None:
                    volumes.append((Path(src), str(dest), read_only))
                    continue
                target = staging / str(n)
                launch.trees.append((tree, target))
                target.mkdir(mode=0o700, parents=True, exist_ok=True)
                volumes.append((target, str(dest), read_only))
        except BaseException:
            launch.close()
            raise
        options = self.user.bwrap_options() + network.bwrap_options()
        # as root, bubblewrap enters "/" and the command its folder once it runs as the container's user
        start_in = Path("/") if self.user.switch else workdir
        launch.argv = bubblewrap_argv(self.bwrap, rw_binds, start_in, ro, volumes=volumes, hidden=hidden,
                                      devices=devices, options=options,
                                      late_devices=late_devices) + self.user.command_prefix(
                                          workdir if self.user.switch else None)
        return launch

    def describe(self) -> str:
        why = self.mapper.describe()
        return f"as {self.user.describe()}" + (f"; no idmapped mounts: {why}" if why else "")

    def close(self) -> None:
        self.mapper.close()
