"""A GPU kernel a notebook switches to does not wait behind that notebook's own idle containers.

JupyterLab changes a notebook's kernel by starting the new kernel first and
shutting the old one down after (jupyter_server's session PATCH). When the
old kernel's `%%remote` cells or `cellhop.remote` functions hold the GPUs the
new GPU kernel needs, the new kernel would queue behind its own notebook until
its launch timed out. So, before a provisioned kernel queues, the idle
containers of the kernel its notebook still has yield, least recently used
first and only as many as it takes (a container at work is never stopped);
the same rule the container pool applies inside one kernel (container_pool.py).
"""

from __future__ import annotations

import os
from collections import Counter

from ..container import MIN_IDLE

REASON = "its notebook's new GPU kernel needed its GPU (the notebook does not wait for itself)"


def server_app_of(provisioner):
    """The jupyter_server ServerApp above a provisioner (kernel manager, multi-kernel manager, app), or None."""
    obj = provisioner
    for _ in range(4):
        obj = getattr(obj, "parent", None)
        if obj is None:
            return None
        if hasattr(obj, "session_manager"):
            return obj
    return None


async def previous_kernels(provisioner, env: dict) -> list[str]:
    """Ids of the kernels the notebook this kernel starts for has now (its session's, before a change)."""
    notebook = (env or {}).get("JPY_SESSION_NAME")
    app = server_app_of(provisioner)
    if not notebook or app is None:
        return []
    sm = app.session_manager
    found = []
    for session in await sm.list_sessions():
        path, name = session.get("path") or "", session.get("name") or ""
        forms = {path}
        try:
            forms.add(os.path.join(sm.kernel_manager.cwd_for_path(path), name))
        except Exception:
            pass
        kernel = session.get("kernel") or {}
        if notebook in forms and kernel.get("id"):
            found.append(kernel["id"])
    return found


def make_room(client, gpu, kernel_ids: list[str], log=None) -> list[str]:
    """Stop idle containers of `kernel_ids` holding GPUs `gpu` (a GpuRequest) could use until the request
    would be served at once; the ids stopped."""
    if gpu.cpu_only or not kernel_ids:
        return []
    owners = {f"kernel {k[:8]}" for k in kernel_ids}
    inv = client.inventory()
    wanted = gpu.types(inv)
    holders = client.holders()
    free = Counter({t: 0 for t in wanted})
    for g in inv.gpus:
        if g.type in wanted and not holders.get(g.uuid):
            free[g.type] += 1

    def enough() -> bool:
        return any(free[c.type] >= c.count if c.type in free else c.type == "any" and sum(free.values()) >= c.count
                   for c in gpu.choices)

    if enough():
        return []
    idle = [c for c in client.containers() if c.get("owner") in owners and c.get("phase") == "ready"
            and (c.get("idle_seconds") or 0) >= MIN_IDLE and any(g["type"] in wanted for g in c.get("gpus") or [])]
    idle.sort(key=lambda c: -c["idle_seconds"])  # least recently used first
    stopped = []
    for container in idle:
        client.stop(container["id"], reason=REASON)
        stopped.append(container["id"])
        if log is not None:
            log.info("cellhop: stopped container %s of this notebook's previous kernel (%s, idle %.0f s) for "
                     "its new GPU kernel", container["id"], container.get("owner"), container["idle_seconds"])
        for g in container.get("gpus") or []:
            if g["type"] in wanted:
                free[g["type"]] += 1
        if enough():
            break
    return stopped
