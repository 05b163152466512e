"""A local container's log: written capped and rotated, read from the end, never through a link.

The kernel's output (stdout and stderr, and bubblewrap's own messages) reaches
the server through a pipe; a thread copies it into `container.log` in the
container's server-only folder. A container with secrets has one pipe per
stream, each masked on its own (MaskedLog) before the two meet in the file.
The file never grows past `c.LocalRuntime.max_log_bytes`: when the next write
would pass it, the file becomes `container.log.1` (replacing an older one)
and a new one starts, so a container keeps at most twice the cap on disk. Reading a tail of N lines reads blocks from the end of
the files, never the whole of them. Every open is relative to the folder's
descriptor with O_NOFOLLOW and checks that it found a regular file.
"""

from __future__ import annotations

import codecs
import os
import stat
import threading
from pathlib import Path

from ..masking import mask_text, masked_values

LOG_NAME = "container.log"
ROTATED_SUFFIX = ".1"
DEFAULT_MAX_BYTES = 16 * 2**20
_BLOCK = 65536


def _open_in(directory: Path, name: str, flags: int, mode: int = 0o600) -> int:
    """Open `name` in `directory` without following a link at either step; OSError if it is not a regular
    file."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{directory / name} is not a regular file")
    os.set_blocking(fd, True)
    return fd


class CappedLog:
    """Appends bytes to `directory/container.log`, rotating it to `.1` before it would pass `max_bytes`."""

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES, name: str = LOG_NAME):
        self.directory = Path(directory)
        self.name = name
        self.max_bytes = max(int(max_bytes), 1024)
        self._fd = _open_in(self.directory, name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        os.close(self._fd)
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.replace(self.name, self.name + ROTATED_SUFFIX, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        self._fd = _open_in(self.directory, self.name, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC)
        self._size = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        if len(data) > self.max_bytes:  # more than a whole file at once: only its end can be kept
            data = data[-self.max_bytes:]
        if self._size + len(data) > self.max_bytes:
            self._rotate()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
            self._size += written

    def flush(self) -> None:
        pass  # unbuffered

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SharedLog:
    """One log written by several streams (a container's stdout and stderr, each masked on its own, so
    output of one stream between two pieces of a value on the other cannot split it). Each stream reaches
    the log a whole line at a time (a line longer than LINE_LIMIT in pieces of that size), so a line of
    one stream never lands inside a line of the other; the log is closed by the last stream to close."""

    LINE_LIMIT = 64 * 1024

    def __init__(self, log: CappedLog, writers: int):
        self.log = log
        self._writers = writers
        self._lock = threading.Lock()

    def stream(self) -> _SharedStream:
        """The writer of one stream (one of `writers`)."""
        return _SharedStream(self)

    def _write(self, data: bytes) -> None:
        with self._lock:
            self.log.write(data)

    def _stream_closed(self) -> None:
        with self._lock:
            self._writers -= 1
            if self._writers == 0:
                self.log.close()


class _SharedStream:
    """One stream's writer into a SharedLog: whole lines, in the order the stream wrote them."""

    def __init__(self, shared: SharedLog):
        self.shared = shared
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.rfind(b"\n") + 1
        if len(self._buffer) - end > SharedLog.LINE_LIMIT:  # no end of line in sight: let it through
            end = len(self._buffer)
        if end:
            self.shared._write(bytes(self._buffer[:end]))
            del self._buffer[:end]

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._buffer:
            self.shared._write(bytes(self._buffer))
            self._buffer.clear()
        self.shared._stream_closed()


class MaskedLog:
    """Writes a stream of output to a log file with every secret value masked (mask_text), even one split
    across reads: after masking, the longest tail that could be the start of a value is held back until the
    next read shows whether it is one (or the stream ends)."""

    def __init__(self, file, values):
        self.file = file
        self.values = masked_values(values)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def _held(self, text: str) -> int:
        """How many characters at the end of `text` are a proper prefix of a value."""
        held = 0
        for value in self.values:
            for k in range(min(len(value) - 1, len(text)), held, -1):
                if value[k - 1] == text[-1] and text.endswith(value[:k]):
                    held = k
                    break
        return held

    def write(self, data: bytes) -> None:
        text = mask_text(self._pending + self._decoder.decode(data), self.values)
        held = self._held(text) if text else 0
        self._pending = text[len(text) - held:] if held else ""
        if len(text) > held:
            self.file.write(text[:len(text) - held].encode())
            self.file.flush()

    def close(self) -> None:
        tail = mask_text(self._pending + self._decoder.decode(b"", final=True), self.values)
        self._pending = ""
        if tail:
            self.file.write(tail.encode())
        self.file.close()


def pump(fd: int, sink) -> None:
    """Copy what is read from `fd` into `sink` (a CappedLog or MaskedLog) until end of file, then close both."""
    try:
        while True:
            try:
                data = os.read(fd, _BLOCK)
            except InterruptedError:
                continue
            except OSError:
                break
            if not data:
                break
            sink.write(data)
    finally:
        os.close(fd)
        sink.close()


def _tail_bytes(fd: int, lines: int) -> tuple[bytes, int]:
    """The last `lines` lines of an open file, read block by block from its end; and how many it found."""
    end = os.fstat(fd).st_size
    chunks: list[bytes] = []
    found = 0
    position = end
    while position > 0 and found <= lines:
        size = min(_BLOCK, position)
        position -= size
        chunk = os.pread(fd, size, position)
        chunks.append(chunk)
        found += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    if data.endswith(b"\n"):
        kept = data[:-1].split(b"\n")[-lines:]
        text = b"\n".join(kept) + b"\n"
    else:
        kept = data.split(b"\n")[-lines:]
        text = b"\n".join(kept)
    return text, len(kept) if data else 0


def read_log(directory: Path, tail: int | None = None, name: str = LOG_NAME) -> str:
    """The log so far (the rotated file first), or its last `tail` lines, read from the end (a `tail` of 0
    or None: all of it)."""
    parts: list[bytes] = []
    wanted = tail or None
    for file_name in (name, name + ROTATED_SUFFIX):
        if wanted is not None and wanted <= 0:
            break
        try:
            fd = _open_in(directory, file_name, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            if wanted is None:
                data = b""
                while chunk := os.read(fd, _BLOCK * 16):
                    data += chunk
                parts.append(data)
            else:
                data, count = _tail_bytes(fd, wanted)
                parts.append(data)
                wanted -= count
        finally:
            os.close(fd)
    return b"".join(reversed(parts)).decode(errors="replace")
