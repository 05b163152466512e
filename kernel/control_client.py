"""The notebook side's view of the control plane: this process's `ControlPlaneClient`, made on first use.

`ControlPlaneClient` (control_plane_client.py) is what the magics, `cellhop.remote`,
the widgets and the kernel provisioner use. Two implementations behave the same to the user:

- `HttpControlPlane` (http_control_plane.py) talks to the server's control
  plane; kernels started by a cellhop-enabled jupyter_server (or pointed at
  `cellhop serve`) find it through CELLHOP_CONTROL_URL and CELLHOP_CONTROL_TOKEN.
- `EmbeddedControlPlane` (embedded_control_plane.py, the notebook side's one
  way into server_ext/) runs a control plane inside this process (plain
  IPython, nbclient, any kernel started elsewhere); its containers die with
  this process. The server process itself uses one around its own control plane.
"""

from __future__ import annotations

import os
import threading

from ..control_address import CONTROL_TOKEN_ENV, CONTROL_URL_ENV
from .control_plane_client import ControlPlaneClient

_lock = threading.Lock()
_client: ControlPlaneClient | None = None


def get_control_plane(config=None) -> ControlPlaneClient:
    """This process's control plane client, made on first use: the server's when this
    process was started by a cellhop server (or told where one is), else an embedded one."""
    global _client
    with _lock:
        if _client is None:
            url = os.environ.get(CONTROL_URL_ENV)
            if url:
                from .http_control_plane import HttpControlPlane

                _client = HttpControlPlane(url, os.environ.get(CONTROL_TOKEN_ENV, ""))
            else:
                from .embedded_control_plane import embedded_control_plane

                _client = embedded_control_plane(config)
        return _client


def set_control_plane(client: ControlPlaneClient | None) -> None:
    """Make `client` this process's control plane client (the server extension does, for its own)."""
    global _client
    with _lock:
        _client = client


def reset_control_plane() -> None:
    """Stop this process's control plane and its containers (for `%unload_ext` and tests)."""
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
