"""Noticing from the wire that a container ended, without asking the control plane over and over.

A ContainerWatch holds one quiet connection to the container kernel's shell
socket and a ZMQ socket monitor on it. When the kernel's process ends, its
sockets close and the monitor reports the disconnect at once; only then is
the control plane asked, to confirm the end and learn its cause (exit code,
out of memory, stopped: idle, ...). A connection that comes back (a network
blip) was no death. Nothing is sent while the container lives.

Waiters block on `fileno()` (readable once the container is known dead) in
their own ZMQ poller, or check `dead` (a threading.Event).
"""

from __future__ import annotations

import logging
import os
import threading
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..wire import KernelConnection

log = logging.getLogger("cellhop")

_EVENTS = zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
CONFIRM_DELAYS = (0.05, 0.15, 0.25, 0.5, 1.0)  # between asks after a disconnect (then 1 s apart)
GIVE_UP_AFTER = 30.0  # a lost connection with the control plane unreachable all along counts as an end
IDLE_WAKE = 0.5  # how often the watch thread looks at its stop flag while nothing happens


class ContainerWatch:
    """Knows when one container has ended: `dead` is set and `status` says how (an ExitStatus)."""

    def __init__(self, container: dict, control):
        self.id = container["id"]
        self.control = control
        self.status = None
        self.dead = threading.Event()
        self.lost_at: float | None = None  # when the connection was lost, while it stays lost (monotonic)
        self._info = container["connection_info"]
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cellhop-watch-{self.id}", daemon=True)
        self._thread.start()
        self._ready.wait(5)  # the monitor is attached before anyone relies on it

    def fileno(self) -> int:
        """A file descriptor that becomes readable when the container is known to have ended."""
        return self._read_fd

    def _run(self) -> None:
        conn = monitor = None
        try:
            conn = KernelConnection(self._info, channels=("shell",))
            sock = conn.sockets["shell"]
            monitor = sock.get_monitor_socket(_EVENTS)
            self._ready.set()
            while not self._stop.is_set():
                if not monitor.poll(int(IDLE_WAKE * 1000)):
                    continue
                if recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED:
                    self.lost_at = time.monotonic()
                    if self._confirm(monitor):
                        return
                    self.lost_at = None
        except Exception:  # the watch must never take the notebook down; a waiter's own checks remain
            if not self._stop.is_set():
                log.exception("cellhop: watching container %s failed", self.id)
        finally:
            self._ready.set()
            if monitor is not None:
                try:
                    conn.sockets["shell"].disable_monitor()
                except Exception:
                    pass
                monitor.close(linger=0)
            if conn is not None:
                conn.close()

    def _confirm(self, monitor) -> bool:
        """After a disconnect: ask the control plane until it records the end (True), or until the
        connection is back (False: it lived)."""
        attempt, lost_at, answered = 0, time.monotonic(), False
        while not self._stop.is_set():
            try:
                status = self.control.poll(self.id)
                answered = True
            except Exception as exc:  # unreachable for a moment: ask again
                log.debug("cellhop: confirming the end of container %s: %s", self.id, exc)
                status = None
                if not answered and time.monotonic() - lost_at > GIVE_UP_AFTER:
                    from ..container import ExitStatus

                    status = ExitStatus(stopped=True, reason=f"the connection to it was lost and the control plane "
                                                             f"cannot be reached to say why ({exc})")
            if status is not None:
                self._mark_dead(status)
                return True
            delay = CONFIRM_DELAYS[min(attempt, len(CONFIRM_DELAYS) - 1)]
            attempt += 1
            if monitor.poll(int(delay * 1000)):
                if recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    return False
        return True

    def lost_before(self, moment: float) -> bool:
        """Whether the connection was already lost at `moment` (monotonic) and never came back: what was
        sent from then on never reached the container."""
        return self.lost_at is not None and self.lost_at <= moment

    def _mark_dead(self, status) -> None:
        self.status = status
        self.dead.set()
        try:
            os.write(self._write_fd, b"x")
        except OSError:
            pass

    def close(self) -> None:
        """Stop watching (the container is being stopped on purpose, or nobody needs it any more).
        The thread ends on its own within IDLE_WAKE, closing its sockets; a caller never waits for it."""
        self._stop.set()

    def __del__(self):
        for fd in (getattr(self, "_read_fd", None), getattr(self, "_write_fd", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
