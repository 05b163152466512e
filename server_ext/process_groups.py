"""Ending a process's whole group by its leader's pid, only while that pid is still the leader's own."""

from __future__ import annotations

import os
import signal
import subprocess


def kill_own_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> bool:
    """Send `sig` to the group `proc` leads (started in a session of its own), while `proc` is not yet
    reaped; True when sent. Once a Popen has been waited for (a poll that saw it end), its pid is free for
    any new process (pid_max may be 32768, which a busy host goes round in minutes), and a killpg of that
    number would end whatever group took it. After that, the group's stragglers are ended by their
    control groups (cgroups.kill_groups) and, in a sandbox, with its init (bubblewrap's die-with-parent)."""
    if proc.poll() is not None:
        return False
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True
