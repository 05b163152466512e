"""Every GPU lease, recorded where it survives restarts: the host's usage log.

Each user's servers append to that user's own file in the host's `usage/`
folder (`usage.<uid>.<random>.jsonl`, mode 0600: the user's and root's to
read). A lease writes a `start` line when granted and an `end` line (with its
busy fraction, from the GPU metric samples taken while it was held) when
released. A holder that crashed wrote no `end`: its lease file, left unheld,
says when it last lived (its mtime, touched while held), and the user's next
server writes the `end` from that (`recover`). So the totals match the
leases held, crash or not.

Lines that are not what this module writes are skipped when read.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .host_files import listing, open_checked

KIND = "jsonl"
SUBJECT = "usage"
READ_LIMIT = 64 * 1024 * 1024  # a usage file larger than this is read from its last 64 MiB


@dataclass
class LeaseUse:
    """One lease, as the log tells it."""

    lease: str
    user: str
    uid: int
    gpu: str
    gpu_type: str
    owner: str
    label: str
    start: float
    end: float | None  # None: still held
    busy: float | None  # fraction of the time the GPU was busy, where metrics were sampled
    recovered: bool = False  # its end was written by a later server (the holder crashed)

    def hours(self, now: float | None = None, since: float = 0.0, until: float | None = None) -> float:
        """GPU-hours of this lease between `since` and `until` (now)."""
        end = self.end if self.end is not None else (time.time() if now is None else now)
        if until is not None:
            end = min(end, until)
        return max(0.0, end - max(self.start, since)) / 3600.0

    def to_dict(self) -> dict:
        return {"lease": self.lease, "user": self.user, "gpu": self.gpu, "gpu_type": self.gpu_type,
                "owner": self.owner, "label": self.label, "start": self.start, "end": self.end,
                "busy": self.busy, "recovered": self.recovered}


class UsageLog:
    """The usage log in `folder` (the host's usage/ folder), written as this process's user."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.uid = os.getuid()
        self._fd: int | None = None

    # -- writing -------------------------------------------------------------------
    def _append(self, record: dict) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        if self._fd is None:
            self._fd = self._open_own()
        os.write(self._fd, line)  # O_APPEND: one write, one whole line, whoever else appends

    def _open_own(self) -> int:
        for name in listing(self.folder, KIND, SUBJECT):
            opened = open_checked(self.folder / name, os.O_WRONLY | os.O_APPEND)
            if opened is not None:
                fd, shared = opened
                if shared.uid == self.uid:
                    return fd
                os.close(fd)
        from .host_files import new_name

        path = self.folder / new_name(SUBJECT, self.uid, KIND)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        return fd

    def started(self, lease: str, user: str, gpu: str, gpu_type: str, owner: str, label: str, start: float) -> None:
        self._append({"event": "start", "lease": lease, "user": user, "gpu": gpu, "gpu_type": gpu_type,
                      "owner": owner, "label": label, "t": start})

    def ended(self, lease: str, end: float, busy: float | None, recovered: bool = False) -> None:
        record = {"event": "end", "lease": lease, "t": end, "busy": busy}
        if recovered:
            record["recovered"] = True
        self._append(record)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    # -- reading -------------------------------------------------------------------
    def leases(self, uid: int | None = None, everyone: bool = False) -> list[LeaseUse]:
        """The leases of `uid` (this user by default), or of every user whose file this process may read
        (`everyone`: root reads them all)."""
        want = self.uid if uid is None else uid
        uses: dict[str, LeaseUse] = {}
        for name in listing(self.folder, KIND, SUBJECT):
            opened = open_checked(self.folder / name)
            if opened is None:
                continue
            fd, shared = opened
            try:
                if not everyone and shared.uid != want:
                    continue
                for record in _lines(fd):
                    _apply(uses, record, shared.uid)
            finally:
                os.close(fd)
        return sorted(uses.values(), key=lambda u: u.start)


def _lines(fd: int):
    size = os.fstat(fd).st_size
    offset = max(0, size - READ_LIMIT)
    data = os.pread(fd, size - offset, offset)
    for raw in data.splitlines():
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(record, dict):
            yield record


def _apply(uses: dict[str, LeaseUse], record: dict, uid: int) -> None:
    lease, t = record.get("lease"), record.get("t")
    if not isinstance(lease, str) or not isinstance(t, (int, float)) or isinstance(t, bool):
        return
    if record.get("event") == "start":
        fields = [record.get(k) for k in ("user", "gpu", "gpu_type", "owner", "label")]
        if not all(isinstance(f, str) for f in fields):
            return
        uses[lease] = LeaseUse(lease, fields[0], uid, fields[1], fields[2], fields[3], fields[4], float(t), None, None)
    elif record.get("event") == "end" and lease in uses and uses[lease].end is None:
        busy = record.get("busy")
        use = uses[lease]
        use.end = max(float(t), use.start)
        use.busy = float(busy) if isinstance(busy, (int, float)) and not isinstance(busy, bool) \
            and 0 <= busy <= 1 else None
        use.recovered = record.get("recovered") is True
