"""A container's log as people see it (GET logs, a start error): only its end, never more than
MAX_LOG_BYTES, secrets masked.

A container writes its log as fast as it likes, so the server never loads a whole
log: it asks the runtime for the last `tail` lines (`runtime.read_log(container,
tail=N)` reads from the end of the file; container_log.py) and cuts what comes
back to MAX_LOG_BYTES at a line boundary. A runtime whose read_log takes no `tail`
is asked for its log and cut here.
"""

from __future__ import annotations

import inspect

from .container_record import Container
from ..masking import mask_text, masked_values

MAX_LOG_BYTES = 1 << 20  # what one answer carries at most
MAX_TAIL = 100_000  # lines


def _takes_tail(read_log) -> bool:
    try:
        return "tail" in inspect.signature(read_log).parameters
    except (TypeError, ValueError):
        return False


def read_log(runtime, container: Container, tail: int | None = None, max_bytes: int = MAX_LOG_BYTES) -> str:
    """The end of `container`'s log: its last `tail` lines (None: as many as MAX_TAIL), at most `max_bytes`,
    masked."""
    tail = MAX_TAIL if tail is None else max(1, min(int(tail), MAX_TAIL))
    try:
        text = runtime.read_log(container, tail=tail) if _takes_tail(runtime.read_log) else runtime.read_log(container)
    except (OSError, AttributeError):
        return ""
    text = "\n".join((text or "").rstrip("\n").splitlines()[-tail:])
    if len(text) > max_bytes:  # cut at a line boundary: no line (nor a secret in it) is shown in part
        text = text[-max_bytes:]
        text = "[... earlier output cut: only the end of the log is shown]\n" + text[text.find("\n") + 1:]
    return mask_text(text, masked_values(container.secret_env.values()))
