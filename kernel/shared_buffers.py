"""Large values through memory shared by the notebook kernel and one local container, not over the wire.

A value's pickle-5 out-of-band buffers (serialize.py) of SHARED_MIN bytes or
more travel as anonymous memfds: the sender copies the buffer into a memfd
once, seals it (no shrinking, growing or writing, by anyone, ever) and
passes the descriptor with SCM_RIGHTS over a unix socket; its frame in the
Jupyter message is left empty and the message's content says which token
fills it. The receiver maps it MAP_PRIVATE (a writable array, its writes its
own) and closes the descriptor at once: the segment has no name, no file
in /dev/shm or anywhere, and lives as long as the arrays that map it.

The socket: the container kernel listens on `<ipc base>-shm` beside its
ipc sockets, in its own sandbox folder, which only that container and the
host can reach (runtimes/local.py); the notebook connects to it (never
following a link the container could plant) and says which connection it
is; replies with large values go back on the connection the request names.
Only on the local runtime's sandboxed containers with ipc transport
(CELLHOP_SHARED_MEMORY=1 at launch); everywhere else, and whenever the
socket is not there or fails, values go over the wire as before.

The notebook trusts nothing it receives: a descriptor that is not a sealed
memfd (checked with fstat, its /proc link and F_GET_SEALS), whose size is
not what the message says, more descriptors or bytes than allowed, or a
message that is not ours is refused with SharedMemoryRefused, the
descriptors closed; waiting for announced descriptors has a deadline. A
sealed memfd cannot be truncated under the mapping (no SIGBUS) nor changed
after it was checked.
"""

from __future__ import annotations

import array
import fcntl
import json
import mmap
import os
import secrets
import select
import socket
import stat
import threading
import time

from ..errors import CellhopError

SHARED_MIN = 1 << 20  # buffers this large or larger go through shared memory
SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
MAX_FDS = 64  # descriptors in one socket message
MAX_MESSAGE = 1 << 16  # bytes of one socket message's JSON
MAX_STASH = 256  # descriptors received and not yet claimed, per connection
MAX_CHANNELS = 32  # connections a container keeps (one per notebook session)
MAX_SIZE = 1 << 40  # one buffer
WAIT = 10.0  # seconds to wait for announced descriptors, or for a connection's hello
ENV = "CELLHOP_SHARED_MEMORY"  # "1": the runtime lets this container share memory with the notebook
SUFFIX = "-shm"
_MAX_UNIX_PATH = 107


class SharedMemoryRefused(CellhopError):
    """Values that came through shared memory were refused (not sealed memfds, sizes that do not
    match, garbage on the socket, nothing within the deadline). The notebook kernel is unaffected."""


def socket_path(info: dict) -> str | None:
    """Where the container kernel of connection info `info` listens, or None (not an ipc transport)."""
    if info.get("transport") != "ipc" or not info.get("ip"):
        return None
    path = f"{info['ip']}{SUFFIX}"
    return path if len(path.encode()) <= _MAX_UNIX_PATH else None


# -- segments -------------------------------------------------------------------------
def to_memfd(buffer) -> tuple[int, int]:
    """A sealed memfd holding a copy of `buffer`: (fd, size). The caller closes fd."""
    view = memoryview(buffer).cast("B")
    size = view.nbytes
    fd = os.memfd_create("cellhop", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
        done = 0
        while done < size:
            done += os.pwrite(fd, view[done:done + (1 << 30)], done)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS | fcntl.F_SEAL_SEAL)
    except BaseException:
        os.close(fd)
        raise
    return fd, size


def map_memfd(fd: int, size: int) -> memoryview:
    """A private, writable mapping of received memfd `fd` after checking it is one, sealed, of `size`
    bytes; raises SharedMemoryRefused otherwise. Does not close fd."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise SharedMemoryRefused(f"a descriptor that is not a regular file (mode {st.st_mode:o})")
    try:
        link = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        link = ""
    if not link.startswith("/memfd:"):
        raise SharedMemoryRefused("a descriptor that is not a memfd")
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError as exc:
        raise SharedMemoryRefused(f"a memfd whose seals cannot be read ({exc})") from None
    if seals & SEALS != SEALS:
        raise SharedMemoryRefused("an unsealed memfd (it could shrink or change under the mapping)")
    if st.st_size != size:
        raise SharedMemoryRefused(f"a memfd of {st.st_size} bytes where the message says {size}")
    if size == 0:
        return memoryview(bytearray())
    return memoryview(mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE))


# -- one connection -------------------------------------------------------------------
class Channel:
    """One unix (SOCK_SEQPACKET) connection carrying sealed memfds; either side."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.stash: dict[str, tuple[int, int]] = {}  # token -> (fd, size), received, not yet claimed
        self.broken: str | None = None
        self._send_lock = threading.Lock()

    def send(self, items: list[tuple[str, int, int]]) -> None:
        """Send (token, fd, size) items; the caller still owns (and closes) the fds."""
        with self._send_lock:
            for i in range(0, len(items), MAX_FDS):
                part = items[i:i + MAX_FDS]
                head = json.dumps({"tokens": [t for t, _, _ in part], "sizes": [n for _, _, n in part]}).encode()
                fds = array.array("i", [fd for _, fd, _ in part])
                self.sock.sendmsg([head], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])

    def take(self, wanted: dict[str, int], timeout: float = WAIT) -> dict[str, memoryview]:
        """The mappings of the tokens `wanted` ({token: size}), each checked; fds are closed here."""
        if self.broken:
            raise SharedMemoryRefused(f"the shared-memory connection is closed ({self.broken})")
        deadline = time.monotonic() + timeout
        got: dict[str, memoryview] = {}
        try:
            while True:
                for token in [t for t in wanted if t in self.stash and t not in got]:
                    fd, size = self.stash.pop(token)
                    try:
                        if size != wanted[token]:
                            raise SharedMemoryRefused(f"a memfd announced as {size} bytes where the message "
                                                      f"says {wanted[token]}")
                        got[token] = map_memfd(fd, size)
                    finally:
                        os.close(fd)
                if len(got) == len(wanted):
                    return got
                self._receive(deadline)
        except SharedMemoryRefused as exc:
            self.close(str(exc))
            raise
        except OSError as exc:
            self.close(str(exc))
            raise SharedMemoryRefused(f"the shared-memory connection failed: {exc}") from None

    def _receive(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self.sock], [], [], left)[0]:
            raise SharedMemoryRefused(f"announced shared memory did not arrive within {WAIT:g} s")
        data, ancillary, flags, _ = self.sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * 4),
                                                      socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT)
        fds = _fds_of(ancillary)
        try:
            if not data and not fds:
                raise SharedMemoryRefused("the other side closed the shared-memory connection")
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise SharedMemoryRefused("a shared-memory message larger than allowed")
            tokens, sizes = _parse(data, len(fds))
            if len(self.stash) + len(fds) > MAX_STASH:
                raise SharedMemoryRefused(f"more than {MAX_STASH} unclaimed shared buffers")
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        for token, size, fd in zip(tokens, sizes, fds):
            old = self.stash.pop(token, None)
            if old is not None:
                os.close(old[0])
            self.stash[token] = (fd, size)

    def close(self, why: str = "closed") -> None:
        self.broken = self.broken or why
        for fd, _ in self.stash.values():
            os.close(fd)
        self.stash.clear()
        try:
            self.sock.close()
        except OSError:
            pass


def _fds_of(ancillary) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[:len(data) - len(data) % arr.itemsize])
            fds.extend(arr)
    return fds


def _parse(data: bytes, nfds: int) -> tuple[list[str], list[int]]:
    try:
        head = json.loads(data)
        tokens, sizes = head["tokens"], head["sizes"]
    except (ValueError, TypeError, KeyError):
        raise SharedMemoryRefused("garbage on the shared-memory connection") from None
    if not (isinstance(tokens, list) and isinstance(sizes, list) and len(tokens) == len(sizes) == nfds):
        raise SharedMemoryRefused(f"a shared-memory message naming {len(tokens) if isinstance(tokens, list) else '?'} "
                                  f"buffers with {nfds} descriptors")
    for t, n in zip(tokens, sizes):
        if not (isinstance(t, str) and 0 < len(t) <= 64 and type(n) is int and 0 <= n <= MAX_SIZE):
            raise SharedMemoryRefused("a shared-memory message with a malformed token or size")
    return tokens, sizes


# -- frames ------------------------------------------------------------------------------
def offload(channel: Channel, channel_id: str, frames: list, minimum: int = SHARED_MIN) -> tuple[list, dict | None]:
    """Frames with each large one replaced by an empty frame, its memfd sent on `channel`; and the
    content field that says so (None: nothing large, frames unchanged)."""
    large = [i for i, f in enumerate(frames) if memoryview(f).nbytes >= minimum]
    if not large:
        return frames, None
    items, refs = [], {}
    try:
        for i in large:
            fd, size = to_memfd(frames[i])
            token = secrets.token_hex(16)
            items.append((token, fd, size))
            refs[str(i)] = [token, size]
        channel.send(items)
    finally:
        for _, fd, _ in items:
            os.close(fd)
    out = list(frames)
    for i in large:
        out[i] = b""
    return out, {"channel": channel_id, "frames": refs}


def restore(channel: Channel | None, frames: list, shared) -> list:
    """Inverse of `offload` on the receiving side: the frames with the shared ones mapped in."""
    if not shared:
        return frames
    refs = shared.get("frames") if isinstance(shared, dict) else None
    if not isinstance(refs, dict) or len(refs) > MAX_STASH:
        raise SharedMemoryRefused("a message with a malformed shared-memory field")
    wanted, where = {}, {}
    for key, ref in refs.items():
        if not (isinstance(key, str) and key.isdigit() and int(key) < len(frames) and isinstance(ref, list)
                and len(ref) == 2 and isinstance(ref[0], str) and type(ref[1]) is int):
            raise SharedMemoryRefused("a message with a malformed shared-memory field")
        wanted[ref[0]] = ref[1]
        where[int(key)] = ref[0]
    if channel is None:
        raise SharedMemoryRefused("a message names shared memory, but there is no shared-memory connection")
    got = channel.take(wanted)
    out = list(frames)
    for index, token in where.items():
        out[index] = got[token]
    return out


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
            sock.settimeout(WAIT)
            sock.connect(f"/proc/self/fd/{fd}")
            sock.setblocking(True)
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
                sock.setblocking(True)
            except (OSError, ValueError, TypeError, KeyError):
                sock.close()
                continue
            with self._lock:
                while len(self.channels) >= MAX_CHANNELS:
                    self.channels.pop(next(iter(self.channels))).close("too many connections")
                old = self.channels.pop(channel_id, None)
                if old is not None:
                    old.close("replaced")
                self.channels[channel_id] = Channel(sock)
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
