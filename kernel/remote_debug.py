"""Remote debugging: pdb runs in the container, on the remote frames, and prompts in the notebook.

The container kernel is a real ipykernel: while a request allows stdin, its
`input()` (and so pdb's prompt) goes to the notebook over the stdin channel,
and the notebook answers from its own frontend (container_session.py).
This module adds what that leaves out.

Container side (`install_in_container`, called once by the container kernel):
`breakpoint()` and `pdb.set_trace()` stop in IPython's interruptible
debugger (ipykernel had left `breakpoint()` to debugpy, which does nothing
without a debugger client attached), and an interrupt at its prompt ends
the cell instead of letting it run on.

Notebook side:
- `remember(error, cells, spec, session)`: a `%%remote` cell's RemoteError
  remembers the container that holds its frames (the container keeps the
  last traceback as `sys.last_traceback`, as any IPython kernel does).
- `%debug` (`DebugMagics`): right after such an error, runs `%debug` in that
  container with stdin allowed; after any other error, or with arguments,
  it is IPython's own `%debug`.
- `after_error(shell, error)`: shown a RemoteError, enters the post-mortem
  at once when the cell said `%%remote --pdb` or `%pdb` is on.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import threading
from dataclasses import dataclass

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from ..errors import ContainerStopped, RemoteError

_FRAMES_ATTR = "cellhop_frames"


# -- container side ----------------------------------------------------------------------
def install_in_container() -> None:
    """`breakpoint()` and `pdb.set_trace()` in a shipped cell or function stop in the debugger, prompting
    in the notebook; an interrupt at its prompt ends the cell (IPython's own would let the cell go on)."""
    import pdb

    sys.breakpointhook = breakpointhook
    pdb.set_trace = set_trace


def breakpointhook(*args, **kwargs) -> None:
    """The debugger at the caller's frame."""
    set_trace(sys._getframe().f_back)


def set_trace(frame=None) -> None:
    """The debugger at `frame` (the caller's by default)."""
    _debugger_class()().set_trace(frame or sys._getframe().f_back)


# Modules a step never stops in: the kernel's own machinery between one cell statement and the next.
_PLUMBING = ["IPython.*", "ipykernel.*", "cellhop.*", "asyncio.*", "tornado.*", "zmq.*", "traitlets.*",
             "jupyter_client.*", "comm.*", "debugpy.*", "concurrent.*", "logging", "logging.*", "contextlib",
             "threading", "selectors", "queue", "codeop", "ast", "warnings", "inspect", "typing"]


def _cell_statement(frame) -> bool:
    """A frame of one top-level statement of a cell (IPython runs each as a code object of its own)."""
    return frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__main__"


@functools.lru_cache(maxsize=1)
def _debugger_class():
    """IPython's interruptible debugger, made to step as a cell reads: from one statement to the next
    (not into IPython's frames between them), and whose interrupt goes on into the code it stopped."""
    from IPython.core.debugger import InterruptiblePdb, OldPdb  # OldPdb: the standard library's (ipykernel
    # made pdb.Pdb IPython's)

    class RemotePdb(InterruptiblePdb):
        def __init__(self):
            super().__init__(skip=_PLUMBING)
            self.report_skipped = False  # IPython's frames between statements are no news

        def interaction(self, frame, traceback):
            OldPdb.interaction(self, frame, traceback)  # not IPython's, which swallows the interrupt

        def user_call(self, frame, argument_list):
            if not _cell_statement(frame):  # the next statement: stop at its line, not at its call
                super().user_call(frame, argument_list)

        def user_return(self, frame, return_value):
            if not _cell_statement(frame):  # a statement's end: go on to the next one's line
                super().user_return(frame, return_value)

    return RemotePdb


# -- notebook side -----------------------------------------------------------------------
@dataclass
class RemoteFrames:
    """Where the frames of a `%%remote` cell's error live: its container (and the spec that leases it)."""

    cells: object  # the notebook's RemoteCells
    spec: object  # the cell's RunSpec
    container_id: str
    enter_now: bool = False  # `%%remote --pdb`: the post-mortem starts as the error is shown


def remember(error: BaseException, cells, spec, session) -> None:
    """Let a `%%remote` cell's RemoteError name the container its frames live in."""
    if isinstance(error, RemoteError):
        setattr(error, _FRAMES_ATTR, RemoteFrames(cells, spec, session.id))


def frames_of(error) -> RemoteFrames | None:
    return getattr(error, _FRAMES_ATTR, None) if isinstance(error, RemoteError) else None


@contextlib.contextmanager
def post_mortem_on_error(wanted: bool):
    """`%%remote --pdb`: a RemoteError raised inside enters the post-mortem once it is shown."""
    try:
        yield
    except RemoteError as error:
        frames = frames_of(error)
        if wanted and frames is not None:
            frames.enter_now = True
        raise


def input_fn_of(shell):
    """How the notebook answers the container's prompts: its frontend's stdin (None: not allowed)."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None or not hasattr(kernel, "raw_input"):
        return lambda prompt, password: input(prompt)
    if not getattr(kernel, "_allow_stdin", False):
        return None
    return lambda prompt, password: kernel.getpass(prompt) if password else kernel.raw_input(prompt)


def post_mortem(shell, frames: RemoteFrames) -> None:
    """Run `%debug` in the container that raised, its prompts answered in the notebook."""
    from .container_pool import CELLS

    cells = frames.cells
    live = [s for s in cells.pool.sessions(CELLS).values() if s.id == frames.container_id and s.alive()]
    if not live:
        raise ContainerStopped(
            f"the frames of that error lived in container {frames.container_id}, which has stopped since, so "
            "there is nothing to debug; run the cell again (with `%%remote --pdb` to debug it as it fails)")
    input_fn = input_fn_of(shell)
    if input_fn is None:
        raise UsageError("the remote debugger prompts for input, and this frontend does not allow input "
                         "(stdin); run %debug from JupyterLab, Notebook or a console")
    cells.run_cell("%debug", frames.spec, pull=False, input_fn=input_fn, show_status=False)


def after_error(shell, error: BaseException) -> None:
    """Shown a RemoteError: enter the post-mortem now if `--pdb` or `%pdb` asked for it."""
    frames = frames_of(error)
    if frames is None or not (frames.enter_now or getattr(shell, "call_pdb", False)):
        return
    frames.enter_now = False
    try:
        post_mortem(shell, frames)
    except (RemoteError, ContainerStopped, UsageError) as failed:  # the cell's own error is what the cell shows
        print(f"cellhop: the remote debugger ended: {type(failed).__name__}: {failed}", file=sys.stderr)
    except KeyboardInterrupt:
        print("cellhop: the remote debugger was interrupted", file=sys.stderr)


def record_last_error(etype, value, tb) -> None:
    """What IPython records for `%debug` (custom exception handlers skip it): the last error shown."""
    sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb
    if sys.version_info >= (3, 12):
        sys.last_exc = value


@magics_class
class DebugMagics(Magics):
    """`%debug`: the container's post-mortem after a `%%remote` cell's error, else IPython's own."""

    def __init__(self, shell, own_line, own_cell):
        super().__init__(shell)
        self._own_line, self._own_cell = own_line, own_cell  # IPython's %debug and %%debug

    @line_cell_magic
    def debug(self, line: str = "", cell: str | None = None):
        frames = frames_of(getattr(sys, "last_value", None))
        if frames is not None and not line.strip() and cell is None:
            return post_mortem(self.shell, frames)
        if cell is not None and self._own_cell is not None:
            return self._own_cell(line, cell)
        return self._own_line(line)


def register_debug_magic(shell) -> None:
    """Put cellhop's %debug in front of IPython's (which it calls for everything that is not remote)."""
    own_line, own_cell = _loaded(shell, "line"), _loaded(shell, "cell")
    if own_line is None or isinstance(getattr(own_line, "__self__", None), DebugMagics):
        return
    shell.register_magics(DebugMagics(shell, own_line, own_cell))


def _loaded(shell, kind: str):
    """IPython's own %debug of `kind`, imported now: IPython 9 lists its magics as stand-ins that look
    the name up again when called, which, once ours is registered under that name, would find ours."""
    manager = shell.magics_manager
    magic = manager.magics[kind].get("debug")
    if magic is not None and not inspect.ismethod(magic) and hasattr(manager, "find"):
        magic = manager.find(kind, "debug")
    return magic


def notebook_input_fn():
    """How a remote function's call answers its prompts (input(), breakpoint()): from the notebook cell that
    made it, on the kernel's main thread, when that cell allows input; else None (no stdin)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return None if shell is None else input_fn_of(shell)
