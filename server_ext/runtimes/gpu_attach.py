"""Making a claimed standby container's GPUs visible: their device files, made only at the claim.

A standby container (standby_pool.py) starts with no GPU: no NVIDIA device
file in its /dev, CUDA_VISIBLE_DEVICES empty. Where the host can (the server
runs as root, the runtime folder's file system allows device files), its
/dev holds links named like the host's NVIDIA devices into a folder only the
server can write (sandbox.LATE_DEVICES), dangling: nothing opens them. The
claim, once the scheduler granted the GPU lease, makes the device files of
exactly the leased GPUs (and the driver's control devices) in that folder,
as character devices with the host's numbers and modes; the links then
resolve. No other container's folder ever holds them, and a standby is
claimed once: when its work is done it is stopped, never returned.

Where the host cannot (a server not run as root cannot make device files),
a request for real GPUs starts a fresh container as before; simulated GPUs
have no device files, so any standby can take them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ...errors import CellhopError
from ..sandbox import gpu_device_files, host_gpu_device_names


class CannotAttach(CellhopError):
    """This standby cannot be given these GPUs here; the request starts a fresh container instead."""


def late_device_folder(directory: Path) -> tuple[Path, list[str]] | None:
    """For a standby container whose server-only folder is `directory`: (the folder its GPU device files
    will be made in, the device names its /dev links), or None where claims cannot add devices here."""
    names = host_gpu_device_names()
    if not names or os.geteuid() != 0:
        return None
    folder = directory / "devices"
    folder.mkdir(mode=0o755, exist_ok=True)
    if os.statvfs(folder).f_flag & os.ST_NODEV:  # device files there would not open
        return None
    return folder, names


def attach_devices(folder: Path | None, minors) -> list[str]:
    """Make the device files of the GPUs with these NVML minor numbers (and the control devices) in a
    claimed standby's `folder`; returns their names. Raises CannotAttach where it cannot."""
    wanted = gpu_device_files(minors)
    if not wanted:
        return []
    if folder is None:
        raise CannotAttach("this standby container cannot be given device files (the server does not run as "
                           "root, or its runtime folder does not allow device files)")
    made = []
    for path in wanted:
        if not os.path.exists(path):
            continue  # a control device this host does not have
        _copy_node(Path(path), folder / Path(path).name)
        made.append(Path(path).name)
    return made


def _copy_node(source: Path, target: Path) -> None:
    """A device file (or a folder of them: /dev/nvidia-caps) with the host's numbers, mode and owner."""
    st = os.lstat(source)
    if stat.S_ISDIR(st.st_mode):
        target.mkdir(mode=stat.S_IMODE(st.st_mode), exist_ok=True)
        for entry in os.scandir(source):
            if entry.is_dir(follow_symlinks=False) or stat.S_ISCHR(entry.stat(follow_symlinks=False).st_mode):
                _copy_node(Path(entry.path), target / entry.name)
        return
    if not stat.S_ISCHR(st.st_mode):
        raise CannotAttach(f"{source} is not a character device")
    os.mknod(target, stat.S_IFCHR | stat.S_IMODE(st.st_mode), st.st_rdev)
    os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(target, stat.S_IMODE(st.st_mode))  # what the umask took off mknod's mode
