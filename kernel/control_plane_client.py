"""The operations the notebook side needs from a control plane: `ControlPlaneClient`.

The magics, `cellhop.remote`, the widgets and the kernel provisioner use it. Two
implementations behave the same to the user:

- `HttpControlPlane` (http_control_plane.py) talks to the server's control
  plane; kernels started by a cellhop-enabled jupyter_server (or pointed at
  `cellhop serve`) find it through CELLHOP_CONTROL_URL and CELLHOP_CONTROL_TOKEN.
- `EmbeddedControlPlane` (embedded_control_plane.py, the notebook side's one
  way into server_ext/) runs a control plane inside this process (plain
  IPython, nbclient, any kernel started elsewhere); its containers die with
  this process. The server process itself uses one around its own control plane.

Which one this process uses is control_client.py's business (`get_control_plane`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from ..container import ContainerSpec, ExitStatus


class ControlPlaneClient(ABC):
    """The operations the notebook side needs from a control plane."""

    @abstractmethod
    def inventory(self): ...

    @abstractmethod
    def holders(self) -> dict: ...

    @abstractmethod
    def runtime_description(self) -> str: ...

    def standby(self) -> list[dict]:
        """The control plane's standby containers per image: [{image, ready, starting, wanted, preload}]."""
        return []

    def hint_preload(self, modules: list[str]) -> None:
        """Heavy modules this notebook imports: standbys of the default image import them from now on."""

    @abstractmethod
    def start(self, spec: ContainerSpec, on_event=None) -> dict:
        """Queue, start and wait until ready; the container's view with its connection_info."""

    @abstractmethod
    def poll(self, container_id: str) -> ExitStatus | None: ...

    @abstractmethod
    def stop(self, container_id: str, reason: str = "stopped on request") -> ExitStatus: ...

    @abstractmethod
    def touch(self, container_id: str, idle_timeout=...) -> None:
        """Reset the idle timeout; with `idle_timeout`, change it (0: never; None: the default)."""

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

    @abstractmethod
    def usage(self) -> dict:
        """This user's GPU-hours and their cost, today and this month, its budget, cap and latest leases
        (server_ext/usage_view.py has the shape)."""

    # -- endpoints (kernel/endpoint.py): served by a Jupyter server with cellhop only ------------------
    def deploy_endpoint(self, name: str, code: bytes, spec: dict) -> dict:
        """Store and serve `code` (a function's cloudpickle bytes) as endpoint `name`; its view, with `url`."""
        from ..endpoint_errors import NEED_SERVER, EndpointsNeedServer

        raise EndpointsNeedServer(NEED_SERVER)

    def endpoints(self) -> list[dict]:
        return []

    def delete_endpoint(self, name: str) -> dict:
        from ..endpoint_errors import NEED_SERVER, EndpointsNeedServer

        raise EndpointsNeedServer(NEED_SERVER)

    def close(self) -> None:
        pass
