"""Exclusive GPU leases that hold across processes and users, and die with their holder.

A lease is a lock file in the host's `leases/` folder (host_dir.py), named
for its GPU and made by its holder (host_files.py): `<gpu uuid>.<uid>.<random>.lock`.
Holding an exclusive `flock` on it is holding the GPU; the kernel drops the
lock when the holding process exits, however it exits. To take a GPU, a
process makes and locks its own file, then looks at the GPU's other files:
if any other is locked, it lets go again (whoever locked second sees the
first, so two never both hold a GPU; two at the same instant may both let
go and try again). Nobody can unlock, remove or rewrite another's file.

What every user may read there is what `%gpu` shows of another user's lease:
the user, since when, and since when it has been idle. The rest (notebook,
container) goes in a sidecar in the holder's own private runtime folder,
which the holder's own processes read.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pwd
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..inventory import Gpu
from .host_files import HeldFile, abandoned_own, listing, read_live, read_object
from .paths import private_dir

PUBLIC = ("user", "since", "idle_since", "idle_holder")  # what a lease file tells every user (and the admin)


def user_name(uid: int | None = None) -> str:
    uid = os.getuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


@dataclass
class Lease:
    """A held GPU. `release()` frees it; so does the death of this process."""

    gpu: Gpu
    holder: dict
    _file: HeldFile | None = field(default=None, repr=False)
    _sidecar: Path | None = field(default=None, repr=False)

    @property
    def held(self) -> bool:
        return self._file is not None

    @property
    def name(self) -> str:
        """The lease's file name: its id in the usage log."""
        return self._file.name if self._file is not None else ""

    def note_idle(self, idle_since: float | None) -> None:
        """Say (to every user) since when the GPU has been idle; None: it works."""
        self._publish("idle_since", idle_since)

    def note_idle_holder(self, flagged: bool) -> None:
        """Say that its holder is an idle holder (usage_sampler.py), for the admin's `cellhop usage --all`."""
        self._publish("idle_holder", flagged)

    def _publish(self, key: str, value) -> None:
        """Change one public field, rewriting the lease file only when it changes."""
        if self._file is not None and self.holder.get(key) != value:
            self.holder[key] = value
            self._file.write({k: self.holder.get(k) for k in PUBLIC})

    def touch(self) -> None:
        """A sign of life (the file's mtime): a crashed holder's lease ends there in the usage log."""
        if self._file is not None:
            self._file.touch()

    def release(self) -> None:
        held, self._file = self._file, None
        if held is not None:
            if self._sidecar is not None:
                self._sidecar.unlink(missing_ok=True)
            held.close()


class LeaseDirectory:
    """The lock files of one host's GPUs (`root`: the shared leases folder; `private`: this user's own
    folder for the details only its processes may read)."""

    def __init__(self, root: Path, private: Path | None = None):
        self.root = Path(root)
        if not self.root.exists():
            private_dir(self.root)
        self.private = private_dir(Path(private)) if private is not None else None
        self.uid = os.getuid()
        self.user = user_name(self.uid)

    def try_acquire(self, gpu: Gpu, holder: dict) -> Lease | None:
        """Take `gpu` now if nobody holds it; never waits."""
        if self._live(gpu):
            return None
        holder = {**holder, "user": self.user, "since": holder.get("since", time.time()), "idle_since": None,
                  "idle_holder": False}
        mine = HeldFile(self.root, gpu.uuid, "lock", {k: holder[k] for k in PUBLIC})
        if self._live(gpu, besides=mine.name):
            mine.close()
            return None
        sidecar = None
        if self.private is not None:
            sidecar = self.private / (mine.name + ".json")
            fd = os.open(sidecar, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(holder, f)
        return Lease(gpu=gpu, holder=holder, _file=mine, _sidecar=sidecar)

    def _live(self, gpu: Gpu, besides: str | None = None) -> list:
        return [live for name in listing(self.root, "lock", gpu.uuid) if name != besides
                and (live := read_live(self.root / name)) is not None]

    def holder_of(self, gpu: Gpu) -> dict | None:
        """Who holds `gpu`, or None when it is free: all its holder wrote for this user's own leases, the
        user, since when and since when idle for another user's."""
        for shared, public in self._live(gpu):
            view = {"user": user_name(shared.uid),  # its owner's name: never what the file says it is
                    "since": _number(public.get("since")), "idle_since": _number(public.get("idle_since"))}
            if shared.uid == self.uid:
                private = self._sidecar_of(shared.path.name)
                return {**view, "owner": f"user {view['user']}", **private, "lease": shared.path.name}
            view["owner"] = f"user {view['user']}"  # another user's: nothing more
            return view
        return None

    def _sidecar_of(self, name: str) -> dict:
        if self.private is None:
            return {}
        try:
            fd = os.open(self.private / (name + ".json"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return {}
        try:
            return read_object(fd) or {}
        finally:
            os.close(fd)

    def held_by(self) -> dict[int, int]:
        """uid -> how many GPUs that user holds now (every user's live leases)."""
        counts: dict[int, int] = {}
        for name in listing(self.root, "lock"):
            live = read_live(self.root / name)
            if live is not None:
                counts[live[0].uid] = counts.get(live[0].uid, 0) + 1
        return counts

    def stale_own(self) -> list[tuple[Path, float, dict]]:
        """This user's lease files nobody holds any more (a holder that crashed): (path, its last sign of
        life, what it and its sidecar said)."""
        return [(path, mtime, {**public, **self._sidecar_of(path.name)})
                for path, mtime, public in abandoned_own(self.root, "lock", self.uid)]

    def remove_stale(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        if self.private is not None:
            (self.private / (path.name + ".json")).unlink(missing_ok=True)


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


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
