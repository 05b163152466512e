"""Exclusive GPU leases that hold across processes and die with their holder.

Each GPU has a lock file under `<runtime dir>/leases/`; holding an exclusive
`flock` on it is holding the GPU. The kernel drops the lock when the holding
process exits, however it exits, so a crash leaves nothing stale. The holder
writes who it is into the file, for `%gpu` and the API to show.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..inventory import Gpu
from .paths import private_dir


@dataclass
class Lease:
    """A held GPU. `release()` frees it; so does the death of this process."""

    gpu: Gpu
    holder: dict
    _fd: int | None = field(default=None, repr=False)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class LeaseDirectory:
    """The lock files of one host's GPUs."""

    def __init__(self, root: Path):
        self.root = private_dir(Path(root))

    def _path(self, gpu: Gpu) -> Path:
        return self.root / f"{gpu.uuid}.lock"

    def try_acquire(self, gpu: Gpu, holder: dict) -> Lease | None:
        """Take `gpu` now if nobody holds it; never waits."""
        fd = os.open(self._path(gpu), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        return Lease(gpu=gpu, holder=holder, _fd=fd)

    def holder_of(self, gpu: Gpu) -> dict | None:
        """Who holds `gpu` (as written by its holder), or None when it is free."""
        holder = read_locked(self._path(gpu))
        return None if holder is None else holder or {"owner": "unknown"}


def read_locked(path: Path, lock: int = fcntl.LOCK_SH, when_free=None) -> dict | None:
    """What the live holder of `path`'s flock wrote in it ({} when unreadable), or None when nobody holds it.

    The test takes the lock for an instant: LOCK_SH merely to look, LOCK_EX to
    act on a free file. `when_free(path)` runs while that lock is held, e.g.
    to remove a file its holder left behind when it died.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, lock | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            try:
                value = json.loads(os.pread(fd, 65536, 0))
            except ValueError:
                return {}
            return value if isinstance(value, dict) else {}
        if when_free is not None:
            when_free(path)
        return None
    finally:
        os.close(fd)  # also drops the instant's lock
