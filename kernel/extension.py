"""`%load_ext cellhop`: registers the magics and how cellhop's errors are shown."""

from __future__ import annotations

from ..errors import CellhopError, RemoteError
from .kernel_identity import server_kernel_id

_STATE_ATTR = "_cellhop_cells"


def _show_remote_error(shell, etype, value, tb, tb_offset=None):
    """A remote exception: show the container's traceback once, with the cell's own line numbers."""
    stb = value.render()
    shell._showtraceback(etype, value, stb)
    return stb


def _show_cellhop_error(shell, etype, value, tb, tb_offset=None):
    """A cellhop error says what to do; the frames of cellhop's own code would only hide that."""
    stb = [f"\x1b[0;31m{etype.__name__}\x1b[0m: {value}"]
    shell._showtraceback(etype, value, stb)
    return stb


def _dispatch_error(shell, etype, value, tb, tb_offset=None):
    from .remote_debug import after_error, record_last_error

    record_last_error(etype, value, tb)  # for %debug, as IPython records other errors
    if isinstance(value, RemoteError):
        stb = _show_remote_error(shell, etype, value, tb, tb_offset)
        after_error(shell, value)  # %%remote --pdb, %pdb on: the container's post-mortem now
        return stb
    return _show_cellhop_error(shell, etype, value, tb, tb_offset)


def load_ipython_extension(shell) -> None:
    if getattr(shell, _STATE_ATTR, None) is not None:
        return
    from .comm_proxy import CommProxies
    from .control_client import get_control_plane
    from .log_routing import route_cellhop_logs
    from .magics import CellhopMagics
    from .output_relay import ConsoleSink, KernelSink
    from .remote_cells import RemoteCells
    from .remote_debug import register_debug_magic

    kernel = getattr(shell, "kernel", None)
    if kernel is not None and hasattr(kernel, "iopub_socket"):
        route_cellhop_logs()  # background threads' records to the kernel's log, not the running cell
        sink = KernelSink(kernel)
        try:
            from comm import get_comm_manager

            proxies = CommProxies(get_comm_manager())
        except Exception:
            proxies = None
    else:
        kernel, sink, proxies = None, ConsoleSink(), None
    control = get_control_plane(shell.config)
    owner = server_kernel_id() or getattr(kernel, "ident", None) or "ipython"
    cells = RemoteCells(shell, control, sink, proxies, owner=f"kernel {owner[:8]}")
    setattr(shell, _STATE_ATTR, cells)
    shell.register_magics(CellhopMagics(shell, cells, kernel))
    register_debug_magic(shell)  # %debug after a %%remote cell's error debugs it in its container
    if hasattr(shell, "_showtraceback"):
        shell.set_custom_exc((RemoteError, CellhopError), _dispatch_error)


def unload_ipython_extension(shell) -> None:
    cells = getattr(shell, _STATE_ATTR, None)
    if cells is not None:
        cells.shutdown()
        setattr(shell, _STATE_ATTR, None)


def remote_cells(shell):
    """This shell's RemoteCells (loading the extension if needed)."""
    if getattr(shell, _STATE_ATTR, None) is None:
        load_ipython_extension(shell)
    return getattr(shell, _STATE_ATTR)
