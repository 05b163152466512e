"""The jupyter_server extension hosting cellhop's control plane (`jupyter server extension list`: cellhop).

Enabled on install by etc/jupyter/jupyter_server_config.d/cellhop.json.
Launched on its own (`jupyter cellhop`, `cellhop serve`) it runs headless:
only the control plane API, for kernels on other hosts and other editors.
"""

from __future__ import annotations

import asyncio
import secrets

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join

from .config import Cellhop

API_PREFIX = "/cellhop/api/"


def _api_modules():
    """Handler lists of every API module present (images, volumes and secrets add theirs)."""
    from importlib import import_module

    modules = []
    for name in ("containers", "events", "images", "volumes", "secrets"):
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
        from ..kernel.control_client import EmbeddedControlPlane, set_control_plane
        from .api.base import CONTROL_PLANE_SETTING, KERNEL_TOKEN_SETTING
        from .control_plane import ControlPlane
        from .kernel_launch import install_kernel_hooks

        self.cellhop = Cellhop(parent=self)
        self.control_plane = ControlPlane(self.cellhop)
        token = secrets.token_urlsafe(32)  # good on the cellhop API only; never logged
        self.settings.update({CONTROL_PLANE_SETTING: self.control_plane, KERNEL_TOKEN_SETTING: token})
        set_control_plane(EmbeddedControlPlane(control_plane=self.control_plane, owned=False))
        control_url = url_path_join(self.serverapp.connection_url, "/")
        install_kernel_hooks(self.serverapp.kernel_manager, control_url, token)
        from ..kernel.kernelspecs import install_dynamic_kernelspecs

        # "Python 3 · H100" in the launcher for each GPU type present (generated, never written to disk)
        install_dynamic_kernelspecs(self.serverapp.kernel_spec_manager, lambda: self.control_plane.inventory)
        inv = self.control_plane.inventory
        self.log.info("cellhop: control plane ready: %s; runtime %s",
                      inv.describe() if inv.gpus else f"no GPUs ({inv.reason})",
                      self.control_plane.manager.runtime.describe())
        if self.headless:
            self.log.info("cellhop: headless control plane. Point kernels at it with CELLHOP_CONTROL_URL=%s "
                          "and CELLHOP_CONTROL_TOKEN=<this server's token>", self.serverapp.connection_url)

    def initialize_handlers(self) -> None:
        for module in _api_modules():
            for pattern, handler in module.handlers:
                self.handlers.append((API_PREFIX + pattern, handler))

    async def stop_extension(self) -> None:
        """The server stops: so do its containers (their GPUs are released)."""
        control_plane = getattr(self, "control_plane", None)
        if control_plane is not None:
            self.log.info("cellhop: stopping %d container(s)", len(control_plane.manager.list()))
            await asyncio.get_running_loop().run_in_executor(None, control_plane.close)
            from ..kernel.control_client import set_control_plane

            set_control_plane(None)


main = launch_new_instance = CellhopApp.launch_instance
