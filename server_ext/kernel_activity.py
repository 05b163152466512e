"""When each container's kernel last worked, and whether it works now, told by the kernel itself.

Every Jupyter kernel publishes its execution state on IOPub (`busy` when it
takes a request, `idle` when it is done with it). The control plane
subscribes to those status messages alone (topic `kernel.`: ZMQ filters the
rest at the kernel, so outputs never come here) and keeps, per container,
the requests in progress and the time of the last change. So idle timeouts
need no report from the notebook per cell, and a container running a cell
is never idle, however long the cell runs.

Sockets: a watch is made and first read by the thread that starts the
container (`KernelActivity.watch`, then `ActivityWatch.confirmed`), then
handed to the thread that reads them all (`adopt`, then `pump`).
"""

from __future__ import annotations

import threading
import time

import zmq

from ..wire import KernelConnection

TOPIC = b"kernel."  # ipykernel's status (and execute_input, welcome) topics: kernel.<ident>.status


class ActivityWatch:
    """The status messages of one container kernel."""

    def __init__(self, container_id: str, info: dict):
        self.container_id = container_id
        self._conn = KernelConnection(info, channels=("iopub",))
        self.socket = self._conn.sockets["iopub"]
        self.socket.setsockopt(zmq.SUBSCRIBE, TOPIC)
        self.socket.setsockopt(zmq.UNSUBSCRIBE, b"")  # only the kernel's own status: never the outputs
        self.heard = False  # a message came: the subscription is live
        self.in_progress: set[str] = set()  # msg_ids of requests the kernel is busy with
        self.last = time.monotonic()  # when its state last changed

    def read(self) -> None:
        """Take in what arrived (the thread that owns the socket)."""
        while self.socket.poll(0):
            try:
                msg = self._conn.recv("iopub", timeout=0)
            except (ValueError, zmq.ZMQError):  # a message that is not signed with the kernel's key
                continue
            if msg is None:
                return
            self.heard = True
            if msg.type != "status":
                continue
            state = msg.content.get("execution_state")
            if state == "busy":
                self.in_progress.add(msg.parent_id or "")
            elif state == "idle":
                self.in_progress.discard(msg.parent_id or "")
            elif state == "starting":  # a new kernel process (restart in place)
                self.in_progress.clear()
            self.last = time.monotonic()

    def confirmed(self, timeout: float = 0.0) -> bool:
        """Whether the subscription is known to be live (a welcome or status message came)."""
        if not self.heard and self.socket.poll(int(timeout * 1000)):
            self.read()
        return self.heard

    @property
    def busy(self) -> bool:
        return bool(self.in_progress)

    def close(self) -> None:
        self._conn.close()


class KernelActivity:
    """The ActivityWatch of every ready container of a control plane."""

    def __init__(self):
        self._lock = threading.Lock()
        self._watches: dict[str, ActivityWatch] = {}
        self._closing: list[ActivityWatch] = []
        self._poller: zmq.Poller | None = None

    def watch(self, container_id: str, info: dict) -> ActivityWatch:
        """A new watch, read by the calling thread until `adopt`ed (close it if not)."""
        return ActivityWatch(container_id, info)

    def adopt(self, watch: ActivityWatch) -> None:
        """From now on the pumping thread reads it (it replaces an earlier watch of that container)."""
        with self._lock:
            old = self._watches.get(watch.container_id)
            if old is not None:
                self._closing.append(old)
            self._watches[watch.container_id] = watch
            self._poller = None

    def rename(self, old_id: str, new_id: str) -> None:
        """A claimed standby's kernel now belongs to container `new_id`."""
        with self._lock:
            watch = self._watches.pop(old_id, None)
            if watch is not None:
                watch.container_id = new_id
                self._watches[new_id] = watch

    def forget(self, container_id: str) -> None:
        with self._lock:
            watch = self._watches.pop(container_id, None)
            if watch is not None:
                self._closing.append(watch)
                self._poller = None

    def idle_for(self, container_id: str, last_touched: float, now: float | None = None) -> float | None:
        """Seconds since the kernel last worked (or since `last_touched`, if later); None while it works."""
        now = time.monotonic() if now is None else now
        watch = self._watches.get(container_id)
        if watch is None:
            return now - last_touched
        if watch.busy:
            return None
        return now - max(last_touched, watch.last)

    def pump(self, timeout: float) -> None:
        """Read status messages for up to `timeout` seconds (the one thread that reads adopted watches)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                closing, self._closing = self._closing, []
                if self._poller is None:
                    self._poller = zmq.Poller()
                    for watch in self._watches.values():
                        self._poller.register(watch.socket, zmq.POLLIN)
                poller, watches = self._poller, {w.socket: w for w in self._watches.values()}
            for watch in closing:
                watch.close()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if not watches:  # one adopted meanwhile is read on the next call (its messages wait)
                time.sleep(left)
                return
            for sock in dict(poller.poll(max(1, int(left * 1000)))):
                watch = watches.get(sock)
                if watch is not None:
                    watch.read()

    def close(self) -> None:
        """Close every socket (the pumping thread, when it ends)."""
        with self._lock:
            watches = [*self._watches.values(), *self._closing]
            self._watches.clear()
            self._closing.clear()
            self._poller = None
        for watch in watches:
            watch.close()
