"""The bubblewrap command line that isolates a local container.

New pid, ipc and mount namespaces; the host root read-only; a private /tmp
and /dev/shm; host networking, so loopback reaches it. cellhop's own folders
on the host are hidden behind empty tmpfs mounts: the state directory
(secrets, every volume's data, images), the runtime root (other containers'
connection files with their HMAC keys, their logs, GPU leases) and
jupyter_runtime_dir() (the notebook kernels' connection files, the server's
jpserver-*.json with its token). Only what this container must see is bound
back on top: its own folder (connection file, sockets, working directory)
read-write, the volumes it mounts, and, read-only, the layers of its image and
the folders Python imports from. A minimal /dev, plus the NVIDIA control
devices and the /dev/nvidiaN files of the GPUs the container holds (no
other GPU's). With --die-with-parent the whole pid namespace dies with the
process that started it, so a container never outlives its owner.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

PRIVATE = (Path("/tmp"), Path("/dev/shm"))
# The NVIDIA driver's control devices: every CUDA process opens them (those missing on a host are skipped).
NVIDIA_CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset",
                          "/dev/nvidia-caps")


def hidden_import_paths(hidden: Iterable[Path] = ()) -> list[Path]:
    """Folders Python imports from (cellhop's own source included) that the private /tmp, or one of the
    `hidden` folders, would hide.

    A checkout or virtual environment under /tmp is common (CI clones, scratch
    venvs); those folders are bound back read-only so the container imports
    exactly what the notebook does.
    """
    import importlib.util

    import cellhop

    kernel_package = importlib.util.find_spec("cellhop.kernel").origin  # where the container's kernel comes from
    covered = list(PRIVATE) + [Path(h) for h in hidden]
    candidates = [Path(p) for p in sys.path if p] + [Path(sys.prefix), Path(sys.executable).parent]
    candidates += [Path(cellhop.__file__).parent.parent, Path(kernel_package).parent.parent]
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


def gpu_device_files(minors: Iterable[int | None]) -> list[str]:
    """The device files a container holding GPUs with these NVML minor numbers needs: the control devices
    and one /dev/nvidiaN per GPU (None, a GPU without a known minor number such as a simulated one: none)."""
    own = [f"/dev/nvidia{m}" for m in dict.fromkeys(m for m in minors if m is not None)]
    return list(NVIDIA_CONTROL_DEVICES) + own if own else []


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


def _depth(dest: str) -> int:
    return len(Path(os.path.realpath(dest)).parts)


def bubblewrap_argv(bwrap: str, rw_binds: list[Path], workdir: Path, ro_binds: list[tuple[Path, Path]] = (),
                    volumes: list[tuple[Path, str, bool]] = (), hidden: Sequence[Path] = (),
                    devices: Sequence[str] = ()) -> list[str]:
    """`volumes`: (host folder, path inside, read-only) bind mounts of cellhop volumes.
    `hidden`: host folders covered by an empty tmpfs (see folders_to_hide); the binds are made on top.
    `devices`: host device files bound into the minimal /dev when present (see gpu_device_files)."""
    new_top = any(not os.path.lexists("/" + dest.strip("/").split("/")[0]) for _, dest, _ in volumes)
    argv = [
        bwrap,
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-ipc",
        *(_root_entries() if new_top else ["--ro-bind", "/", "/"]),
        "--dev", "/dev",
    ]
    for device in devices:
        argv += ["--dev-bind-try", device, device]
    argv += [
        "--proc", "/proc",
        "--tmpfs", "/tmp",
        "--tmpfs", "/dev/shm",
    ]
    # Later mounts go on top of earlier ones, so mounts are made outermost first (by depth of the path
    # inside): a tmpfs hides what lies under it, and a bind inside it (the container's own folder) is made
    # after it, so it shows; at equal depth a bind wins over a tmpfs. Sources are the host's, never hidden.
    mounts = [(str(path), ["--tmpfs", str(path)]) for path in hidden]
    mounts += [(str(dest), ["--ro-bind", str(src), str(dest)]) for src, dest in ro_binds]
    mounts += [(str(path), ["--bind", str(path), str(path)]) for path in rw_binds]
    mounts += [(dest, ["--ro-bind" if read_only else "--bind", str(src), dest]) for src, dest, read_only in volumes]
    for _, args in sorted(mounts, key=lambda m: _depth(m[0])):  # stable: same depth keeps this order
        argv += args
    if new_top:
        argv += ["--remount-ro", "/"]
    argv += ["--chdir", str(workdir), "--"]
    return argv
