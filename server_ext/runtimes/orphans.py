"""Leftovers of a control plane that died without cleaning up (SIGKILL, power loss).

Each container folder records its control plane's pid and the container's
process, each with its start time (so a reused pid is not mistaken for it),
and the container's control groups. A control plane starting up removes the
folders of dead control planes, kills anything of theirs that still runs and
removes their groups. Folders of live control planes (another server, another
notebook's embedded one) are left alone. The record lives in the container's
server-only folder and is read and written without following links.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
from pathlib import Path

from ..cgroups import PREFIX, remove_groups
from ..file_tree import remove_path

log = logging.getLogger("cellhop")
OWNER_FILE = "owner.json"


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2:].split()[19])


def _alive(pid: int | None, start: int | None) -> bool:
    return pid is not None and start is not None and _start_time(pid) == start


def record_owner(directory: Path, process_pid: int, cgroups: list[str] = ()) -> None:
    """Write who owns `directory`: this process, the container's process and its control groups."""
    me = os.getpid()
    data = {"owner_pid": me, "owner_start": _start_time(me),
            "pid": process_pid, "start": _start_time(process_pid), "cgroups": list(cgroups)}
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fd = os.open(OWNER_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data))


def _read_record(directory: Path) -> dict | None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            fd = os.open(OWNER_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            data = json.loads(f.read(65536))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def reap_orphans(root: Path) -> list[str]:
    """Kill and remove what dead control planes left under `root`; returns the folder names removed."""
    removed = []
    if not root.is_dir():
        return removed
    for directory in root.iterdir():
        data = _read_record(directory)
        if data is None:
            continue  # not a container folder, or one still being set up
        if _alive(data.get("owner_pid"), data.get("owner_start")):
            continue
        if _alive(data.get("pid"), data.get("start")):
            try:
                os.killpg(data["pid"], signal.SIGKILL)  # containers run in their own session
            except (ProcessLookupError, PermissionError):
                pass
            log.warning("cellhop: killed container %s left running by a control plane that died", directory.name)
        groups = [Path(p) for p in data.get("cgroups") or () if isinstance(p, str) and Path(p).name.startswith(PREFIX)
                  and Path(p).is_relative_to("/sys/fs/cgroup")]
        if groups and not remove_groups(groups):
            log.warning("cellhop: the control groups of container %s still hold processes: %s", directory.name,
                        ", ".join(map(str, groups)))
        remove_path(directory, ignore_errors=True)  # any depth: a container may have left a deep tree
        removed.append(directory.name)
    return removed
