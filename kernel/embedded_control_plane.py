"""A control plane inside this process, behind the notebook side's client interface.

The one module of the notebook side that imports the control plane (server_ext/): plain
IPython, nbclient or a kernel started elsewhere gets its containers from a control plane of
its own, which dies with the process; the server wraps its own control plane in one
(`owned=False`) for the kernels it provisions.
"""

from __future__ import annotations

from ..container import ContainerSpec, ExitStatus
from ..server_ext.config import Cellhop
from ..server_ext.control_plane import ControlPlane
from .control_plane_client import ControlPlaneClient


def embedded_control_plane(config=None) -> EmbeddedControlPlane:
    """A new control plane in this process, configured by `config` (a traitlets Config: `c.Cellhop.*`,
    `c.LocalRuntime.*`, ...; None: the defaults)."""
    return EmbeddedControlPlane(Cellhop(config=config) if config is not None else Cellhop())


class EmbeddedControlPlane(ControlPlaneClient):
    """A control plane living in this process."""

    def __init__(self, config: Cellhop | None = None, control_plane=None, owned: bool = True):
        self.control_plane = control_plane or ControlPlane(config)
        self.manager = self.control_plane.manager
        self._owned = owned  # False when the server owns it (and closes it)

    def inventory(self):
        return self.manager.inventory

    def holders(self) -> dict:
        return self.manager.scheduler.holders()

    def runtime_description(self) -> str:
        return self.manager.runtime.describe()

    def exec_in(self, container_id: str, body: dict, on_line) -> dict:
        """Run a command inside a container of this control plane (server_ext/container_exec.py), as the
        server's exec route does; `on_line` sees each piece of output. Returns the last line (exit code)."""
        import asyncio

        from ..own_thread import on_fresh_thread
        from ..server_ext.container_exec import Exec, plan

        manager = self.manager
        run = Exec(plan(manager.runtime, manager.get(container_id)), body["argv"], body.get("stdin"),
                   body.get("timeout"))
        # a loop of its own on a thread of its own: the caller may be inside a running loop (a cell)
        return on_fresh_thread(lambda: asyncio.run(run.run(on_line)), name="cellhop-exec")

    def standby(self) -> list[dict]:
        return self.manager.standby.view() if self.manager.standby is not None else []

    def hint_preload(self, modules: list[str]) -> None:
        if self.manager.standby is not None:
            self.manager.standby.hint_preload(modules)

    def start(self, spec: ContainerSpec, on_event=None) -> dict:
        container = self.manager.start(spec, on_event=on_event)
        return {**container.to_dict(), "connection_info": container.connection_info}

    def poll(self, container_id: str) -> ExitStatus | None:
        return self.manager.poll(container_id)

    def stop(self, container_id: str, reason: str = "stopped on request") -> ExitStatus:
        return self.manager.stop(container_id, reason=reason)

    def touch(self, container_id: str, idle_timeout=...) -> None:
        self.manager.touch(container_id, idle_timeout)

    def interrupt(self, container_id: str) -> None:
        self.manager.interrupt(container_id)

    def restart(self, container_id: str, on_event=None) -> dict:
        container = self.manager.restart(container_id, on_event=on_event)
        return {**container.to_dict(), "connection_info": container.connection_info}

    def logs(self, container_id: str, tail: int | None = None) -> str:
        return self.manager.logs(container_id, tail=tail)

    def containers(self) -> list[dict]:
        return self.control_plane.containers_view()

    def usage(self) -> dict:
        from ..server_ext.usage_view import usage_view

        return usage_view(self.control_plane)

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
