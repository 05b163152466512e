"""Values of `%%remote --async` runs land in the notebook when the run finishes, not on `wait()`.

The run finishes on a thread of its own; the notebook's namespace is only
ever changed from the kernel's main thread, and never while a cell's code
runs there:

- the run's thread queues its values here and asks the kernel's event loop
  (`io_loop.add_callback`, thread-safe) to land them; the loop runs that
  callback between the messages it handles, so not while a (synchronous)
  cell runs;
- a cell that is running (an `await`ing cell lets the loop run callbacks)
  holds them back: `pre_run_cell` marks a cell as running, and its
  `post_run_cell` lands what came meanwhile, after the cell's own code;
- `pre_run_cell` first lands what is still queued, so the next cell sees it;
- `wait()` lands them at once, in the thread that called it.

Each landing says so: the async cell's status line gets "x, y arrived in the
notebook", and a cell that is running when they land gets a quiet line
"x, y arrived from the async run of cell [5]".
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from .status_line import StatusLine


@dataclass(eq=False)
class Arrival:
    """The values of one finished async run, waiting for the main thread."""

    cell: int | None  # the notebook cell that started it (its execution count)
    status: StatusLine  # the async cell's status line
    parent: dict  # the async cell's request
    values: dict = field(default_factory=dict)
    landed: bool = False


class Landing:
    """Lands finished async runs' values in one notebook (see the module docstring)."""

    def __init__(self, shell, sink, kernel=None):
        self.shell = shell
        self.sink = sink
        self._loop = getattr(kernel, "io_loop", None)
        self._lock = threading.Lock()
        self._pending: list[Arrival] = []
        self._running = False  # a cell's code runs on the main thread
        shell.events.register("pre_run_cell", self._pre_run_cell)
        shell.events.register("post_run_cell", self._post_run_cell)

    def close(self) -> None:
        for name, hook in (("pre_run_cell", self._pre_run_cell), ("post_run_cell", self._post_run_cell)):
            try:
                self.shell.events.unregister(name, hook)
            except ValueError:
                pass

    # -- from the run's thread ------------------------------------------------------
    def arrived(self, arrival: Arrival, values: dict) -> None:
        """The run finished with `values`: land them as soon as the main thread is between cells."""
        arrival.values = values
        with self._lock:
            self._pending.append(arrival)
        if self._loop is not None:
            try:
                self._loop.add_callback(self._between_cells)
            except RuntimeError:  # the loop is closed (kernel shutting down): the next cell lands them
                pass

    # -- on the main thread ---------------------------------------------------------
    def land(self, arrival: Arrival) -> None:
        """Land `arrival` now if it has not landed (`wait()`: the caller asked for it)."""
        with self._lock:
            if arrival not in self._pending:
                return
            self._pending.remove(arrival)
        self._land(arrival, in_cell=self._running)

    def _between_cells(self) -> None:
        if not self._running:
            self._land_pending(in_cell=False)

    def _pre_run_cell(self, *args) -> None:
        self._land_pending(in_cell=True)  # the cell about to run sees them, and says so
        self._running = True

    def _post_run_cell(self, *args) -> None:
        self._running = False
        self._land_pending(in_cell=True)  # after the cell's own code, in its output

    def _land_pending(self, in_cell: bool) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for arrival in pending:
            self._land(arrival, in_cell)

    def _land(self, arrival: Arrival, in_cell: bool) -> None:
        if arrival.landed:
            return
        arrival.landed = True
        self.shell.user_ns.update(arrival.values)
        names = ", ".join(sorted(arrival.values))
        status = arrival.status
        if names:
            status.show(f"{status.text} · {names} arrived in the notebook {time.strftime('at %H:%M:%S')}",
                        status.state)
        if not (names and in_cell):
            return
        parent = self.sink.current_parent()
        if parent and parent.get("header", {}).get("msg_id") == arrival.parent.get("header", {}).get("msg_id"):
            return  # the async cell itself (it waited): its status line says it
        cell = f" of cell [{arrival.cell}]" if arrival.cell is not None else ""
        try:
            StatusLine(self.sink, parent).show(f"{names} arrived from the async run{cell}", "note")
        except Exception:  # telling is a courtesy; the values are there
            pass
