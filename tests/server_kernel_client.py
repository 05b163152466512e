"""Driving a kernel of the in-process test server (pytest-jupyter) without blocking its event loop."""

from __future__ import annotations

import time


async def run(kc, code: str, timeout: float = 90):
    """(reply content, stdout text, every iopub message of the cell).

    Awaits the kernel's messages without blocking the event loop, which also serves the
    server: the kernel calls back into it (execute_interactive would block the loop).
    """
    msg_id = kc.execute(code)
    deadline = time.monotonic() + timeout
    msgs = []
    while True:
        msg = await kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
        msgs.append(msg)
    while True:
        reply = await kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    stdout = "".join(m["content"]["text"] for m in msgs if m["msg_type"] == "stream"
                     and m["content"]["name"] == "stdout")
    return reply["content"], stdout, msgs
