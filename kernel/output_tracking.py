"""What a container kernel published for each shipped request, so the notebook need not wait for `idle`.

Inside the container (container_kernel.py). A shipped cell or call replies
with `outputs`: how many IOPub messages it published that the notebook
relays (stream, display, error, comm ...). The notebook waits until its
relay has seen that many for the request, which for a call that printed
nothing is no wait at all; before, it waited for the IOPub `idle` after
every reply (a second round trip through another socket and thread).

The count is exact once the request's streams are flushed: every message
is counted when the kernel's Session sends it, and a flush waits for the
IOPub thread to send what was written. A flush with nothing written since
the last one (and no flush under way) returns at once: ipykernel flushes
stdout and stderr after every request, each a round trip to its IOPub
thread (two thirds of a trivial call's time in the container, measured).
"""

from __future__ import annotations

import sys
import threading

from jupyter_client.session import extract_header

# the IOPub message types the notebook relays (output_relay.RELAYED): the ones counted
RELAYED = frozenset({"stream", "display_data", "update_display_data", "execute_result", "error", "clear_output",
                     "comm_open", "comm_msg", "comm_close"})
MAX_TRACKED = 256  # requests counted at once (a runaway of unfinished ones cannot grow the table)


class OutputTracker:
    """Counts relayed IOPub messages per request (msg_id) and makes clean flushes free."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._streams: list = []

    def install(self, session, streams=None) -> None:
        """Count what `session` sends; lean flushes for `streams` (default: sys.stdout, sys.stderr)."""
        send = session.send

        def counting_send(stream, msg_or_type, content=None, parent=None, *args, **kwargs):
            self._count(msg_or_type, parent)
            return send(stream, msg_or_type, content, parent, *args, **kwargs)

        session.send = counting_send
        for stream in streams if streams is not None else (sys.stdout, sys.stderr):
            if hasattr(stream, "pub_thread") and hasattr(stream, "flush"):  # an ipykernel OutStream
                _LeanFlush(stream)

    def _count(self, msg_or_type, parent) -> None:
        try:
            if isinstance(msg_or_type, dict):
                msg_type = msg_or_type["header"]["msg_type"]
                parent_id = (msg_or_type.get("parent_header") or {}).get("msg_id")
            else:
                msg_type = msg_or_type
                parent_id = extract_header(parent).get("msg_id") if parent else None
        except (KeyError, TypeError, AttributeError):
            return
        if msg_type in RELAYED and parent_id in self._counts:
            with self._lock:
                if parent_id in self._counts:
                    self._counts[parent_id] += 1

    def begin(self, msg_id: str) -> None:
        with self._lock:
            while len(self._counts) >= MAX_TRACKED:
                self._counts.pop(next(iter(self._counts)))
            self._counts[msg_id] = 0

    def end(self, msg_id: str) -> int | None:
        """Flush stdout and stderr (free when clean), then how many relayed messages `msg_id` published
        (None when it was not tracked: the notebook then waits for idle, as before)."""
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        with self._lock:
            return self._counts.pop(msg_id, None)


class _LeanFlush:
    """An OutStream whose flush returns at once when nothing was written since the last flush began
    (and none is under way, and ipykernel has none pending); otherwise it is ipykernel's own flush."""

    def __init__(self, stream):
        self.stream = stream
        self.dirty = True
        self.flushing = 0
        self._write, self._flush = stream.write, stream.flush
        self._lock = threading.Lock()
        stream.write = self.write
        stream.flush = self.flush

    def write(self, string):
        self.dirty = True
        return self._write(string)

    def flush(self):
        s = self.stream
        if not (self.dirty or self.flushing or getattr(s, "_flush_pending", True)
                or getattr(s, "_subprocess_flush_pending", True)):
            return None
        with self._lock:
            self.dirty = False  # a write from now on makes the next flush a real one
            self.flushing += 1
        try:
            return self._flush()
        finally:
            with self._lock:
                self.flushing -= 1
