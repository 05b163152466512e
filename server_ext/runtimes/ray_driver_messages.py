"""Ray's messages to its driver go to the process's own log, never into a notebook cell.

The process that calls `ray.init` (the Jupyter server, or a notebook kernel that runs its own
control plane) becomes a Ray driver, and Ray starts a thread there that prints the cluster's
error messages ("the node ... has been marked dead ...") to `sys.stdout`. In a kernel,
`sys.stdout` is the output of whichever cell runs at that moment: a cluster event would show in
a user's cell as if the cell had printed it. What concerns a cell, cellhop reports itself (a lost
node ends its container with ContainerDied naming the node); the cluster's messages belong in
the process's log (`sys.__stderr__`: the server's log, where a kernel's own stderr also goes).

Ray has no setting for this thread's output; its listener looks up the module's
`print_to_stdstream` when it prints, so that one name is replaced, and only in a driver cellhop
connected itself (`log_to_driver=False`: the name then serves that listener alone). A Ray
without the name is left as it is.
"""

from __future__ import annotations

import sys

PREFIX = "[cellhop] Ray cluster"


def print_to_process_log(data: dict, ignore_prefix: bool = False) -> None:
    """What Ray's listener would have printed to the cell, written to this process's stderr."""
    stream = sys.__stderr__
    if stream is None:
        return
    source = data.get("pid") or "driver"
    for line in data.get("lines") or ():
        stream.write(f"{PREFIX} ({source}): {line}\n")
    stream.flush()


def keep_driver_messages_out_of_cells() -> bool:
    """Send this driver's Ray error messages to the process log; whether the hook is in place."""
    try:
        from ray._private import worker
    except ImportError:
        return False
    if not callable(getattr(worker, "print_to_stdstream", None)):
        return False
    worker.print_to_stdstream = print_to_process_log
    return True
