"""Named persistent volumes: folders kept by the control plane, mounted into containers, filled from outside.

On the local runtime a volume is a folder under `<state dir>/volumes/<name>/`:

    data/      what containers see at their mount path (bind-mounted)
    staging/   uploads being written (same filesystem as data/, so the final rename is atomic)
    mounts/    one flock-held lock file per container that mounts the volume
    volume.json  name, creation time, quota

Uploads never half-land: the bytes go to a staging file, are fsynced, and are
renamed over the destination only when complete; a crash, a cut connection or
a quota overrun leaves the previous version intact (and the staging file is
swept by the next upload). Every user path goes through volume_paths, and no
operation follows a symbolic link. Consistency is the host filesystem's:
containers on one host see each other's writes as they happen.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ..errors import (CellhopError, VolumeConflict, VolumeFileNotFound, VolumeInUse, VolumeNotFound,
                      VolumeQuotaExceeded)
from ..sizes import CHUNK, parse_size
from ..volume_paths import (VolumePathError, join, lstat_in, open_dir, open_parent, parse_path, refuse_if_link,
                            volume_name)
from .leases import read_locked
from .paths import private_dir


def _entry(path: str, st: os.stat_result) -> dict:
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "link" if stat.S_ISLNK(st.st_mode) else "file"
    return {"name": path.rsplit("/", 1)[-1], "path": path, "type": kind,
            "size": st.st_size if kind == "file" else 0, "modified": st.st_mtime}


class Upload:
    """One file being written into a volume; `commit()` makes it appear, `abort()` leaves no trace."""

    def __init__(self, store: VolumeStore, name: str, path: str, size: int | None = None):
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
            store._sweep_staging(staging)
            self._staging_fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                with store._quota_lock(name):  # one reservation at a time, across processes
                    if self._quota is not None:
                        self._base = store.usage(name)["bytes"] - self._replaced_size()
                        self._check(self._declared, store._reserved(self._staging_fd))
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
            others_text = f" (with {_human(others)} of other uploads in progress)" if others else ""
            raise VolumeQuotaExceeded(
                f"volume {self.volume!r} would hold {_human(self._base + others + total)}{others_text}, over "
                f"its quota of {_human(self._quota)}; delete files (cellhop volume rm) or raise "
                "c.Cellhop.volume_quota")

    def _charge(self, total: int) -> None:
        """`total` bytes written so far: within the reservation nothing to do; beyond it, check again
        against the other uploads in progress (under the volume's quota lock)."""
        if self._quota is None or total <= self._declared:
            return
        with self.store._quota_lock(self.volume):
            self._check(total, self.store._reserved(self._staging_fd, mine=self._tmp))

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
                    with self.store._quota_lock(self.volume):
                        self._base = self.store.usage(self.volume)["bytes"] - self._replaced_size()
                        self._check(self.written, self.store._reserved(self._staging_fd, mine=self._tmp))
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
        return _entry(self.path, st)

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


class MountLock:
    """A container's mount of a volume, held (flock) for as long as the container lives."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(fd)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class VolumeStore:
    """The volumes of one control plane, under `root` (its state directory's `volumes/`)."""

    def __init__(self, root: Path, default_quota: int | None = None):
        self.root = Path(root)
        self.default_quota = default_quota

    # -- volumes ----------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        return self.root / volume_name(name)

    def _meta(self, name: str) -> dict:
        try:
            return json.loads((self._dir(name) / "volume.json").read_text())
        except FileNotFoundError:
            raise VolumeNotFound(f"no volume {name!r}; create it with cellhop.Volume({name!r}) "
                                 f"or `cellhop volume create {name}`") from None

    def exists(self, name: str) -> bool:
        return (self._dir(name) / "volume.json").exists()

    def create(self, name: str, quota: int | str | None = None, exist_ok: bool = True) -> dict:
        """Make volume `name` (a no-op when it exists and `exist_ok`). Returns its info."""
        directory = self._dir(name)
        if self.exists(name):
            if not exist_ok:
                raise VolumeConflict(f"volume {name!r} already exists")
            return self.info(name)
        private_dir(self.root)
        tmp = self.root / f".new-{name}-{secrets.token_hex(4)}"
        private_dir(tmp)
        for sub in ("data", "staging", "mounts"):
            (tmp / sub).mkdir(mode=0o755 if sub == "data" else 0o700)
        meta = {"name": name, "created": time.time(), "quota": parse_size(quota)}
        (tmp / "volume.json").write_text(json.dumps(meta))
        try:
            os.rename(tmp, directory)
        except OSError as exc:  # made at the same moment by someone else
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not self.exists(name):
                raise
        return self.info(name)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith(".") and
                      (p / "volume.json").exists())

    def info(self, name: str) -> dict:
        meta = self._meta(name)
        return {"name": name, "created": meta.get("created"), "quota": self.quota_of(name, meta),
                "usage": self.usage(name)["bytes"], "mounted_by": self.mounted_by(name)}

    def list(self) -> list[dict]:
        out = []
        for name in self.names():
            try:
                out.append(self.info(name))
            except VolumeNotFound:  # deleted meanwhile
                pass
        return out

    def quota_of(self, name: str, meta: dict | None = None) -> int | None:
        meta = meta if meta is not None else self._meta(name)
        return meta.get("quota") if meta.get("quota") is not None else self.default_quota

    def delete(self, name: str) -> None:
        """Delete a volume and its files; refused (VolumeInUse, naming them) while containers mount it."""
        self._meta(name)
        self._refuse_if_mounted(name, self._dir(name))
        trash = self.root / f".trash-{name}-{secrets.token_hex(4)}"
        os.rename(self._dir(name), trash)
        try:
            self._refuse_if_mounted(name, trash)  # a mount that started in between
        except VolumeInUse:
            os.rename(trash, self._dir(name))
            raise
        shutil.rmtree(trash, ignore_errors=True)

    def _refuse_if_mounted(self, name: str, directory: Path) -> None:
        holders = self._holders(directory)
        if holders:
            who = "; ".join(f"container {h.get('container', '?')} of {h.get('owner', '?')} at {h.get('path', '?')}"
                            for h in holders)
            raise VolumeInUse(f"volume {name!r} is mounted by {who}; stop those containers first "
                              "(the notebook's %gpu shows them), then delete it")

    # -- mounts -----------------------------------------------------------------
    def mount(self, name: str, holder: dict) -> MountLock:
        """Record that a container mounts `name` (holder: container, owner, path, read_only) until release."""
        self._meta(name)
        mount_id = f"{volume_name(holder['container'], 'container')}.{secrets.token_hex(4)}"
        path = self._dir(name) / "mounts" / f"{mount_id}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh file: nobody else holds it
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({**holder, "pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        if not self.exists(name):  # deleted while we took the lock
            os.close(fd)
            raise VolumeNotFound(f"volume {name!r} was deleted")
        return MountLock(path, fd)

    def mounted_by(self, name: str) -> list[dict]:
        """Who mounts `name` now (any process on this host); stale records are swept."""
        return self._holders(self._dir(name))

    @staticmethod
    def _holders(directory: Path) -> list[dict]:
        mounts = directory / "mounts"
        found = []
        for lock in sorted(mounts.glob("*.lock")) if mounts.is_dir() else ():
            holder = read_locked(lock, fcntl.LOCK_EX, when_free=lambda p: p.unlink(missing_ok=True))
            if holder is not None:
                found.append({k: holder.get(k) for k in ("container", "owner", "path", "read_only")})
        return found

    # -- files ------------------------------------------------------------------
    def _data_fd(self, name: str) -> int:
        self._meta(name)
        return os.open(self._dir(name) / "data", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)

    def _not_found(self, name: str, path: str) -> VolumeFileNotFound:
        return VolumeFileNotFound(f"no file or folder {path!r} in volume {name!r}; list it with "
                                  f"`cellhop volume ls {name}`")

    def _stat(self, name: str, path: str, allow_root: bool = True):
        """(root fd, parts, parent fd or None, lstat) of a path; the caller closes the fds."""
        parts = parse_path(path, allow_root=allow_root)
        root = self._data_fd(name)
        try:
            if not parts:
                return root, parts, None, os.fstat(root)
            parent = open_parent(root, parts)
        except (FileNotFoundError, NotADirectoryError):
            os.close(root)
            raise self._not_found(name, path) from None
        except BaseException:
            os.close(root)
            raise
        st = lstat_in(parent, parts[-1])
        if st is None:
            os.close(parent)
            os.close(root)
            raise self._not_found(name, path)
        return root, parts, parent, st

    def ls(self, name: str, path: str = "") -> list[dict]:
        """The entries of a folder (or the one entry of a file), sorted: folders first."""
        root, parts, parent, st = self._stat(name, path)
        try:
            if not stat.S_ISDIR(st.st_mode):
                return [_entry(join(parts), st)]
            fd = open_dir(root, parts)
            try:
                entries = []
                for entry in os.scandir(fd):
                    child = join((*parts, entry.name))
                    entries.append(_entry(child, entry.stat(follow_symlinks=False)))
            finally:
                os.close(fd)
        finally:
            os.close(root)
            if parent is not None:
                os.close(parent)
        return sorted(entries, key=lambda e: (e["type"] != "dir", e["name"]))

    def stat(self, name: str, path: str) -> dict:
        root, parts, parent, st = self._stat(name, path)
        os.close(root)
        if parent is not None:
            os.close(parent)
        return _entry(join(parts), st)

    def upload(self, name: str, path: str, size: int | None = None) -> Upload:
        """Begin writing file `path`; `size` (when known) is checked against the quota up front."""
        return Upload(self, name, path, size)

    def put(self, name: str, path: str, source: BinaryIO | bytes | Iterable[bytes], size: int | None = None) -> dict:
        """Write `source` (bytes, a binary file or an iterable of chunks) to `path`, atomically."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            size, source = len(source), [bytes(source)]
        with self.upload(name, path, size) as up:
            if hasattr(source, "readinto"):
                buf = bytearray(CHUNK)
                while n := source.readinto(buf):
                    up.write(memoryview(buf)[:n])
            elif hasattr(source, "read"):
                while chunk := source.read(CHUNK):
                    up.write(chunk)
            else:
                for chunk in source:
                    up.write(chunk)
            return up.commit()

    def open(self, name: str, path: str) -> tuple[BinaryIO, int]:
        """(binary file open for reading, its size) of file `path`; links are refused."""
        root, parts, parent, st = self._stat(name, path, allow_root=False)
        try:
            refuse_if_link(root, parts, st)
            if not stat.S_ISREG(st.st_mode):
                raise VolumeConflict(f"{path!r} in volume {name!r} is a folder, not a file; list it with ls")
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        finally:
            os.close(root)
            os.close(parent)
        f = os.fdopen(fd, "rb", buffering=0)
        return f, os.fstat(fd).st_size

    def read_chunks(self, name: str, path: str, chunk: int = CHUNK):
        """The bytes of file `path`, a chunk at a time (for downloads of any size)."""
        f, _ = self.open(name, path)
        with f:
            while data := f.read(chunk):
                yield data

    def mkdir(self, name: str, path: str) -> dict:
        parts = parse_path(path)
        root = self._data_fd(name)
        try:
            fd = open_dir(root, parts, create=True)
            st = os.fstat(fd)
            os.close(fd)
        except NotADirectoryError as exc:
            raise VolumeConflict(f"cannot make folder {path!r} in volume {name!r}: {exc.strerror}") from None
        finally:
            os.close(root)
        return _entry(join(parts), st)

    def rm(self, name: str, path: str, recursive: bool = False) -> None:
        """Delete a file or link, or a folder (`recursive` when it is not empty). Never follows links."""
        root, parts, parent, st = self._stat(name, path, allow_root=False)
        try:
            if stat.S_ISDIR(st.st_mode):
                if recursive:
                    shutil.rmtree(parts[-1], dir_fd=parent)
                else:
                    try:
                        os.rmdir(parts[-1], dir_fd=parent)
                    except OSError as exc:
                        if exc.errno == errno.ENOTEMPTY:
                            raise VolumeConflict(f"folder {path!r} in volume {name!r} is not empty; "
                                                 "delete it with recursive=True (CLI: rm -r)") from None
                        raise
            else:
                os.unlink(parts[-1], dir_fd=parent)
            os.fsync(parent)
        finally:
            os.close(root)
            os.close(parent)

    def mv(self, name: str, src: str, dst: str) -> dict:
        """Rename within the volume (atomic; replaces a file at `dst`, never a folder)."""
        root, sparts, sparent, st = self._stat(name, src, allow_root=False)
        try:
            dparts = parse_path(dst)
            if dparts[:len(sparts)] == sparts and stat.S_ISDIR(st.st_mode):
                raise VolumeConflict(f"cannot move folder {src!r} into itself ({dst!r})")
            dparent = open_parent(root, dparts, create=True)
            try:
                dst_st = lstat_in(dparent, dparts[-1])
                refuse_if_link(root, dparts, dst_st)
                if dst_st is not None and stat.S_ISDIR(dst_st.st_mode):
                    raise VolumeConflict(f"{dst!r} in volume {name!r} is a folder; move into it with "
                                         f"'{dst.rstrip('/')}/{sparts[-1]}'")
                if dst_st is not None and stat.S_ISDIR(st.st_mode):
                    raise VolumeConflict(f"{dst!r} in volume {name!r} exists; a folder cannot replace a file")
                os.rename(sparts[-1], dparts[-1], src_dir_fd=sparent, dst_dir_fd=dparent)
                os.fsync(dparent)
                moved = os.stat(dparts[-1], dir_fd=dparent, follow_symlinks=False)
            finally:
                os.close(dparent)
        except NotADirectoryError as exc:
            raise VolumeConflict(f"cannot move to {dst!r}: {exc.strerror}") from None
        finally:
            os.close(root)
            os.close(sparent)
        return _entry(join(dparts), moved)

    def usage(self, name: str) -> dict:
        """{"bytes", "files", "quota"}: what the volume holds (apparent sizes; links count as nothing)."""
        root = self._data_fd(name)
        total = files = 0
        try:
            for _, _, filenames, dir_fd in os.fwalk(".", dir_fd=root):
                for f in filenames:
                    try:
                        st = os.stat(f, dir_fd=dir_fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        total += st.st_size
                        files += 1
        finally:
            os.close(root)
        return {"bytes": total, "files": files, "quota": self.quota_of(name)}

    def data_path(self, name: str) -> Path:
        """The host folder a container binds (runtimes only)."""
        self._meta(name)
        return self._dir(name) / "data"

    @contextmanager
    def _quota_lock(self, name: str):
        """The volume's quota lock (an flock on `<volume>/quota.lock`): reservations are checked and made
        under it, so concurrent uploads, from any process, cannot together pass the quota."""
        fd = os.open(self._dir(name) / "quota.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # drops the lock

    @staticmethod
    def _reserved(staging_fd: int, mine: str | None = None) -> int:
        """Bytes the live uploads in a staging folder hold against the quota (each its declared size,
        or what it has written when more), leaving out `mine`. Dead uploads' files count nothing."""
        total = 0
        for entry in os.scandir(staging_fd):
            if entry.name == mine or not entry.name.endswith(".part"):
                continue
            try:
                fd = os.open(entry.name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=staging_fd)
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

    @staticmethod
    def _sweep_staging(staging: Path) -> None:
        """Remove staging files left by uploads that died (nobody holds their lock)."""
        for part in staging.glob("*.part"):
            read_locked(part, fcntl.LOCK_EX, when_free=lambda p: p.unlink(missing_ok=True))
