"""Writing one file into a volume: staged, checked against the quota, fsynced, renamed into place.

The bytes go to `<volume>/staging/<random>.<declared size>.part` (same
filesystem as `data/`, so the final rename is atomic); a crash, a cut
connection or a quota overrun leaves the previous version intact, and the
staging file is swept by the next upload. Reservations against the quota are
made under the volume's `quota.lock` (an flock), so concurrent uploads from
any process cannot together pass it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path

from ..errors import CellhopError, VolumeConflict, VolumeQuotaExceeded, VolumePathError
from ..volume_paths import entry_of, lstat_in, open_parent, parse_path, refuse_if_link
from .leases import read_locked

class Upload:
    """One file being written into a volume; `commit()` makes it appear, `abort()` leaves no trace."""

    def __init__(self, store, name: str, path: str, size: int | None = None):  # store: a VolumeStore
        self.store, self.volume, self.path = store, name, path
        self.parts = parse_path(path)
        self.written = 0
        self._quota = store.quota_of(name)
        self._declared = size or 0  # reserved against the quota up front (its staging file's name says it)
        self._base = 0
        self._root = store._data_fd(name)
        try:
            self._check_destination()
            staging = store._dir(name) / "staging"
            sweep_staging(staging)
            self._staging_fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                with quota_lock(store, name):  # one reservation at a time, across processes
                    if self._quota is not None:
                        self._base = store.usage(name)["bytes"] - self._replaced_size()
                        self._check(self._declared, reserved(self._staging_fd))
                    self._tmp = f"{secrets.token_hex(8)}.{self._declared}.part"
                    self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644,
                                       dir_fd=self._staging_fd)
                    fcntl.flock(self._fd, fcntl.LOCK_EX)  # live: sweeps leave it, reservations count it
            except BaseException:
                os.close(self._staging_fd)
                raise
        except BaseException:
            os.close(self._root)
            raise
        self.done = False

    def _check_destination(self) -> None:
        try:
            parent = open_parent(self._root, self.parts)
        except FileNotFoundError:
            return  # folders are made on commit
        except NotADirectoryError as exc:
            raise VolumeConflict(f"cannot write {self.path!r} in volume {self.volume!r}: {exc.strerror}") from None
        try:
            st = lstat_in(parent, self.parts[-1])
        finally:
            os.close(parent)
        refuse_if_link(self._root, self.parts, st)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise VolumeConflict(f"{self.path!r} is a folder in volume {self.volume!r}; give a file name "
                                 f"inside it (e.g. '{self.path.rstrip('/')}/file.bin')")

    def _replaced_size(self) -> int:
        try:
            parent = open_parent(self._root, self.parts)
        except (FileNotFoundError, NotADirectoryError, VolumePathError):
            return 0
        try:
            st = lstat_in(parent, self.parts[-1])
        finally:
            os.close(parent)
        return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else 0

    def _check(self, total: int, others: int) -> None:
        """Refuse when what the volume holds, plus the other live uploads' reservations, plus `total`
        bytes of this one would pass the quota."""
        if self._quota is not None and self._base + others + total > self._quota:
            others_text = f" (with {human(others)} of other uploads in progress)" if others else ""
            raise VolumeQuotaExceeded(
                f"volume {self.volume!r} would hold {human(self._base + others + total)}{others_text}, over "
                f"its quota of {human(self._quota)}; delete files (cellhop volume rm) or raise "
                "c.Cellhop.volume_quota")

    def _charge(self, total: int) -> None:
        """`total` bytes written so far: within the reservation nothing to do; beyond it, check again
        against the other uploads in progress (under the volume's quota lock)."""
        if self._quota is None or total <= self._declared:
            return
        with quota_lock(self.store, self.volume):
            self._check(total, reserved(self._staging_fd, mine=self._tmp))

    def write(self, chunk: bytes | memoryview) -> None:
        if self.done:
            raise CellhopError("this upload is already finished")
        view = memoryview(chunk)
        try:
            self._charge(self.written + len(view))
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
                self.written += n
        except BaseException:
            self.abort()
            raise

    def commit(self) -> dict:
        """fsync the bytes, rename them over the destination, fsync the folder. Returns the new entry."""
        if self.done:
            raise CellhopError("this upload is already finished")
        try:
            os.fsync(self._fd)
            try:
                parent = open_parent(self._root, self.parts, create=True)
            except NotADirectoryError as exc:
                raise VolumeConflict(f"cannot write {self.path!r} in volume {self.volume!r}: "
                                     f"{exc.strerror}") from None
            try:
                self._check_destination()
                if self._quota is not None and self.written > self._declared:
                    # Grown past its reservation: others may have landed meanwhile, so count afresh.
                    with quota_lock(self.store, self.volume):
                        self._base = self.store.usage(self.volume)["bytes"] - self._replaced_size()
                        self._check(self.written, reserved(self._staging_fd, mine=self._tmp))
                        self._land(parent)
                else:
                    self._land(parent)
                st = os.stat(self.parts[-1], dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(parent)
        except BaseException:
            self.abort()
            raise
        self._close()
        return entry_of(self.parts, st)

    def _land(self, parent: int) -> None:
        os.rename(self._tmp, self.parts[-1], src_dir_fd=self._staging_fd, dst_dir_fd=parent)
        os.fsync(parent)

    def abort(self) -> None:
        """Drop what was written; the previous version of the file stays as it was."""
        if self.done:
            return
        try:
            os.unlink(self._tmp, dir_fd=self._staging_fd)
        except FileNotFoundError:
            pass
        self._close()

    def _close(self) -> None:
        self.done = True
        for fd in (self._fd, self._staging_fd, self._root):
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.abort()  # a committed upload ignores it



def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@contextmanager
def quota_lock(store, name: str):
    """The volume's quota lock (an flock on `<volume>/quota.lock`): reservations are checked and made
    under it, so concurrent uploads, from any process, cannot together pass the quota."""
    fd = os.open(store._dir(name) / "quota.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the lock


def reserved(staging_fd: int, mine: str | None = None) -> int:
    """Bytes the live uploads in a staging folder hold against the quota (each its declared size,
    or what it has written when more), leaving out `mine`. Dead uploads' files count nothing."""
    total = 0
    for entry in os.scandir(staging_fd):
        if entry.name == mine or not entry.name.endswith(".part"):
            continue
        try:
            fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=staging_fd)
        except FileNotFoundError:
            continue  # landed or aborted meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                continue  # nobody writes it: left by an upload that died (the next sweep removes it)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            declared = entry.name.split(".")[1] if entry.name.count(".") == 2 else "0"
            total += max(int(declared) if declared.isdigit() else 0, os.fstat(fd).st_size)
        finally:
            os.close(fd)
    return total


def sweep_staging(staging: Path) -> None:
    """Remove staging files left by uploads that died (nobody holds their lock)."""
    for part in staging.glob("*.part"):
        read_locked(part, fcntl.LOCK_EX, when_free=lambda p: p.unlink(missing_ok=True))
