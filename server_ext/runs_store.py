"""Runs on disk: `<state dir>/runs/<id>/` holds `run.json` (the record: status, attempts, times),
`input.bin` (what the container runs: the function's and its arguments' pickled bytes, or a notebook;
opaque to the server), `result.pkl` (the result's pickled bytes, for its owner), `result.json` (the
result as JSON when it is JSON-able, for REST) and `log.txt` (the containers' logs, attempt after attempt).

Folders 0700, files 0600, each written aside and renamed into place (a crash leaves the old file or the
new one, never half of one). A result larger than c.Cellhop.run_result_limit is not kept (the run says
so); a finished run's folder is deleted c.Cellhop.run_retention seconds after it ended.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import time
from pathlib import Path

from ..run_errors import RunNotFound
from .endpoints_store import _write
from .paths import private_dir


def _replace(path: Path, data: bytes) -> None:
    """Written aside and renamed into place, without fsync: a status update survives the server's process
    dying (the page cache keeps it) and is atomic; only a crash of the host may lose the latest one. A new
    run's files (create) are fsynced: a queued run is never lost."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

FINAL = ("succeeded", "failed", "cancelled", "lost")
MAX_LOG_BYTES = 4 << 20  # what a run keeps of its containers' logs (the end)


def new_id() -> str:
    """A run's id: 128 random bits (it is also what lets a kernel read a run it did not start)."""
    return "r" + secrets.token_hex(16)


def check_id(run_id) -> str:
    if not (isinstance(run_id, str) and len(run_id) == 33 and run_id[0] == "r"
            and all(c in "0123456789abcdef" for c in run_id[1:])):
        raise RunNotFound(f"{str(run_id)[:40]!r} is not a run id (an 'r' and 32 hex digits); list runs with "
                          "cellhop.runs(), `cellhop runs list` or GET cellhop/api/runs")
    return run_id


class RunStore:
    """The stored runs of one control plane (thread-safe)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock = threading.Lock()

    def folder(self, run_id: str) -> Path:
        return self.root / check_id(run_id)

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir()
                if p.is_dir() and not p.is_symlink() and (p / "run.json").is_file()]

    def load(self, run_id: str) -> dict:
        try:
            return json.loads((self.folder(run_id) / "run.json").read_bytes())
        except FileNotFoundError:
            raise RunNotFound(f"no run {run_id!r} (it never was, or it ended more than c.Cellhop.run_retention "
                              "seconds ago and was deleted); list runs with cellhop.runs() or GET cellhop/api/runs"
                              ) from None

    def create(self, record: dict, data: bytes) -> None:
        with self._lock:
            private_dir(self.root)
            folder = private_dir(self.folder(record["id"]))
            _replace(folder / "input.bin", data)  # fsynced by sync(), off the server's loop
            _replace(folder / "run.json", json.dumps(record).encode())

    def sync(self, run_id: str) -> None:
        """Flush a new run's files to the disk (a thread's work: fsync takes milliseconds)."""
        folder = self.folder(run_id)
        for path in (folder / "input.bin", folder / "run.json", folder):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def save(self, record: dict) -> None:
        with self._lock:
            folder = self.folder(record["id"])
            if folder.is_dir():
                _replace(folder / "run.json", json.dumps(record).encode())

    def input(self, run_id: str) -> bytes:
        return (self.folder(run_id) / "input.bin").read_bytes()

    def save_result(self, run_id: str, pickled: bytes | None, as_json: str | None) -> None:
        folder = self.folder(run_id)
        if pickled is not None:
            _write(folder / "result.pkl", pickled)
        if as_json is not None:
            _write(folder / "result.json", as_json.encode())

    def result(self, run_id: str) -> bytes | None:
        try:
            return (self.folder(run_id) / "result.pkl").read_bytes()
        except FileNotFoundError:
            return None

    def result_json(self, run_id: str):
        try:
            return json.loads((self.folder(run_id) / "result.json").read_bytes())
        except FileNotFoundError:
            return None

    def append_log(self, run_id: str, text: str) -> None:
        """Add to the run's kept log, keeping its last MAX_LOG_BYTES."""
        with self._lock:
            path = self.folder(run_id) / "log.txt"
            try:
                old = path.read_bytes()
            except FileNotFoundError:
                old = b""
            _replace(path, (old + text.encode(errors="replace"))[-MAX_LOG_BYTES:])

    def save_live(self, run_id: str, text: str) -> None:
        """The running attempt's log so far (`live.txt`): what a lost attempt printed survives the server."""
        folder = self.folder(run_id)
        if folder.is_dir():
            _replace(folder / "live.txt", text[-MAX_LOG_BYTES:].encode(errors="replace"))

    def take_live(self, run_id: str) -> str:
        """The last saved live log (then gone)."""
        path = self.folder(run_id) / "live.txt"
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        path.unlink(missing_ok=True)
        return text

    def log(self, run_id: str) -> str:
        try:
            return (self.folder(run_id) / "log.txt").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def delete(self, run_id: str) -> None:
        with self._lock:
            shutil.rmtree(self.folder(run_id), ignore_errors=True)

    def expire(self, retention: float, now: float | None = None) -> list[str]:
        """Delete the runs that ended more than `retention` seconds ago (0: keep them all)."""
        if not retention:
            return []
        now = time.time() if now is None else now
        gone = []
        for run_id in self.ids():
            try:
                record = self.load(run_id)
            except (RunNotFound, ValueError):
                continue
            if record.get("status") in FINAL and now - (record.get("ended") or now) > retention:
                self.delete(run_id)
                gone.append(run_id)
        return gone


def file_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777
