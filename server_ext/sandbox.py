"""The bubblewrap command line that isolates a local container.

New pid, ipc and mount namespaces; the host root read-only; a private /tmp
and /dev/shm; the container's own folder (connection file, sockets, working
directory) bound read-write; host networking, so loopback reaches it. With
--die-with-parent the whole pid namespace dies with the process that started
it, so a container never outlives its owner.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

PRIVATE = (Path("/tmp"), Path("/dev/shm"))


def hidden_import_paths() -> list[Path]:
    """Folders Python imports from (cellhop's own source included) that the private /tmp would hide.

    A checkout or virtual environment under /tmp is common (CI clones, scratch
    venvs); those folders are bound back read-only so the container imports
    exactly what the notebook does.
    """
    import cellhop
    import cellhop.kernel

    candidates = [Path(p) for p in sys.path if p] + [Path(sys.prefix), Path(sys.executable).parent]
    candidates += [Path(cellhop.__file__).parent.parent, Path(cellhop.kernel.__file__).parent.parent]
    found: list[Path] = []
    for path in candidates:
        try:
            path = path.resolve()
        except OSError:
            continue
        if path.exists() and any(path.is_relative_to(p) and path != p for p in PRIVATE):
            if not any(path.is_relative_to(f) for f in found):
                found = [f for f in found if not f.is_relative_to(path)] + [path]
    return found


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


def bubblewrap_argv(bwrap: str, rw_binds: list[Path], workdir: Path, ro_binds: list[tuple[Path, Path]] = (),
                    volumes: list[tuple[Path, str, bool]] = ()) -> list[str]:
    """`volumes`: (host folder, path inside, read-only) bind mounts of cellhop volumes."""
    new_top = any(not os.path.lexists("/" + dest.strip("/").split("/")[0]) for _, dest, _ in volumes)
    argv = [
        bwrap,
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-ipc",
        *(_root_entries() if new_top else ["--ro-bind", "/", "/"]),
        "--dev", "/dev",
        "--proc", "/proc",
        "--tmpfs", "/tmp",
        "--tmpfs", "/dev/shm",
    ]
    for src, dest in ro_binds:
        argv += ["--ro-bind", str(src), str(dest)]
    for path in rw_binds:
        argv += ["--bind", str(path), str(path)]
    for src, dest, read_only in volumes:
        argv += ["--ro-bind" if read_only else "--bind", str(src), dest]
    if new_top:
        argv += ["--remount-ro", "/"]
    argv += ["--chdir", str(workdir), "--"]
    return argv
