"""cellhop's log records in a notebook kernel: a record made by the cell's own thread shows in that
cell; one from a background thread (a container's watch, the event stream, an in-process control
plane's monitor) is about no cell and goes to the kernel's own stderr, never into whichever cell runs.

A real notebook kernel with cellhop loaded; the kernel's stderr is this process's (inherited), read
with capfd.
"""

from __future__ import annotations

import time

from kernel_fixtures import start_cellhop_kernel

CELL = """
import logging, threading, time
log = logging.getLogger("cellhop")
log.warning("cellhop: said by the cell's own thread")
threading.Thread(target=lambda: log.warning("cellhop: said by a background thread"), daemon=True).start()
time.sleep(1.5)
print("cell done")
"""


def test_background_records_go_to_the_kernel_log_not_the_running_cell(capfd):
    with start_cellhop_kernel() as nb:
        ran = nb.ok(CELL, timeout=60)
        assert ran.stdout == "cell done\n", ran
        assert "said by the cell's own thread" in ran.stderr, ran
        assert "background thread" not in ran.stderr + ran.stdout, ran
        later = nb.ok("import time\ntime.sleep(0.5)")
        assert later.stderr == "" and later.stdout == "", later
        deadline = time.monotonic() + 10
        seen = ""
        while "said by a background thread" not in seen and time.monotonic() < deadline:
            seen += capfd.readouterr().err
            time.sleep(0.2)
        assert "cellhop: said by a background thread" in seen, seen[-2000:]
