"""Named persistent volumes: folders kept by the control plane, mounted into containers, filled from outside.

On the local runtime a volume is a folder under `<state dir>/volumes/<name>/`:

    data/      what containers see at their mount path (bind-mounted)
    staging/   uploads being written (same filesystem as data/, so the final rename is atomic)
    mounts/    one flock-held lock file per container that mounts the volume
    trash/     what `rm -r` took out of data/, being deleted (containers no longer see it)
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
import socket
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from ..errors import (VolumeConflict, VolumeFileNotFound, VolumeInUse, VolumeNotFound,
                      VolumeQuotaExceeded, VolumeTrashLeft)
from ..sizes import CHUNK, parse_size
from ..volume_paths import (entry_of, lstat_in, open_dir, open_file, open_parent, parse_path, refuse_if_link, show,
                            volume_name)
from . import file_tree
from .leases import read_locked
from .paths import private_dir
from .volume_upload import Upload

__all__ = ["CHUNK", "MountLock", "Upload", "VolumeConflict", "VolumeFileNotFound", "VolumeInUse", "VolumeNotFound",
           "VolumeQuotaExceeded", "VolumeStore", "VolumeTrashLeft", "parse_size"]



class MountLock:
    """A container's mount of a volume, held (flock) for as long as the container lives."""

    def __init__(self, path: Path, fd: int):
        self.path, self._fd = path, fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(fd)


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
        quota = parse_size(quota)  # a bad quota leaves nothing behind
        if self.exists(name):
            if not exist_ok:
                raise VolumeConflict(f"volume {name!r} already exists")
            return self.info(name)
        private_dir(self.root)
        tmp = self.root / f".new-{name}-{secrets.token_hex(4)}"
        private_dir(tmp)
        for sub in ("data", "staging", "mounts", "trash"):
            (tmp / sub).mkdir(mode=0o755 if sub == "data" else 0o700)
        meta = {"name": name, "created": time.time(), "quota": quota}
        (tmp / "volume.json").write_text(json.dumps(meta))
        try:
            os.rename(tmp, directory)
        except OSError as exc:  # made at the same moment by someone else
            self._remove(self.root, tmp.name, f"the unused new folder {tmp}")
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
        """Delete a volume and its files; refused (VolumeInUse, naming them) while containers mount it.

        The volume is renamed to `.trash-<name>-<random>` first (gone from listings at once), then
        deleted; VolumeTrashLeft when that fails, naming what is left (the next deletion retries it)."""
        self._meta(name)
        self._refuse_if_mounted(name, self._dir(name))
        trash = self.root / f".trash-{name}-{secrets.token_hex(4)}"
        os.rename(self._dir(name), trash)
        try:
            self._refuse_if_mounted(name, trash)  # a mount that started in between
        except VolumeInUse:
            os.rename(trash, self._dir(name))
            raise
        self._remove(self.root, trash.name, f"volume {name!r}")
        self.sweep_trash()

    def sweep_trash(self) -> list[str]:
        """Delete again what earlier deletions left (`.trash-*` beside the volumes, what is in each
        volume's trash/), skipping what another deletion is working on; returns what is still left."""
        if not self.root.is_dir():
            return []
        items = []
        for path in self.root.iterdir():
            if path.name.startswith(".trash-"):
                items.append(path)
            elif (path / "trash").is_dir():
                items += list((path / "trash").iterdir())
        left = []
        for item in items:
            try:
                self._remove(item.parent, item.name, str(item), wait=False)
            except VolumeTrashLeft:
                left.append(str(item))
        return left

    @staticmethod
    def _remove(folder: Path, name: str, what: str, wait: bool = True) -> None:
        """Delete `name` (a tree nothing else uses any more) in `folder`, however deep. The deletion holds
        an flock on the tree's top folder, so a sweep (`wait=False`) leaves a tree being deleted alone."""
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        top = None
        try:
            try:
                top = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                fcntl.flock(top, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                return  # another deletion has it
            except OSError as exc:
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP, errno.ENOENT):
                    raise
            file_tree.remove_tree(fd, name)
        except OSError as exc:
            raise VolumeTrashLeft(f"deleting {what} failed ({exc.strerror or exc}); what is left is kept in "
                                  f"{folder / name} (no container sees it) and the next deletion tries again; "
                                  "check the host's permissions or disk there") from None
        finally:
            if top is not None:
                os.close(top)
            os.close(fd)

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
                return [entry_of(parts, st)]
            fd = open_dir(root, parts)
            try:
                entries = []
                with os.scandir(fd) as found:
                    for entry in found:
                        try:
                            entries.append(entry_of((*parts, entry.name), entry.stat(follow_symlinks=False)))
                        except FileNotFoundError:
                            continue  # removed meanwhile
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
        return entry_of(parts, st)

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
            if stat.S_ISDIR(st.st_mode):
                raise VolumeConflict(f"{path!r} in volume {name!r} is a folder, not a file; list it with ls")
            fd = open_file(parent, parts[-1], show(parts))  # what is there now: it may have been swapped
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
        return entry_of(parts, st)

    def rm(self, name: str, path: str, recursive: bool = False) -> None:
        """Delete a file or link, or a folder (`recursive` when it is not empty). Never follows links."""
        root, parts, parent, st = self._stat(name, path, allow_root=False)
        try:
            if stat.S_ISDIR(st.st_mode):
                if recursive:
                    self._take_out(name, parent, parts)
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
        return entry_of(dparts, moved)

    def _take_out(self, name: str, parent: int, parts: tuple[str, ...]) -> None:
        """`rm -r`: rename the folder into the volume's trash/ (out of every container's sight, at once),
        then delete it there at any depth; VolumeTrashLeft when that fails."""
        trash = self._dir(name) / "trash"
        trash.mkdir(mode=0o700, exist_ok=True)  # volumes made before trash/ existed
        fd = os.open(trash, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            taken = secrets.token_hex(8)
            os.rename(parts[-1], taken, src_dir_fd=parent, dst_dir_fd=fd)
        finally:
            os.close(fd)
        self._remove(trash, taken, f"{show(parts)!r} of volume {name!r}")
        self.sweep_trash()

    def usage(self, name: str) -> dict:
        """{"bytes", "files", "quota"}: what the volume holds (apparent sizes of regular files), at any depth."""
        root = self._data_fd(name)
        try:
            total, files = file_tree.usage(root)
        finally:
            os.close(root)
        return {"bytes": total, "files": files, "quota": self.quota_of(name)}

    def data_path(self, name: str) -> Path:
        """The host folder a container binds (runtimes only)."""
        self._meta(name)
        return self._dir(name) / "data"
