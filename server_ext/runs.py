"""Runs owned by the server (detached runs, the REST job queue, schedules' firings, notebooks as jobs).

A run is stored (runs_store.py) before it is queued, so nothing is lost with the kernel that asked or with
the server: when the server starts again, runs that had not started are queued again, and a run that was
running when the server died is marked `lost` (and queued again when it has retries left).

Statuses: queued, running, succeeded, failed, cancelled, lost. Each attempt is recorded (its container,
times, how it ended); a failed call or a dead container is retried with backoff when the run has
retries ({"max_retries", "backoff", "initial_delay"}: the n-th retry waits initial_delay * backoff**(n-1)).

Who may do what: the server's user everything; a kernel (its own token) sees its own runs in lists, and
reads, waits for or cancels any run whose id it holds (a run id is 128 random bits, handed only to who
made the run: the id is the capability, so a later kernel can pick up a detached run).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from pathlib import Path

from ..errors import CellhopError
from ..run_errors import RunNotFound
from .kernel_tokens import Caller
from .runs_attempt import Containers, ContainerGone
from .runs_store import FINAL, RunStore, new_id

log = logging.getLogger("cellhop")
TICK = 5.0
EXPIRE_EVERY = 60  # ticks between two looks for expired runs (5 minutes)
EXECS = ("call", "json", "cell", "notebook")


def check_retries(retries) -> dict | None:
    """The stored form of a retry policy; CellhopError naming what is wrong."""
    if retries is None or retries == 0:
        return None
    if isinstance(retries, int) and not isinstance(retries, bool):
        retries = {"max_retries": retries}
    if not isinstance(retries, dict) or set(retries) - {"max_retries", "backoff", "initial_delay"}:
        raise CellhopError('retries must be a whole number or {"max_retries": n, "backoff": x, "initial_delay": s}')
    out = {"max_retries": retries.get("max_retries", 3), "backoff": retries.get("backoff", 2.0),
           "initial_delay": retries.get("initial_delay", 1.0)}
    for name, low, high in (("max_retries", 0, 100), ("backoff", 1.0, 10.0), ("initial_delay", 0.0, 3600.0)):
        value = out[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
                not low <= value <= high or (name == "max_retries" and not isinstance(value, int)):
            raise CellhopError(f"retries: {name}={value!r}: give a {'whole ' if name == 'max_retries' else ''}"
                               f"number from {low:g} to {high:g}")
    return out


def check_callback(url) -> str | None:
    """Only http(s) URLs (no file:, gopher:, ...; no credentials in the URL); see docs/api.md on SSRF."""
    if url is None:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.username or \
            len(url) > 2048:
        raise CellhopError(f"callback_url={str(url)[:80]!r}: give an http:// or https:// URL (no user:password@, "
                           "at most 2048 characters)")
    return url


def retry_delay(retries: dict, attempt: int) -> float:
    """Seconds before attempt `attempt + 1`, after `attempt` attempts failed."""
    return min(retries["initial_delay"] * retries["backoff"] ** (attempt - 1), 3600.0)


class Runs:
    """The runs of one control plane (all state is the server loop's)."""

    def __init__(self, control_plane, root: Path, result_limit: int = 256 << 20, retention: float = 7 * 86400,
                 concurrency: int = 8, keep_warm: float = 10.0, callback_timeout: float = 10.0):
        self.control_plane = control_plane
        self.manager = control_plane.manager
        self.store = RunStore(root)
        self.result_limit = result_limit
        self.retention = retention
        self.callback_timeout = callback_timeout
        self.containers = Containers(self.manager, keep_warm)
        self.slots = asyncio.Semaphore(max(1, concurrency))
        self.tasks: dict[str, asyncio.Task] = {}
        self.current: dict[str, str] = {}  # run id -> the container of its attempt
        self.cancelling: set[str] = set()
        self._cancel_events: dict[str, threading.Event] = {}
        self.closing = False
        self._ticks = 0
        self.waiters: dict[str, list[asyncio.Future]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ticker = None
        self._unsubscribe = None
        self._lock = threading.Lock()
        self.on_end: list = []  # callables(record) when a run ends
        self.on_start: list = []  # callables() once the runs started (schedules start with them)
        self.on_close: list = []

    def started(self) -> None:
        """On the server's loop: recover stored runs, watch containers, tick."""
        if self.loop is not None:
            return
        self.loop = asyncio.get_running_loop()
        self._unsubscribe = self.manager.subscribe(self._on_container_event)
        self.store.expire(self.retention)
        for run_id in self.store.ids():
            try:
                record = self.store.load(run_id)
            except (RunNotFound, ValueError):
                continue
            if record["status"] == "running":
                self._lost(record)
            elif record["status"] == "queued":
                self._queue(record["id"])
        self._ticker = self.loop.call_later(TICK, self._tick)
        for hook in self.on_start:
            hook()

    def _lost(self, record: dict) -> None:
        now = time.time()
        live = self.store.take_live(record["id"])
        if live and record["attempts"]:
            last = record["attempts"][-1]
            self.store.append_log(record["id"], f"--- attempt {last['attempt']} (container {last.get('container')}, "
                                                f"lost: its log until the server stopped) ---\n{live}\n")
        if record["attempts"] and record["attempts"][-1].get("ended") is None:
            record["attempts"][-1].update(ended=now, status="lost",
                                          error="the server stopped while this attempt ran")
        retries = record.get("retries")
        if retries and len(record["attempts"]) <= retries["max_retries"]:
            record.update(status="queued", error="lost when the server stopped; queued again (retries left)")
            self.store.save(record)
            self._queue(record["id"], delay=retry_delay(retries, len(record["attempts"])))
            return
        record.update(status="lost", ended=now, error="the server stopped while this run ran (no retries left)")
        record["duration"] = now - record["started"] if record.get("started") else None
        self.store.save(record)
        self._ended(record)

    def _on_container_event(self, event: dict) -> None:
        if event.get("phase") == "exited" and self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(self.containers.exited, event["id"])
            except RuntimeError:
                pass

    def _save_live(self, run_id: str, container_id: str) -> None:
        """(A thread's work.) The running attempt's log so far, kept beside the run."""
        text = self.containers.logs(container_id)
        if text and self.current.get(run_id) == container_id:
            self.store.save_live(run_id, text)

    def _tick(self) -> None:
        try:
            self.containers.tick()
            for run_id, container_id in list(self.current.items()):
                self.loop.run_in_executor(None, self._save_live, run_id, container_id)
            self._ticks += 1
            if self._ticks % EXPIRE_EVERY == 0:  # reads every record: on a thread, now and then
                self.loop.run_in_executor(None, self.store.expire, self.retention)
        except Exception:  # noqa: BLE001
            log.exception("cellhop: runs: housekeeping failed")
        self._ticker = self.loop.call_later(TICK, self._tick)

    # -- submitting ----------------------------------------------------------------------
    def submit(self, *, exec: str, name: str, code: bytes, args: bytes, spec: dict, caller: Caller,
               retries=None, callback_url=None, function: str | None = None, schedule: str | None = None,
               kind: str | None = None) -> dict:
        self.started()
        if exec not in EXECS:
            raise CellhopError(f"unknown run kind {exec!r}; one of {', '.join(EXECS)}")
        now = time.time()
        record = {"id": new_id(), "kind": kind or ("notebook" if exec == "notebook" else
                                                   "cell" if exec == "cell" else "function"),
                  "exec": exec, "name": str(name)[:200], "function": function, "schedule": schedule,
                  "owner": caller.id, "status": "queued", "spec": spec, "gpu": spec.get("gpu") or "none",
                  "gpus": [], "created": now, "started": None, "ended": None, "duration": None, "attempts": [],
                  "retries": check_retries(retries), "callback_url": check_callback(callback_url),
                  "callback": None, "error": None, "result_note": None, "has_result": False,
                  "code_bytes": len(code)}
        self.store.create(record, code + args)
        self._publish(record)
        asyncio.get_running_loop().run_in_executor(None, self.store.sync, record["id"])
        self._queue(record["id"])
        return record

    def _queue(self, run_id: str, delay: float = 0.0) -> None:
        self.tasks[run_id] = asyncio.ensure_future(self._execute(run_id, delay))

    # -- running -------------------------------------------------------------------------
    async def _execute(self, run_id: str, delay: float) -> None:
        try:
            if delay:
                await asyncio.sleep(delay)
            while True:
                record = self.store.load(run_id)
                if record["status"] in FINAL:
                    return
                async with self.slots:
                    outcome = await self._attempt(record)
                if outcome is None:
                    return
                await asyncio.sleep(outcome)
        except asyncio.CancelledError:
            if not self.closing:  # the server stopping leaves it queued or running: its restart picks it up
                self._cancelled_record(run_id)
        except Exception:  # noqa: BLE001 - a bug: the run fails, the server goes on
            log.exception("cellhop: run %s failed inside the server", run_id)
            record = self.store.load(run_id)
            if record["status"] not in FINAL:
                self._finish(record, "failed", "cellhop failed inside the server; its log has the details")
        finally:
            self.tasks.pop(run_id, None)

    async def _attempt(self, record: dict) -> float | None:
        """One attempt; seconds to wait before the next one, or None when the run ended."""
        run_id = record["id"]
        now = time.time()
        attempt = {"attempt": len(record["attempts"]) + 1, "started": now, "ended": None, "status": "running",
                   "container": None, "error": None}
        record["attempts"].append(attempt)
        record.update(status="running", started=record["started"] or now)
        self.store.save(record)
        self._publish(record)
        cancelled = threading.Event()
        if run_id in self.cancelling:
            cancelled.set()
        self._cancel_events[run_id] = cancelled
        data = self.store.input(run_id)
        code, args = data[:record["code_bytes"]], data[record["code_bytes"]:]
        if record["exec"] == "json":
            args = args.decode()
        warm, status, error, answer = None, "failed", None, None
        try:
            warm = await self.containers.acquire(record, cancelled)
            if run_id in self.cancelling:  # cancelled just as its container became ready
                raise ContainerGone("cancelled before it ran")
            attempt["container"] = warm.container.id
            record["gpus"] = [g.type for g in warm.container.gpus]
            self.current[run_id] = warm.container.id
            self.store.save(record)
            answer = await self.containers.call(warm, record, code, args, self.result_limit,
                                                record["spec"].get("timeout"))
            ok, pickled, as_json, note = answer
            if self.result_limit and max(len(pickled or b""), len(as_json or "")) > self.result_limit:
                pickled, as_json = None, None  # the container's side keeps to the limit; this one did not
                note = f"the result was over c.Cellhop.run_result_limit ({self.result_limit} bytes): not kept"
            status, error = ("succeeded", None) if ok else ("failed", note)
            if ok or pickled is not None or as_json is not None:
                await asyncio.to_thread(self.store.save_result, run_id, pickled, as_json)
                record["has_result"] = pickled is not None
            if ok:
                record["result_note"] = note
        except ContainerGone as exc:
            error = f"its container ended before the run did ({exc})"
        except asyncio.TimeoutError:
            error = f"it ran past its timeout of {record['spec'].get('timeout'):g} s (its container was stopped)"
        except CellhopError as exc:
            error = f"its container could not start: {type(exc).__name__}: {exc}"
            if exc.http_status < 500 and run_id not in self.cancelling:
                record["retries"] = None  # a request this host refuses is refused again: no retry
        finally:
            self.current.pop(run_id, None)
            self._cancel_events.pop(run_id, None)
            if warm is not None:
                await asyncio.to_thread(self.store.take_live, run_id)  # the whole log follows
                text = await asyncio.to_thread(self.containers.logs, warm.container.id)
                if text:
                    await asyncio.to_thread(self.store.append_log, run_id, f"--- attempt {attempt['attempt']} "
                                            f"(container {warm.container.id}) ---\n{text}\n")
                await self.containers.release(warm, record, status == "succeeded" and answer is not None,
                                              f"run {run_id} ended")
        if run_id in self.cancelling:
            status, error = "cancelled", "cancelled on request"
        attempt.update(ended=time.time(), status=status, error=error)
        retries = record.get("retries")
        if status == "failed" and retries and attempt["attempt"] <= retries["max_retries"]:
            delay = retry_delay(retries, attempt["attempt"])
            record.update(status="queued", error=f"attempt {attempt['attempt']} failed ({error}); "
                                                 f"retrying in {delay:g} s")
            self.store.save(record)
            return delay
        self._finish(record, status, error)
        return None

    def _finish(self, record: dict, status: str, error: str | None) -> None:
        now = time.time()
        record.update(status=status, error=error, ended=now,
                      duration=(now - record["started"]) if record.get("started") else None)
        self.store.save(record)
        self.cancelling.discard(record["id"])
        self._publish(record)
        self._ended(record)

    def _publish(self, record: dict) -> None:
        """A run changed status: `{"type": "run", "id", "status"}` on the event stream (views follow it)."""
        try:
            self.control_plane.publish({"type": "run", "id": record["id"], "status": record["status"]})
        except Exception:  # noqa: BLE001 - telling views is a courtesy
            pass

    def _cancelled_record(self, run_id: str) -> None:
        try:
            record = self.store.load(run_id)
        except RunNotFound:
            return
        if record["status"] not in FINAL:
            if record["attempts"] and record["attempts"][-1].get("ended") is None:
                record["attempts"][-1].update(ended=time.time(), status="cancelled")
            self._finish(record, "cancelled", "cancelled on request")

    def _ended(self, record: dict) -> None:
        if record.get("callback_url") and self.loop is not None:
            asyncio.ensure_future(self._callback(record["id"]))
        for future in self.waiters.pop(record["id"], []):
            if not future.done():
                future.set_result(None)
        for hook in list(self.on_end):
            try:
                hook(record)
            except Exception:  # noqa: BLE001
                log.exception("cellhop: run %s: an end hook failed", record["id"])

    async def _callback(self, run_id: str) -> None:
        from .runs_callback import post_callback

        record = self.store.load(run_id)
        outcome = await post_callback(record["callback_url"], self.view(record, detail=True), self.callback_timeout)
        record = self.store.load(run_id)
        record["callback"] = outcome
        self.store.save(record)

    # -- what the handlers call (on the loop) --------------------------------------------
    def record(self, run_id: str) -> dict:
        return self.store.load(run_id)

    def cancel(self, run_id: str) -> dict:
        record = self.store.load(run_id)
        if record["status"] in FINAL:
            return record
        self.cancelling.add(run_id)
        event = self._cancel_events.get(run_id)
        if event is not None:
            event.set()  # a start queued for a GPU is called off
        container = self.current.get(run_id)
        if container is not None:
            asyncio.ensure_future(self._stop_container(container, run_id))
        elif run_id in self.tasks and record["status"] == "queued":
            self.tasks[run_id].cancel()
        return self.store.load(run_id)

    async def _stop_container(self, container_id: str, run_id: str) -> None:
        from ..own_thread import on_own_thread

        try:
            await on_own_thread(self.manager.stop, container_id, f"run {run_id} was cancelled")
        except Exception:  # noqa: BLE001
            pass
        self.containers.exited(container_id)

    async def wait(self, run_id: str, timeout: float) -> dict:
        record = self.store.load(run_id)
        if record["status"] in FINAL:
            return record
        future = asyncio.get_running_loop().create_future()
        self.waiters.setdefault(run_id, []).append(future)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            pass
        return self.store.load(run_id)

    def logs(self, run_id: str) -> str:
        """The kept logs, then the live log of a running attempt's container."""
        record = self.store.load(run_id)
        text = self.store.log(run_id)
        container = self.current.get(record["id"])
        if container is not None:
            text += f"--- attempt {len(record['attempts'])} (container {container}, running) ---\n"
            text += self.containers.logs(container)
        return text

    def view(self, record: dict, detail: bool = False) -> dict:
        out = {k: v for k, v in record.items() if k not in ("code_bytes", "exec")}
        if record["status"] == "running" and record.get("started"):
            out["duration"] = time.time() - record["started"]
        if detail:
            out["result"] = self.store.result_json(record["id"]) if record["status"] == "succeeded" else None
            if record["kind"] == "notebook" and record["status"] == "failed":
                out["partial"] = self.store.result_json(record["id"])  # executed as far as it went
            out["logs"] = self.logs(record["id"])[-65536:]
        return out

    def list_view(self, caller: Caller, status: str | None = None, limit: int = 200) -> list[dict]:
        views = []
        for run_id in self.store.ids():
            try:
                record = self.store.load(run_id)
            except (RunNotFound, ValueError):
                continue
            if caller.kind == "kernel" and record["owner"] != caller.id:
                continue
            if status and record["status"] != status:
                continue
            views.append(self.view(record))
        views.sort(key=lambda v: v["created"], reverse=True)
        return views[:limit]

    def close(self) -> None:
        self.closing = True
        for hook in self.on_close:
            hook()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._unsubscribe is not None:
            self._unsubscribe()
        for task in self.tasks.values():
            task.cancel()
        self.containers.close()

