"""Where cellhop's log records go in a notebook kernel: a cell's own, or the kernel's log.

cellhop logs through the `cellhop` logger. A kernel rarely configures logging, so Python's
last-resort handler writes warnings to `sys.stderr`, which in a kernel is the output of
whichever cell runs at that moment. For a record made while a cell runs, on the thread that
runs it, that is right (it is about what the cell asked: loading cellhop, a %%remote cell).
A record from one of cellhop's background threads (watching a container, the event stream,
an in-process control plane's monitor) is about no cell, and would show in an unrelated one as
if it had printed it; those go to the kernel's own stderr (`sys.__stderr__`), which the Jupyter
server shows in its log.

Only where nothing is configured: a `cellhop` or root logger with handlers of its own keeps
them, and nothing is added.
"""

from __future__ import annotations

import logging
import sys
import threading

LOGGER = "cellhop"


class CellOrKernelLog(logging.Handler):
    """Warnings and worse: the running cell's stderr from the main thread, the kernel's stderr from others."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        on_main = record.thread == threading.main_thread().ident
        stream = sys.stderr if on_main else sys.__stderr__
        if stream is None:
            return
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def route_cellhop_logs() -> bool:
    """Put `CellOrKernelLog` on the `cellhop` logger where logging is not configured; whether it is there."""
    logger = logging.getLogger(LOGGER)
    if any(isinstance(h, CellOrKernelLog) for h in logger.handlers):
        return True
    if logger.handlers or logging.getLogger().handlers:
        return False
    logger.addHandler(CellOrKernelLog())
    return True
