"""Leftovers of a control plane that died without cleaning up (SIGKILL, power loss).

Each container folder records its control plane's pid and the container's
process, each with its start time (so a reused pid is not mistaken for it).
A control plane starting up removes the folders of dead control planes and
kills anything of theirs that still runs. Folders of live control planes
(another server, another notebook's embedded one) are left alone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
from pathlib import Path

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


def record_owner(directory: Path, process_pid: int) -> None:
    """Write who owns `directory`: this process, and the container's process."""
    me = os.getpid()
    data = {"owner_pid": me, "owner_start": _start_time(me),
            "pid": process_pid, "start": _start_time(process_pid)}
    (directory / OWNER_FILE).write_text(json.dumps(data))


def reap_orphans(root: Path) -> list[str]:
    """Kill and remove what dead control planes left under `root`; returns the folder names removed."""
    removed = []
    if not root.is_dir():
        return removed
    for directory in root.iterdir():
        record = directory / OWNER_FILE
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue  # not a container folder, or one still being set up
        if _alive(data.get("owner_pid"), data.get("owner_start")):
            continue
        if _alive(data.get("pid"), data.get("start")):
            try:
                os.killpg(data["pid"], signal.SIGKILL)  # containers run in their own session
            except (ProcessLookupError, PermissionError):
                pass
            log.warning("cellhop: killed container %s left running by a control plane that died", directory.name)
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory.name)
    return removed
