"""The two ends of the shared-memory connection between a notebook session and its container.

The container kernel listens on `<ipc base>-shm` in its own sandbox folder (ContainerEnd); each notebook
session connects to it on first use (NotebookLink), without following a link there, and names its
connection in every request so the reply's large buffers come back on it. What travels and how it is
checked: shared_buffers.py.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import stat
import threading

from .shared_buffers import ENV, MAX_CHANNELS, SHARED_MIN, WAIT, Channel, SharedMemoryRefused, offload, restore, \
    socket_path

__all__ = ["ContainerEnd", "NotebookLink", "SharedMemoryRefused"]

CONNECT_WAIT = 2.0  # seconds a connection may take (a container's listener that never accepts costs this, once)


# -- the notebook's side -------------------------------------------------------------
class NotebookLink:
    """A notebook session's shared-memory connection to one container (made on first use)."""

    def __init__(self, info: dict):
        self.path = socket_path(info)
        self.id = secrets.token_hex(8)
        self.channel: Channel | None = None
        self.unavailable = self.path is None

    def connect(self) -> Channel | None:
        """The connection, or None where there is none (values go over the wire)."""
        if self.channel is not None and not self.channel.broken:
            return self.channel
        if self.unavailable or self.channel is not None:  # a broken connection is not made again
            return None
        try:
            self.channel = Channel(_connect_no_follow(self.path))
            self.channel.sock.sendall(json.dumps({"channel": self.id}).encode())
        except OSError:
            self.unavailable = True
            if self.channel is not None:
                self.channel.close()
            self.channel = None
        return self.channel

    def offload(self, frames: list) -> tuple[list, dict | None]:
        """Frames to send and the request's `shm` field: large buffers through shared memory when the
        connection is up; the field names the connection for the reply's large buffers too."""
        channel = self.connect()
        if channel is None:
            return frames, None
        try:
            frames, refs = offload(channel, self.id, frames)
        except OSError as exc:  # the wire still works: this request goes over it
            channel.close(str(exc))
            return frames, None
        return frames, refs or {"channel": self.id}

    def restore(self, frames: list, shared) -> list:
        return restore(self.channel, frames, shared)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()


def _connect_no_follow(path: str) -> socket.socket:
    """Connect to the unix socket at `path` without following a link there (the container owns the
    folder: a link could point at any socket of the host); refuse anything but a socket."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a socket")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(CONNECT_WAIT)
            sock.connect(f"/proc/self/fd/{fd}")
            sock.settimeout(WAIT)  # a send that cannot go through fails (the value goes over the wire)
        except BaseException:
            sock.close()
            raise
        return sock
    finally:
        os.close(fd)


# -- the container's side ------------------------------------------------------------
class ContainerEnd:
    """The container kernel's listening socket and the notebook sessions' connections to it."""

    def __init__(self, path: str):
        self.path = path
        self.channels: dict[str, Channel] = {}
        self._lock = threading.Condition()
        if os.path.lexists(path):
            os.unlink(path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self.listener.bind(path)
        os.chmod(path, 0o600)
        self.listener.listen(8)
        threading.Thread(target=self._accept, name="cellhop-shared-memory", daemon=True).start()

    @classmethod
    def start(cls, info: dict) -> ContainerEnd | None:
        """Listen where `info` says, when the runtime allows shared memory here; None otherwise."""
        path = socket_path(info)
        if os.environ.get(ENV) != "1" or path is None:
            return None
        try:
            return cls(path)
        except OSError:
            return None

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            try:
                sock.settimeout(WAIT)
                hello = json.loads(sock.recv(256))
                channel_id = hello["channel"]
                if not (isinstance(channel_id, str) and 0 < len(channel_id) <= 64):
                    raise ValueError(channel_id)
                sock.settimeout(WAIT)  # a send that cannot go through fails (the reply goes over the wire)
            except (OSError, ValueError, TypeError, KeyError):
                sock.close()
                continue
            with self._lock:
                while len(self.channels) >= MAX_CHANNELS:
                    self.channels.pop(next(iter(self.channels))).close("too many connections")
                old = self.channels.pop(channel_id, None)
                if old is not None:
                    old.close("replaced")
                self.channels[channel_id] = Channel(sock, keep=True)
                self._lock.notify_all()

    def channel(self, shared, wait: float = 2.0) -> tuple[Channel | None, str | None]:
        """The connection a request names (its hello may still be on its way: waits up to `wait` s)."""
        channel_id = shared.get("channel") if isinstance(shared, dict) else None
        if not isinstance(channel_id, str):
            return None, None
        with self._lock:
            self._lock.wait_for(lambda: channel_id in self.channels, timeout=wait)
            channel = self.channels.get(channel_id)
        return (channel, channel_id) if channel is not None and not channel.broken else (None, None)

    def restore(self, frames: list, shared) -> list:
        """A request's frames with its shared buffers mapped in (none named: the frames as they are)."""
        if not isinstance(shared, dict) or not shared.get("frames"):
            return frames
        return restore(self.channel(shared)[0], frames, shared)

    def offload(self, frames: list, shared) -> tuple[list, dict | None]:
        """A reply's frames, its large buffers through the connection the request named."""
        if not any(memoryview(f).nbytes >= SHARED_MIN for f in frames):
            return frames, None
        channel, channel_id = self.channel(shared)
        if channel is None:
            return frames, None
        try:
            return offload(channel, channel_id, frames)
        except OSError as exc:
            channel.close(str(exc))
            return frames, None
