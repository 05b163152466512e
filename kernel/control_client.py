"""The notebook side's view of the control plane: this process's `ControlPlaneClient`, made on first use.

`ControlPlaneClient` (control_plane_client.py, which names its two implementations) is what the
magics, `cellhop.remote`, the widgets and the kernel provisioner use; the server wraps its own
control plane in one (not owned) and hands it to its kernel provisioners explicitly.

Who uses which: the server hands its control plane to provisioners (through
their kernel manager) and its URL and token to kernels (environment); a
provisioner without a server makes its own (`connect()`). In a notebook
kernel, `get_control_plane()` is the kernel's own client, made from its
environment on first use; `use_control_plane(client)` puts another in its
place for a block of code (tests, scripts). Nothing installs one for good.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading

from ..control_address import CONTROL_TOKEN_ENV, CONTROL_URL_ENV
from .control_plane_client import ControlPlaneClient

def connect(config=None) -> ControlPlaneClient:
    """A new control plane client from this process's environment: the server's (CELLHOP_CONTROL_URL,
    CELLHOP_CONTROL_TOKEN) when set, else an embedded control plane of its own (`config`: a traitlets
    Config with c.Cellhop settings). The caller owns it: close() it when done."""
    url = os.environ.get(CONTROL_URL_ENV)
    if url:
        from .http_control_plane import HttpControlPlane

        return HttpControlPlane(url, os.environ.get(CONTROL_TOKEN_ENV, ""))
    from .embedded_control_plane import embedded_control_plane

    return embedded_control_plane(config)


_lock = threading.Lock()
_client: ControlPlaneClient | None = None  # this process's own client, made on first use
_override: contextvars.ContextVar[ControlPlaneClient | None] = contextvars.ContextVar("cellhop_control",
                                                                                       default=None)


def get_control_plane(config=None) -> ControlPlaneClient:
    """The control plane client of the code running now: the one `use_control_plane` put in place,
    else this process's own, made on first use by `connect(config)`."""
    global _client
    override = _override.get()
    if override is not None:
        return override
    with _lock:
        if _client is None:
            _client = connect(config)
        return _client


@contextlib.contextmanager
def use_control_plane(client: ControlPlaneClient):
    """Within the block (this thread, this task), `get_control_plane()` is `client`; it is not closed
    here. For tests and scripts that bring a control plane of their own."""
    token = _override.set(client)
    try:
        yield client
    finally:
        _override.reset(token)


def set_control_plane(client: ControlPlaneClient | None) -> None:
    """Make `client` this process's own client (scripts and benchmarks; cellhop itself never does)."""
    global _client
    with _lock:
        _client = client


def reset_control_plane() -> None:
    """Close this process's own client (an embedded one stops its containers); the next use makes a new one."""
    global _client
    with _lock:
        client, _client = _client, None
    if client is not None:
        client.close()


def gpus() -> list[dict]:
    """The GPUs cellhop schedules on this host, with who holds each (`cellhop.gpus()`)."""
    client = get_control_plane()
    holders = client.holders()
    return [{**g.to_dict(), "holder": holders.get(g.uuid)} for g in client.inventory().gpus]
