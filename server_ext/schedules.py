"""Schedules owned by the server: each firing is a run (runs.py) of the schedule's function, cell input or
notebook. Stored under `<state dir>/schedules/<id>/` (schedule.json, input.bin; folders 0700, files 0600,
written atomically), so they survive the kernel that made them and the server: a new server picks them up
and fires each at its next time after it starts (firings missed while no server ran are not made up).

Access as for runs: the server's user everything; a kernel lists its own schedules and manages any whose
id it holds (128 random bits).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import shutil
import threading
import time
from pathlib import Path

from ..errors import CellhopError
from ..run_errors import RunNotFound
from .endpoints_store import _write
from .kernel_tokens import Caller
from .paths import private_dir
from .runs import check_retries
from .schedules_cron import Cron, parse_every

log = logging.getLogger("cellhop")
TICK = 0.5


def check_schedule_id(schedule_id) -> str:
    if not (isinstance(schedule_id, str) and len(schedule_id) == 33 and schedule_id[0] == "s"
            and all(c in "0123456789abcdef" for c in schedule_id[1:])):
        raise RunNotFound(f"{str(schedule_id)[:40]!r} is not a schedule id (an 's' and 32 hex digits); list them "
                          "with cellhop.schedules(), `cellhop schedules list` or GET cellhop/api/schedules")
    return schedule_id


def next_time(record: dict, after: float) -> float:
    if record.get("cron"):
        return Cron(record["cron"]).next_after(after)
    return after + record["every"]


class Schedules:
    """The schedules of one control plane; fires them on the server's loop."""

    def __init__(self, runs, root: Path):
        self.runs = runs
        self.root = Path(root)
        self._lock = threading.Lock()
        self.loop = None
        self._ticker = None
        self.next: dict[str, float] = {}  # schedule id -> when it fires next (epoch seconds)

    # -- storage ------------------------------------------------------------------------
    def _folder(self, schedule_id: str) -> Path:
        return self.root / check_schedule_id(schedule_id)

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if p.is_dir() and not p.is_symlink()
                and (p / "schedule.json").is_file()]

    def load(self, schedule_id: str) -> dict:
        try:
            return json.loads((self._folder(schedule_id) / "schedule.json").read_bytes())
        except FileNotFoundError:
            raise RunNotFound(f"no schedule {schedule_id!r}; list them with cellhop.schedules() or "
                              "`cellhop schedules list`") from None

    def _save(self, record: dict) -> None:
        with self._lock:
            folder = self._folder(record["id"])
            if folder.is_dir():
                _write(folder / "schedule.json", json.dumps(record).encode())

    # -- lifecycle ----------------------------------------------------------------------
    def started(self) -> None:
        if self.loop is not None:
            return
        self.loop = asyncio.get_running_loop()
        now = time.time()
        for schedule_id in self.ids():
            try:
                self.next[schedule_id] = next_time(self.load(schedule_id), now)
            except (CellhopError, ValueError, KeyError):
                log.exception("cellhop: schedule %s cannot be read; skipped", schedule_id)
        self._ticker = self.loop.call_later(TICK, self._tick)

    def _tick(self) -> None:
        now = time.time()
        for schedule_id, when in list(self.next.items()):
            if when > now:
                continue
            try:
                record = self.load(schedule_id)
                self.next[schedule_id] = next_time(record, max(now, when))
                if not record["paused"]:
                    self._fire(record, now)
            except RunNotFound:
                self.next.pop(schedule_id, None)
            except Exception:  # noqa: BLE001 - one schedule does not stop the others
                log.exception("cellhop: schedule %s failed to fire", schedule_id)
        self._ticker = self.loop.call_later(TICK, self._tick)

    def _fire(self, record: dict, now: float) -> None:
        data = (self._folder(record["id"]) / "input.bin").read_bytes()
        owner_kind, _, owner_name = record["owner"].partition(":")
        run = self.runs.submit(exec=record["exec"], name=record["name"], code=data[:record["code_bytes"]],
                               args=data[record["code_bytes"]:], spec=record["spec"],
                               caller=Caller(owner_kind, owner_name), retries=record["retries"],
                               function=record.get("function"), schedule=record["id"],
                               callback_url=record.get("callback_url"))
        record.update(fired=record["fired"] + 1, last_fired=now, last_run=run["id"])
        self._save(record)

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()

    # -- what the handlers call ---------------------------------------------------------
    def create(self, *, exec: str, name: str, code: bytes, args: bytes, spec: dict, caller: Caller,
               cron: str | None = None, every=None, retries=None, function: str | None = None,
               callback_url: str | None = None) -> dict:
        self.runs.started()
        self.started()
        if (cron is None) == (every is None):
            raise CellhopError('give a schedule either cron="m h dom mon dow" or every="15m"')
        from .runs import check_callback

        record = {"id": "s" + secrets.token_hex(16), "name": str(name)[:200], "exec": exec, "function": function,
                  "owner": caller.id, "cron": Cron(cron).expression if cron is not None else None,
                  "every": parse_every(every) if every is not None else None, "spec": spec,
                  "retries": check_retries(retries), "callback_url": check_callback(callback_url), "paused": False,
                  "created": time.time(), "fired": 0, "last_fired": None, "last_run": None, "code_bytes": len(code)}
        with self._lock:
            private_dir(self.root)
            folder = private_dir(self._folder(record["id"]))
            _write(folder / "input.bin", code + args)
            _write(folder / "schedule.json", json.dumps(record).encode())
        self.next[record["id"]] = next_time(record, time.time())
        return record

    def set_paused(self, schedule_id: str, paused: bool) -> dict:
        record = self.load(schedule_id)
        record["paused"] = bool(paused)
        self._save(record)
        if not paused:  # from now on, not the firings it missed
            self.next[schedule_id] = next_time(record, time.time())
        return record

    def delete(self, schedule_id: str) -> dict:
        record = self.load(schedule_id)
        with self._lock:
            shutil.rmtree(self._folder(schedule_id), ignore_errors=True)
        self.next.pop(schedule_id, None)
        return record

    def view(self, record: dict) -> dict:
        out = {k: v for k, v in record.items() if k not in ("code_bytes", "exec")}
        out["kind"] = "notebook" if record["exec"] == "notebook" else "cell" if record["exec"] == "cell" else "function"
        out["next"] = None if record["paused"] else self.next.get(record["id"])
        return out

    def list_view(self, caller: Caller) -> list[dict]:
        views = []
        for schedule_id in self.ids():
            try:
                record = self.load(schedule_id)
            except (RunNotFound, ValueError):
                continue
            if caller.kind == "kernel" and record["owner"] != caller.id:
                continue
            views.append(self.view(record))
        return sorted(views, key=lambda v: v["created"])
