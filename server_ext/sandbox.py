"""The bubblewrap command line that isolates a local container.

New pid, ipc and mount namespaces; the host root read-only; a private /tmp
and /dev/shm; the container's own folder (connection file, sockets, working
directory) bound read-write; host networking, so loopback reaches it. With
--die-with-parent the whole pid namespace dies with the process that started
it, so a container never outlives its owner.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def find_bubblewrap() -> str | None:
    return shutil.which("bwrap")


def bubblewrap_argv(bwrap: str, rw_binds: list[Path], workdir: Path, ro_binds: list[tuple[Path, Path]] = ()) -> list[str]:
    argv = [
        bwrap,
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-ipc",
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--tmpfs", "/tmp",
        "--tmpfs", "/dev/shm",
    ]
    for path in rw_binds:
        argv += ["--bind", str(path), str(path)]
    for src, dest in ro_binds:
        argv += ["--ro-bind", str(src), str(dest)]
    argv += ["--chdir", str(workdir), "--"]
    return argv
