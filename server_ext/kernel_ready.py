"""Waiting for a container's kernel to be ready: it answers, and the control plane hears its status."""

from __future__ import annotations

import time

from ..errors import ContainerFailedToStart, ContainerStartError
from ..wire import KernelConnection
from .container_record import Container
from .kernel_activity import KernelActivity
from .log_view import read_log


def wait_until_ready(container: Container, runtime, activity_watches: KernelActivity, start_timeout: float) -> None:
    """Wait until the container's kernel answers kernel_info and its status messages reach the control plane
    (its activity watch is then adopted); ContainerStartError (or ContainerFailedToStart, the spec's fault)
    when it dies or takes longer than `start_timeout`."""
    deadline = time.monotonic() + start_timeout
    conn = KernelConnection(container.connection_info, channels=("shell",))
    activity = activity_watches.watch(container.id, container.connection_info)
    replied = False
    try:
        msg_id = conn.send("shell", "kernel_info_request", {})
        resend = time.monotonic() + 1.0
        while True:
            reply = conn.recv("shell", timeout=0.02)
            if reply is not None and reply.parent_id == msg_id and not replied:
                replied = True
                resend = min(resend, time.monotonic() + 0.1)
            if replied and activity.confirmed(timeout=0.02):  # its status messages reach us too
                activity_watches.adopt(activity)
                activity = None
                return
            status = runtime.poll(container)
            if status is not None:
                tail = read_log(runtime, container, tail=15, max_bytes=8192).rstrip()
                spec = container.spec
                # what the spec chose (its interpreter, image, variables) may not run: the caller's to fix
                kind = ContainerFailedToStart if spec.python or spec.image or spec.env else ContainerStartError
                raise kind(
                    f"container {container.id} died while starting: {status.describe()}"
                    + (". Check the spec's interpreter ('python'), image and environment; the log's end "
                       "says why" if kind is ContainerFailedToStart else "")
                    + (f"\n--- container log ---\n{tail}" if tail else ""))
            now = time.monotonic()
            if now > deadline:
                raise ContainerStartError(
                    f"container {container.id} was not ready within {start_timeout:.0f} s "
                    "(phase: starting; the kernel did not answer kernel_info_request). "
                    "Raise c.Cellhop.start_timeout if the host is slow.")
            if now > resend:  # once it answered, asking again makes it publish its status again
                msg_id = conn.send("shell", "kernel_info_request", {})
                resend = now + (0.2 if replied else 1.0)
                replied = False
    finally:
        conn.close()
        if activity is not None:
            activity.close()
