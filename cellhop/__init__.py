"""cellhop: run notebook cells on GPU containers without leaving Jupyter.

`%load_ext cellhop`, then `%gpu H100` and `%%remote` on a cell.
The public Python API is small: `remote`, `cls` (with `enter`, `exit`), `gpus()`, `Image`, `Volume`, `Secret`.
The vocabulary both sides share (specs, errors, the wire format) lives in this
package's own modules; docs/architecture.md maps the rest.
Importing cellhop touches neither NVML, the network nor the disk.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "gpus", "remote", "cls", "enter", "exit", "endpoint", "deploy", "batched", "Image", "Volume",
           "asgi", "Secret", "forward", "Container", "Sandbox", "Run", "runs", "Function", "Retries", "schedule", "schedules", "control_plane", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython):  # `%load_ext cellhop`
    from .kernel.extension import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython):
    from .kernel.extension import unload_ipython_extension as unload

    unload(ipython)


def control_plane():
    """This process's control plane client: the cellhop server's when this kernel was started by one (or
    CELLHOP_CONTROL_URL says where one is), else one embedded in this process."""
    from .kernel.control_client import get_control_plane

    return get_control_plane()


def _jupyter_server_extension_points():  # jupyter_server finds the control plane here
    from .server_ext.app import CellhopApp

    return [{"module": "cellhop.server_ext.app", "app": CellhopApp}]


def __getattr__(name: str):
    if name == "remote":
        from .kernel.remote_function import remote

        return remote
    if name in ("cls", "enter", "exit"):
        from .kernel import remote_class

        return getattr(remote_class, name)
    if name in ("endpoint", "deploy", "batched", "asgi"):
        from .kernel import endpoint

        return getattr(endpoint, name)
    if name in ("Run", "runs", "Function", "Retries", "schedule", "schedules"):
        from .kernel import runs

        return getattr(runs, name)
    if name in ("Container", "Sandbox"):
        from .kernel import container_handle

        return getattr(container_handle, name)
    if name == "forward":
        from .kernel.forward import forward

        return forward
    if name == "gpus":
        from .kernel.control_client import gpus

        return gpus
    if name == "Image":
        from .image_spec import Image

        return Image
    if name == "Volume":
        from .kernel.volume import Volume

        return Volume
    if name == "Secret":
        from .kernel.secret import Secret

        return Secret
    raise AttributeError(f"module 'cellhop' has no attribute {name!r}")
