"""Running setup code in a container's kernel from the control plane: a silent execute_request.

Used where the control plane itself must act inside a kernel it started: a
standby container's preloads, and a claimed standby's GPU variables
(standby_pool.py). Silent: no history, no execute_input, and nothing for a
notebook to relay; what it prints goes to the container's log.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import ContainerStartError
from ..wire import KernelConnection


def run_silently(connection_info: dict, code: str, timeout: float, ended: Callable[[], bool],
                 what: str = "the container") -> None:
    """Run `code` in the kernel at `connection_info`; raises ContainerStartError when it does not answer
    ok within `timeout` seconds, or when `ended()` says the kernel's process is gone."""
    conn = KernelConnection(connection_info, channels=("shell",))
    try:
        msg_id = conn.send("shell", "execute_request", {
            "code": code, "silent": True, "store_history": False, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": False})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = conn.recv("shell", timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            if reply is not None and reply.parent_id == msg_id:
                if reply.content.get("status") != "ok":
                    raise ContainerStartError(f"{what} refused its setup code: {reply.content.get('ename', '')} "
                                              f"{reply.content.get('evalue', '')}")
                return
            if ended():
                raise ContainerStartError(f"{what} ended during its setup")
        raise ContainerStartError(f"{what} did not finish its setup within {timeout:.0f} s")
    finally:
        conn.close()
