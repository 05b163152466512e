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
is; replies with large values go back on the connection the request names
(shared_memory_link.py).
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
import ctypes
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
import weakref

from ..errors import CellhopError

SHARED_MIN = 1 << 20  # buffers this large or larger go through shared memory
SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
MAX_FDS = 64  # descriptors in one socket message
MAX_MESSAGE = 1 << 16  # bytes of one socket message's JSON
MAX_STASH = 256  # descriptors received and not yet claimed, per connection; shared buffers of one message
MAX_KEPT = 64  # received memfds a container holds for sending back unchanged (each an open descriptor)
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
    return _Mapping(fd, size).view()


class _Mapping:
    """A private, writable mapping that holds no descriptor (Python's mmap keeps a duplicate of its
    descriptor as long as it lives: a thousand returned arrays would be a thousand open files), unmapped
    when the last view of it goes."""

    _libc = None

    def __init__(self, fd: int, size: int):
        libc = _Mapping._libc
        if libc is None:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.mmap.restype = ctypes.c_void_p
            libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                  ctypes.c_long]
            libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
            _Mapping._libc = libc
        address = libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE, fd, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            raise SharedMemoryRefused(f"a memfd of {size} bytes cannot be mapped "
                                      f"({os.strerror(ctypes.get_errno())})")
        self.address, self.size = address, size

    def view(self) -> memoryview:
        memory = (ctypes.c_char * self.size).from_address(self.address)
        memory._mapping = self  # ctypes arrays take attributes: the mapping lives as long as the memory
        return memoryview(memory).cast("B")

    def __del__(self):
        address, self.address = getattr(self, "address", None), None
        if address and self._libc is not None:
            try:
                _unmapper().put((address, self.size))
            except Exception:  # interpreter shutdown: the process's end unmaps it
                pass


_UNMAP: list = []  # [queue] once the unmapping thread runs


def _unmapper():
    """The queue of a thread that unmaps dropped segments: the last unmap of a segment frees its pages
    (65 ms for 256 MiB here), which the code that dropped the value need not wait for."""
    if not _UNMAP:
        with _UNMAP_LOCK:
            if not _UNMAP:
                import queue

                q = queue.SimpleQueue()
                threading.Thread(target=_unmap_forever, args=(q,), name="cellhop-unmap", daemon=True).start()
                _UNMAP.append(q)
    return _UNMAP[0]


def _unmap_forever(q) -> None:
    while True:
        address, size = q.get()
        _Mapping._libc.munmap(address, size)


_UNMAP_LOCK = threading.Lock()


class _Kept:
    """Received memfds held while their mappings live (the container's side): a buffer sent back
    unchanged (`f.remote(a)` returning `a`, a cell's `b = a`) goes back as the same sealed memfd, no copy.
    Unchanged: every page of the mapping is still the memfd's own or was never touched (/proc/self/pagemap;
    a page written to is the process's private copy). The descriptor is closed with the mapping."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_address: dict[int, tuple[int, int]] = {}  # mapping address -> (size, fd)

    def add(self, view: memoryview, fd: int) -> bool:
        try:
            address, mapping = _address(view), view.obj._mapping
        except Exception:  # no numpy: copy next time
            return False
        with self._lock:
            if len(self._by_address) >= MAX_KEPT:  # enough open descriptors: the rest go back copied
                return False
            self._by_address[address] = (view.nbytes, fd)
        weakref.finalize(mapping, self._drop, address, fd)  # from here on the descriptor is the mapping's
        return True

    def _drop(self, address: int, fd: int) -> None:
        with self._lock:
            self._by_address.pop(address, None)
        os.close(fd)

    def unchanged(self, frame) -> int | None:
        """A new descriptor of the memfd that holds exactly `frame`, unchanged; None if there is none."""
        if not self._by_address:
            return None
        try:
            view = memoryview(frame)
            address = _address(view)
        except Exception:
            return None
        with self._lock:
            hit = self._by_address.get(address)
        if hit is None or hit[0] != view.nbytes or not _untouched(address, view.nbytes):
            return None
        return os.dup(hit[1])  # `frame` keeps the mapping, hence the descriptor, alive meanwhile


KEPT = _Kept()


def _address(view: memoryview) -> int:
    import numpy

    return int(numpy.frombuffer(view.cast("B") if view.ndim != 1 or view.format != "B" else view,
                                dtype=numpy.uint8).ctypes.data)


def _untouched(address: int, size: int) -> bool:
    """Whether no page of the private mapping at `address` was written to (each is the file's page, or
    not there and not swapped out)."""
    import numpy

    page = mmap.PAGESIZE
    first, count = address // page, -(-(address % page + size) // page)
    try:
        with open("/proc/self/pagemap", "rb", buffering=0) as f:
            f.seek(first * 8)
            data = b""
            while len(data) < count * 8:
                chunk = f.read(count * 8 - len(data))
                if not chunk:
                    return False
                data += chunk
    except OSError:
        return False
    entries = numpy.frombuffer(data, dtype=numpy.uint64)
    present = (entries >> numpy.uint64(63)) & numpy.uint64(1)
    swapped = (entries >> numpy.uint64(62)) & numpy.uint64(1)
    shared = (entries >> numpy.uint64(61)) & numpy.uint64(1)
    return bool(numpy.all(numpy.where(present == 1, shared == 1, swapped == 0)))


# -- one connection -------------------------------------------------------------------
class Channel:
    """One unix (SOCK_SEQPACKET) connection carrying sealed memfds; either side. `keep`: hold each
    received memfd while its mapping lives, so an unchanged buffer can go back without a copy."""

    def __init__(self, sock: socket.socket, keep: bool = False):
        self.sock = sock
        self.keep = keep
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
                    kept = False
                    try:
                        if size != wanted[token]:
                            raise SharedMemoryRefused(f"a memfd announced as {size} bytes where the message "
                                                      f"says {wanted[token]}")
                        got[token] = map_memfd(fd, size)
                        kept = self.keep and size > 0 and KEPT.add(got[token], fd)
                    finally:
                        if not kept:
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
    if len(large) > MAX_STASH:  # the largest through shared memory, the rest over the wire
        large = sorted(sorted(large, key=lambda i: -memoryview(frames[i]).nbytes)[:MAX_STASH])
    items, refs = [], {}
    try:
        for i in large:
            fd, size = KEPT.unchanged(frames[i]), memoryview(frames[i]).nbytes
            if fd is None:
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
