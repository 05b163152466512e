"""The jupyter_server extension hosting cellhop's control plane (`jupyter server extension list`: cellhop).

Enabled on install by etc/jupyter/jupyter_server_config.d/cellhop.json.
Launched on its own (`jupyter cellhop`, `cellhop serve`) it runs headless:
only the control plane API, for kernels on other hosts and other editors.
"""

from __future__ import annotations

import asyncio
import os
import secrets

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join

from ..inventory import SIMULATED_HINT
from .config import Cellhop
from .failed_launches import forget_failed_launches
from .server_log import join_server_log

API_PREFIX = "/cellhop/api/"


def _api_modules():
    """Handler lists of every API module present (images, volumes and secrets add theirs)."""
    from importlib import import_module

    modules = []
    for name in ("containers", "events", "images", "volumes", "secrets", "endpoints", "runs", "exec", "usage"):
        try:
            modules.append(import_module(f"{__package__}.api.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.api.{name}":
                raise
    return modules


class CellhopApp(ExtensionApp):
    """cellhop's control plane inside jupyter_server."""

    name = "cellhop"
    description = "cellhop: run notebook cells and kernels on GPU containers (control plane API)"
    extension_url = "/cellhop/api/gpus"
    load_other_extensions = True
    headless = False  # `cellhop serve` sets it: the API only, for kernels elsewhere
    classes = [Cellhop]

    def initialize_settings(self) -> None:
        from ..kernel.embedded_control_plane import EmbeddedControlPlane
        from .api.base import CONTROL_PLANE_SETTING, KERNEL_TOKEN_SETTING
        from .control_plane import ControlPlane
        from .kernel_launch import install_kernel_hooks

        self._leave_server_log = join_server_log(self.log)  # cellhop's module logs in the server's log
        self.cellhop = Cellhop(parent=self)
        if not self.cellhop.workdir_roots:  # containers may work in the notebooks' folders (workdir_policy.py)
            self.cellhop.workdir_roots = [str(self.serverapp.root_dir)]
        from ..kernel.forward import PROXY_BASE_ENV

        # where containers' ports are proxied (cellhop.forward): the path only, no token (container_env.py)
        os.environ[PROXY_BASE_ENV] = self.serverapp.base_url
        self.control_plane = ControlPlane(self.cellhop)
        token = secrets.token_urlsafe(32)  # good on the cellhop API only; never logged
        self.settings.update({CONTROL_PLANE_SETTING: self.control_plane, KERNEL_TOKEN_SETTING: token})
        self._init_endpoints()
        self._init_runs()
        # Handed to each kernel's provisioner (kernel/provisioner.py) through its kernel manager.
        self.control_client = EmbeddedControlPlane(control_plane=self.control_plane, owned=False)
        # The server is not listening yet (jupyter_server loads extensions before init_httpserver(),
        # which may still move the port: port_retries, --port=0), so each kernel gets the URL of
        # the port it actually listens on, worked out when its kernel manager is made.
        km = self.serverapp.kernel_manager
        install_kernel_hooks(km, self.control_url(), token)
        _url_at_kernel_start(km, self.control_url, self.control_client)
        from .kernelspecs import install_dynamic_kernelspecs

        # "Python 3 · H100" in the launcher for each GPU type present (generated, never written to disk)
        install_dynamic_kernelspecs(self.serverapp.kernel_spec_manager, lambda: self.control_plane.inventory)
        inv = self.control_plane.inventory
        self.log.info("cellhop: control plane ready: %s; runtime %s",
                      inv.describe() if inv.gpus else f"no GPUs ({inv.reason}). {SIMULATED_HINT}",
                      self.control_plane.manager.runtime.describe())
        host = getattr(self.control_plane.manager.scheduler, "host", None)
        if host is not None and inv.gpus:
            (self.log.info if host.shared else self.log.warning)("cellhop: %s", host.note)
            if host.settings.problem:
                self.log.warning("cellhop: the admin's settings: %s", host.settings.problem)

    def _init_endpoints(self) -> None:
        """Deployed endpoints (endpoints.py), stored under the state directory; served from the first request."""
        from .api.endpoint_callers import ENDPOINTS_SETTING
        from pathlib import Path

        from jupyter_core.paths import jupyter_data_dir

        from .endpoints import Endpoints

        state = Path(self.cellhop.state_dir) if self.cellhop.state_dir else Path(jupyter_data_dir()) / "cellhop"
        self.endpoints = Endpoints(self.control_plane, state / "endpoints",
                                   self.cellhop.endpoint_queue_limit)
        self.settings[ENDPOINTS_SETTING] = self.endpoints

    def _init_runs(self) -> None:
        """Server-owned runs and schedules (runs.py, schedules.py), under the state directory."""
        from .runs_setup import make_runs

        make_runs(self)

    def control_url(self) -> str:
        """Where kernels reach this control plane (right once the server listens)."""
        return url_path_join(self.serverapp.connection_url, "/")

    async def _start_jupyter_server_extension(self, serverapp) -> None:
        """The server listens now, on its final port."""
        if getattr(self, "endpoints", None) is not None:
            self.endpoints.started()  # endpoints with min_containers > 0 start theirs
        if getattr(self, "runs", None) is not None:
            self.runs.started()  # stored runs: queued ones run, those that were running are lost
        if self.headless:
            self.log.info("cellhop: headless control plane. Point kernels at it with CELLHOP_CONTROL_URL=%s "
                          "and CELLHOP_CONTROL_TOKEN=<this server's token>", self.control_url())

    def initialize_handlers(self) -> None:
        for module in _api_modules():
            for pattern, handler in module.handlers:
                self.handlers.append((API_PREFIX + pattern, handler))
        from .api import proxy  # a container's ports: cellhop/proxy/<container id>/<port>/

        self.handlers.extend(("/" + proxy.PREFIX + pattern, handler) for pattern, handler in proxy.handlers)
        from .api.endpoint_calls import serving_handlers
        from .api.endpoint_socket import route, upgrade_handlers

        self.upgrade_handlers = list(upgrade_handlers)  # WebSockets to an ASGI endpoint, ahead of HTTP calls
        web_app = getattr(self.serverapp, "web_app", None)
        if web_app is not None:
            for pattern, handler in self.upgrade_handlers:
                route(web_app, pattern, handler)
        self.handlers.extend(serving_handlers)  # {base_url}cellhop/endpoints/<name>/

    async def stop_extension(self) -> None:
        """The server stops: so do its containers (their GPUs are released).

        jupyter_server stops extensions before it shuts its kernels down: the cellhop kernels
        (provisioned on containers) are shut down first, through this control plane, so that none
        of them reaches for a control plane after this one is closed."""
        control_plane = getattr(self, "control_plane", None)
        if getattr(self, "endpoints", None) is not None:
            self.endpoints.close()
        if getattr(self, "runs", None) is not None:
            self.runs.close()
        km = getattr(self.serverapp, "kernel_manager", None)
        if km is not None:
            forgotten = forget_failed_launches(km)  # or jupyter_server's kernel clean-up fails, and it never stops
            if forgotten:
                self.log.info("cellhop: forgetting %d kernel(s) whose launch failed", len(forgotten))
        if control_plane is not None:
            await self._shut_down_cellhop_kernels()
            self.log.info("cellhop: stopping %d container(s)", len(control_plane.manager.list()))
            await asyncio.get_running_loop().run_in_executor(None, control_plane.close)
        leave = getattr(self, "_leave_server_log", None)
        if leave is not None:
            leave()

    async def _shut_down_cellhop_kernels(self) -> None:
        from ..kernel.provisioner import CellhopProvisioner

        km = getattr(self.serverapp, "kernel_manager", None)
        if km is None:
            return
        ids = [kid for kid in list(km.list_kernel_ids())
               if isinstance(getattr(km.get_kernel(kid), "provisioner", None), CellhopProvisioner)]
        if not ids:
            return
        self.log.info("cellhop: shutting down %d GPU kernel(s)", len(ids))
        results = await asyncio.gather(*(km.shutdown_kernel(kid, now=True) for kid in ids), return_exceptions=True)
        for kid, result in zip(ids, results):
            if isinstance(result, BaseException):
                self.log.warning("cellhop: shutting down kernel %s failed: %s", kid, result)


def _url_at_kernel_start(multi_kernel_manager, control_url, control_client) -> None:
    """Give each kernel manager the control URL of the moment it is made (see initialize_settings),
    and this server's control plane for its provisioner (`cellhop_control`)."""
    from ..control_address import CONTROL_URL_ENV

    factory = multi_kernel_manager.kernel_manager_factory

    def create_kernel_manager(*args, **kwargs):
        manager = factory(*args, **kwargs)
        manager.cellhop_env = {**manager.cellhop_env, CONTROL_URL_ENV: control_url()}
        manager.cellhop_control = control_client
        return manager

    create_kernel_manager.original = getattr(factory, "original", factory)
    multi_kernel_manager.kernel_manager_factory = create_kernel_manager


main = launch_new_instance = CellhopApp.launch_instance
