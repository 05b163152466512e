"""Whether a notebook kernel that owns something (a container, a session secret) is still alive."""

from __future__ import annotations

import os
import socket


def owner_gone(pid: int | None, host: str | None) -> bool:
    """True when the kernel with `pid` ran on this host (`host`) and has exited. An owner on another host,
    or one without a pid, is never taken for gone: the control plane cannot look."""
    if pid is None or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
