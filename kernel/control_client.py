"""The notebook side's view of the control plane.

`ControlPlaneClient` is what the magics and `cellhop.remote` use. The
embedded implementation runs a control plane inside this kernel process
(plain IPython, nbclient, any kernel not started by a cellhop server); its
containers die with this process.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

from ..server_ext.config import Cellhop
from ..server_ext.container import ContainerSpec, ExitStatus


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
    def logs(self, container_id: str, tail: int | None = None) -> str: ...

    def close(self) -> None:
        pass


class EmbeddedControlPlane(ControlPlaneClient):
    """A control plane living in this process."""

    def __init__(self, config: Cellhop):
        from ..server_ext.container_manager import ContainerManager

        self.manager = ContainerManager(config)

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

    def logs(self, container_id: str, tail: int | None = None) -> str:
        return self.manager.logs(container_id, tail=tail)

    def close(self) -> None:
        self.manager.close()


_lock = threading.Lock()
_client: ControlPlaneClient | None = None


def get_control_plane(config=None) -> ControlPlaneClient:
    """This process's control plane client, made on first use."""
    global _client
    with _lock:
        if _client is None:
            _client = EmbeddedControlPlane(Cellhop(config=config) if config is not None else Cellhop())
        return _client


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
