"""Reading and writing the small files several Unix users share in the host folder, as a distrustful reader.

Every user's server writes its own files (GPU leases, queue tickets, its last
grant, its usage) into folders every user may create files in (sticky, like
/tmp: nobody removes or renames another's file). So a file's *owner* says
whose it is, never its name; a name says what the file is about. What is read
there is validated before it is used: a symlink, a FIFO, a device, a file too
large, one not owned by the uid its name claims or holding anything but a
small JSON object is skipped, so a planted or broken file never breaks
another user's server and never makes it block.

Names: `<subject>.<uid>.<random>.<kind>`, e.g. `GPU-0b1c….1001.5f3a9c.lock`.
A name is made by its owner, so a squatter cannot take one away: every new
file gets a fresh random part.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

MAX_BYTES = 4096  # what any of these files may hold; more is not ours
ABANDONED_AFTER = 2.0  # seconds an unheld file must be old before its owner's sweep removes it


@dataclass(frozen=True)
class SharedFile:
    """A file of a shared folder whose name and owner agree."""

    path: Path
    subject: str
    uid: int
    kind: str


def parse_name(name: str) -> tuple[str, int, str] | None:
    """(subject, uid, kind) of `<subject>.<uid>.<random>.<kind>`, or None for any other name."""
    parts = name.rsplit(".", 3)
    if len(parts) != 4 or name.startswith(".") or not parts[0]:
        return None
    subject, uid, token, kind = parts
    if not uid.isdigit() or not token.isalnum():
        return None
    return subject, int(uid), kind


def new_name(subject: str, uid: int, kind: str) -> str:
    if "/" in subject or "\0" in subject or subject.startswith("."):
        raise ValueError(f"not a file name subject: {subject!r}")
    return f"{subject}.{uid}.{secrets.token_hex(6)}.{kind}"


def listing(folder: Path, kind: str, subject: str | None = None) -> list[str]:
    """Names of `kind` files in `folder` (of `subject`), sorted; nothing when the folder cannot be read."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    suffix = "." + kind
    prefix = None if subject is None else subject + "."
    return sorted(n for n in names if n.endswith(suffix) and (prefix is None or n.startswith(prefix)))


def open_checked(path: Path, flags: int = os.O_RDONLY) -> tuple[int, SharedFile] | None:
    """An open descriptor of `path` when it is a regular file owned by the uid its name says, else None.
    Never follows a symlink and never waits on a FIFO."""
    parsed = parse_name(path.name)
    if parsed is None:
        return None
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_uid != parsed[1] or info.st_size > MAX_BYTES:
        os.close(fd)
        return None
    return fd, SharedFile(path, parsed[0], parsed[1], parsed[2])


def read_object(fd: int) -> dict | None:
    """The JSON object a shared file holds, or None when it holds anything else."""
    try:
        data = os.pread(fd, MAX_BYTES + 1, 0)
    except OSError:
        return None
    if len(data) > MAX_BYTES:
        return None
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def is_locked(fd: int) -> bool:
    """Whether another open file description holds a lock on the file (its holder lives)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def read_live(path: Path) -> tuple[SharedFile, dict] | None:
    """(the file, what it holds) when `path` is a valid shared file whose writer holds it locked; None for a
    file nobody holds (its writer is gone or let go) and for any file that is not valid. The lock says it
    lives, whatever it holds: content that does not read as a JSON object (one being written, or garbage)
    is {} (a reader never takes a held lease for a free one)."""
    opened = open_checked(path)
    if opened is None:
        return None
    fd, shared = opened
    try:
        if not is_locked(fd):
            return None
        return shared, read_object(fd) or {}
    finally:
        os.close(fd)


def abandoned(fd: int) -> bool:
    """Whether a file nobody holds now was left long ago: not one whose maker is about to lock it (a file
    is made, then locked: a moment when it is there unheld)."""
    return time.time() - os.fstat(fd).st_mtime > ABANDONED_AFTER


def abandoned_own(folder: Path, kind: str, uid: int, subject: str | None = None) -> list[tuple[Path, float, dict]]:
    """User `uid`'s `kind` files in `folder` that nobody holds and that were left long ago (their writers
    died): (path, its last sign of life, what it holds). Checked under a lock of our own, so a live one is
    never among them."""
    found = []
    for name in listing(folder, kind, subject):
        opened = open_checked(folder / name)
        if opened is None:
            continue
        fd, shared = opened
        try:
            if shared.uid != uid:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue  # held: alive
                raise
            if abandoned(fd):
                found.append((shared.path, os.fstat(fd).st_mtime, read_object(fd) or {}))
        finally:
            os.close(fd)
    return found


class HeldFile:
    """A shared file this process made and holds locked (exclusively) for as long as it lives or until
    `close()`; the kernel drops the lock when the process dies, however it dies."""

    def __init__(self, folder: Path, subject: str, kind: str, content: dict, mode: int = 0o644):
        uid = os.getuid()
        while True:  # a fresh name each try: a reader's instant lock or a squatter never makes us wait
            path = folder / new_name(subject, uid, kind)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                path.unlink(missing_ok=True)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue
                raise
            break
        os.fchmod(fd, mode)  # whatever the umask
        self.path, self.fd, self._size = path, fd, 0
        self.write(content)

    @property
    def name(self) -> str:
        return self.path.name

    def write(self, content: dict) -> None:
        """Rewrite it in place, never shorter (padded with blanks, which JSON ignores): a reader never finds
        it cut between a write and a truncate."""
        data = json.dumps(content, separators=(",", ":")).encode()
        if len(data) > MAX_BYTES:
            raise ValueError(f"a shared file holds at most {MAX_BYTES} bytes")
        data = data.ljust(self._size)
        os.pwrite(self.fd, data, 0)
        self._size = len(data)

    def touch(self) -> None:
        """Mark it as written now (its mtime: a crashed holder's last sign of life)."""
        os.utime(self.fd)

    def close(self, remove: bool = True) -> None:
        """Let go: removed first, then unlocked, so no reader sees it free before it is gone."""
        fd, self.fd = self.fd, None
        if fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
