"""The notebook side's view of the control plane.

`ControlPlaneClient` is what the magics, `cellhop.remote`, the widgets and
the kernel provisioner use. Two implementations behave the same to the user:

- `HttpControlPlane` (http_control_plane.py) talks to the server's control
  plane; kernels started by a cellhop-enabled jupyter_server (or pointed at
  `cellhop serve`) find it through CELLHOP_CONTROL_URL and CELLHOP_CONTROL_TOKEN.
- `EmbeddedControlPlane` runs a control plane inside this process (plain
  IPython, nbclient, any kernel started elsewhere); its containers die with
  this process. The server wraps its own control plane in one (not owned)
  and hands it to its kernel provisioners explicitly.

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
from abc import ABC, abstractmethod

from ..server_ext.config import Cellhop
from ..server_ext.container import ContainerSpec, ExitStatus

CONTROL_URL_ENV = "CELLHOP_CONTROL_URL"
CONTROL_TOKEN_ENV = "CELLHOP_CONTROL_TOKEN"


class ControlPlaneClient(ABC):
    """The operations the notebook side needs from a control plane."""

    @abstractmethod
    def inventory(self): ...

    @abstractmethod
    def holders(self) -> dict: ...

    @abstractmethod
    def runtime_description(self) -> str: ...

    @abstractmethod
    def start(self, spec: ContainerSpec, on_event=None) -> dict:
        """Queue, start and wait until ready; the container's view with its connection_info."""

    @abstractmethod
    def poll(self, container_id: str) -> ExitStatus | None: ...

    @abstractmethod
    def stop(self, container_id: str, reason: str = "stopped on request") -> ExitStatus: ...

    @abstractmethod
    def touch(self, container_id: str) -> None: ...

    @abstractmethod
    def interrupt(self, container_id: str) -> None:
        """SIGINT to the container's kernel (the kernel provisioner's interrupt)."""

    @abstractmethod
    def restart(self, container_id: str, on_event=None) -> dict:
        """A fresh kernel process in the same container, its GPUs kept; the container's view
        with its connection_info (the same ports and key as before)."""

    @abstractmethod
    def logs(self, container_id: str, tail: int | None = None) -> str: ...

    @abstractmethod
    def containers(self) -> list[dict]:
        """Every container this control plane knows, as `Container.to_dict()`."""

    @abstractmethod
    def subscribe(self, listener, metrics_interval: float | None = None, paused: bool = False):
        """Events as on the API's event stream (hello, container, metrics, ...), delivered on a
        background thread. Returns a subscription with configure(interval), pause(), resume(), close()."""

    @abstractmethod
    def storage(self):
        """This control plane's volumes and secrets, as a StorageClient (storage_client.py)."""

    @abstractmethod
    def build_image(self, image_spec_json: dict, on_event=None, force: bool = False) -> dict:
        """Build a `cellhop.Image` (its `to_json()`), or find it cached; `on_event` sees its progress
        events. Returns {"key", "name", "python_version", "packages", "modules", "layers", "built", ...}."""

    @abstractmethod
    def images(self) -> list[dict]:
        """Every built image: key, name, steps, size, created, last_used, in_use."""

    @abstractmethod
    def image_log(self, key: str) -> str:
        """The build log of an image (key or name), step by step."""

    @abstractmethod
    def delete_image(self, key: str) -> dict:
        """Forget an image and remove the layers no other image uses."""

    @abstractmethod
    def prune_images(self, unused_for: float | None = None) -> dict:
        """Remove layers no image uses (and images unused for `unused_for` seconds)."""

    def close(self) -> None:
        pass


class EmbeddedControlPlane(ControlPlaneClient):
    """A control plane living in this process."""

    def __init__(self, config: Cellhop | None = None, control_plane=None, owned: bool = True):
        from ..server_ext.control_plane import ControlPlane

        self.control_plane = control_plane or ControlPlane(config)
        self.manager = self.control_plane.manager
        self._owned = owned  # False when the server owns it (and closes it)

    def inventory(self):
        return self.manager.inventory

    def holders(self) -> dict:
        return self.manager.scheduler.holders()

    def runtime_description(self) -> str:
        return self.manager.runtime.describe()

    def start(self, spec: ContainerSpec, on_event=None) -> dict:
        container = self.manager.start(spec, on_event=on_event)
        return {**container.to_dict(), "connection_info": container.connection_info}

    def poll(self, container_id: str) -> ExitStatus | None:
        return self.manager.poll(container_id)

    def stop(self, container_id: str, reason: str = "stopped on request") -> ExitStatus:
        return self.manager.stop(container_id, reason=reason)

    def touch(self, container_id: str) -> None:
        self.manager.touch(container_id)

    def interrupt(self, container_id: str) -> None:
        self.manager.interrupt(container_id)

    def restart(self, container_id: str, on_event=None) -> dict:
        container = self.manager.restart(container_id, on_event=on_event)
        return {**container.to_dict(), "connection_info": container.connection_info}

    def logs(self, container_id: str, tail: int | None = None) -> str:
        return self.manager.logs(container_id, tail=tail)

    def containers(self) -> list[dict]:
        return self.control_plane.containers_view()

    def subscribe(self, listener, metrics_interval: float | None = None, paused: bool = False):
        return self.control_plane.subscribe(listener, metrics_interval, paused)

    def storage(self):
        from .storage_client import LocalStorageClient

        return LocalStorageClient(self.control_plane.volumes, self.control_plane.secrets)

    def build_image(self, image_spec_json: dict, on_event=None, force: bool = False) -> dict:
        return self.control_plane.images.build(image_spec_json, on_event=on_event, force=force)

    def images(self) -> list[dict]:
        return self.control_plane.images.list()

    def image_log(self, key: str) -> str:
        return self.control_plane.images.log(key)

    def delete_image(self, key: str) -> dict:
        return self.control_plane.images.delete(key)

    def prune_images(self, unused_for: float | None = None) -> dict:
        return self.control_plane.images.prune(unused_for)

    def close(self) -> None:
        if self._owned:
            self.control_plane.close()


def connect(config=None) -> ControlPlaneClient:
    """A new control plane client from this process's environment: the server's (CELLHOP_CONTROL_URL,
    CELLHOP_CONTROL_TOKEN) when set, else an embedded control plane of its own (`config`: a traitlets
    Config with c.Cellhop settings). The caller owns it: close() it when done."""
    url = os.environ.get(CONTROL_URL_ENV)
    if url:
        from .http_control_plane import HttpControlPlane

        return HttpControlPlane(url, os.environ.get(CONTROL_TOKEN_ENV, ""))
    return EmbeddedControlPlane(Cellhop(config=config) if config is not None else Cellhop())


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
