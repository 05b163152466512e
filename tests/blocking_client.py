"""Reading one request's outcome from a jupyter_client BlockingKernelClient: its stdout, then its reply."""

from __future__ import annotations


def stdout_until_idle(kc, msg_id: str, timeout: float) -> str:
    """The request's stdout, read from IOPub until the kernel is idle after it."""
    out = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(out)
