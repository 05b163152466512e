"""cellhop's own log records go into the Jupyter server's log, in its format and at its level.

cellhop's modules log through the `cellhop` logger. In a Jupyter server nothing configures that
logger, so Python's last-resort handler printed its warnings bare (no time, no level, no source)
and dropped everything below a warning: why containers are CPU-only, a GPU kernel's queue
position and launch phases, who deployed an endpoint. While the extension runs, the `cellhop`
logger writes through the server's own handlers (`[I 2026-12-05 10:00:00.000 cellhop] ...`) at
the server's level (`--log-level=DEBUG` shows cellhop's debug records too).

A `cellhop` logger that already has handlers (configured by whoever runs the server) is left
as it is. Records still propagate, so a handler on the root logger sees them as before.
"""

from __future__ import annotations

import logging
from typing import Callable

LOGGER = "cellhop"


def join_server_log(server_log: logging.Logger) -> Callable[[], None]:
    """Send the `cellhop` logger's records through `server_log`'s handlers; returns what undoes it."""
    logger = logging.getLogger(LOGGER)
    if logger.handlers or not server_log.handlers:
        return lambda: None
    added = list(server_log.handlers)
    before = logger.level
    for handler in added:
        logger.addHandler(handler)
    logger.setLevel(server_log.getEffectiveLevel())

    def leave() -> None:
        for handler in added:
            logger.removeHandler(handler)
        logger.setLevel(before)

    return leave
