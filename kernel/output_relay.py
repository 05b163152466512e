"""Relay a container kernel's IOPub messages into the notebook, re-parented.

One thread per container reads the container's IOPub socket and re-publishes
each output (stream, display_data, clear_output, comm traffic, errors from
widget callbacks) on the notebook kernel's own IOPub socket with the
notebook's parent header, so the frontend renders it in the right cell as
if it ran locally. A comm the container opens gets a proxy in the notebook
kernel, so frontend messages to a remote widget are forwarded back.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict

from ..wire import KernelConnection
from .output_tracking import RELAYED  # the types relayed, which the container counts per request

MAX_PARENTS = 512  # routes kept for late output (widgets) of earlier requests


class KernelSink:
    """Publishes on the notebook kernel's IOPub socket (thread-safe in ipykernel)."""

    def __init__(self, kernel):
        self.kernel = kernel

    def current_parent(self) -> dict:
        return self.kernel.get_parent("shell")

    def publish(self, msg_type: str, content: dict, metadata: dict, buffers: list, parent: dict) -> None:
        # What the notebook printed before (ipykernel holds prints up to 0.2 s) goes out first: otherwise a
        # loop printing "step i" then calling f.remote(i) showed every remote print before the local ones.
        for stream in (sys.stdout, sys.stderr):
            _flush_pending(stream)
        topic = self.kernel._topic(msg_type) if hasattr(self.kernel, "_topic") else msg_type.encode()
        self.kernel.session.send(self.kernel.iopub_socket, msg_type, content, parent=parent,
                                 metadata=metadata, buffers=buffers or None, ident=topic)


def _flush_pending(stream) -> None:
    """Send what `stream` (the notebook's ipykernel OutStream) holds; nothing to do, and no wait, when it
    holds nothing (ipykernel 6.26+ keeps its text in `_buffers`; another stream is flushed whatever it holds)."""
    held = getattr(stream, "_buffers", None)
    if held is not None and not held:
        return
    try:
        stream.flush()
    except Exception:  # noqa: BLE001 - a closed or odd stream: the relayed output still goes out
        pass


class ConsoleSink:
    """For a terminal IPython: text only."""

    def current_parent(self) -> dict:
        return {}

    def publish(self, msg_type: str, content: dict, metadata: dict, buffers: list, parent: dict) -> None:
        if msg_type == "stream":
            stream = sys.stderr if content.get("name") == "stderr" else sys.stdout
            stream.write(content.get("text", ""))
            stream.flush()
        elif msg_type in ("display_data", "execute_result", "update_display_data"):
            text = content.get("data", {}).get("text/plain")
            if text:
                print(text)
        elif msg_type == "error":
            print("\n".join(content.get("traceback", [])), file=sys.stderr)


class OutputRelay:
    """The relay thread of one container connection."""

    def __init__(self, info: dict, sink, comm_proxies=None, session=None):
        self.sink = sink
        self.comm_proxies = comm_proxies
        self.session = session  # the ContainerSession that frontend messages are forwarded through
        self._conn = KernelConnection(info, channels=("iopub",))
        self._parents: OrderedDict[str, dict] = OrderedDict()  # container msg_id -> notebook parent
        self._quiet_errors: set[str] = set()  # requests whose error is raised, not relayed
        self._idle: dict[str, threading.Event] = {}
        self._seen: dict[str, list] = {}  # msg_id -> [outputs relayed, how many awaited, event set on reaching it]
        self._last_parent: dict = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cellhop-relay", daemon=True)
        self._thread.start()

    def expect(self, msg_id: str, parent: dict, quiet_error: bool = False) -> threading.Event:
        """Route outputs of container request `msg_id` to notebook `parent`; the event is set at idle."""
        with self._lock:
            self._parents[msg_id] = parent
            while len(self._parents) > MAX_PARENTS:
                self._parents.popitem(last=False)
            self._last_parent = parent
            if quiet_error:
                self._quiet_errors.add(msg_id)
            event = self._idle[msg_id] = threading.Event()
            self._seen[msg_id] = [0, None, None]
        return event

    def wait_outputs(self, msg_id: str, count: int, timeout: float) -> bool:
        """Wait until `count` outputs of request `msg_id` were relayed (the container's reply says how
        many it published): no wait at all for a request that published none."""
        with self._lock:
            seen = self._seen.get(msg_id)
            if seen is None or seen[0] >= count:
                return True
            seen[1], seen[2] = count, threading.Event()
            event = seen[2]
        return event.wait(timeout)

    def done(self, msg_id: str) -> None:
        with self._lock:
            self._idle.pop(msg_id, None)
            self._seen.pop(msg_id, None)
            self._quiet_errors.discard(msg_id)
            # keep the parent: a widget made by this cell may print later, into the same cell

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self._conn.recv("iopub", timeout=0.1)
            except Exception:
                if self._stop.is_set():
                    return
                continue
            if msg is None:
                continue
            self._handle(msg)

    def _handle(self, msg) -> None:
        msg_type, parent_id = msg.type, msg.parent_id
        if msg_type == "status":
            if msg.content.get("execution_state") == "idle":
                with self._lock:
                    event = self._idle.get(parent_id)
                if event is not None:
                    event.set()
            return
        if msg_type not in RELAYED:
            return
        with self._lock:
            parent = self._parents.get(parent_id, self._last_parent)
            quiet = parent_id in self._quiet_errors
            seen = self._seen.get(parent_id)
        try:
            self._relay(msg_type, msg, parent, quiet)
        finally:
            if seen is not None:
                with self._lock:
                    seen[0] += 1
                    if seen[2] is not None and seen[0] >= seen[1]:
                        seen[2].set()

    def _relay(self, msg_type: str, msg, parent: dict, quiet: bool) -> None:
        if msg_type == "error" and quiet:
            return
        content = msg.content
        if msg_type == "execute_result":  # the container's Out[n] is not the notebook's: show it as display
            msg_type = "display_data"
            content = {"data": content.get("data", {}), "metadata": content.get("metadata", {})}
        if self.comm_proxies is not None:
            if msg_type == "comm_open":
                self.comm_proxies.open(content, self.session)
            elif msg_type == "comm_close":
                self.comm_proxies.closed_remotely(content.get("comm_id", ""))
        self.sink.publish(msg_type, content, msg.msg.get("metadata", {}), msg.buffers, parent)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._conn.close()
