"""Driving a kernel of the in-process test server (pytest-jupyter) without blocking its event loop."""

from __future__ import annotations

import time

# A cell that defines call(method, path, body=None): one REST call on the cellhop API with the kernel's own
# token (CELLHOP_CONTROL_TOKEN); prints the status and the answer (or the error's message). Append calls.
KERNEL_REST_CALL = '''
import json, os, urllib.request, urllib.error
def call(method, path, body=None):
    request = urllib.request.Request(os.environ["CELLHOP_CONTROL_URL"] + "cellhop/api/" + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": "token " + os.environ["CELLHOP_CONTROL_TOKEN"]})
    try:
        with urllib.request.urlopen(request) as r:
            print(r.status, json.dumps(json.loads(r.read())))
    except urllib.error.HTTPError as e:
        print(e.code, json.loads(e.read()).get("message"))
'''


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
