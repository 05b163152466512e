"""REST: `gpus`, `containers` and `containers/{id}[/stop|/interrupt|/touch|/logs]`."""

from __future__ import annotations

import asyncio
import json
import threading

from jupyter_server.auth.decorator import authorized
from tornado import web
from tornado.iostream import StreamClosedError

from ..container import ContainerSpec, Phase
from ..errors import CellhopError
from .base import CellhopAPIHandler, status_of

_ID = r"(?P<container_id>[^/]+)"


async def _in_thread(fn, *args, **kwargs):
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))


class GpusHandler(CellhopAPIHandler):
    @web.authenticated
    @authorized
    async def get(self):
        self.write_json(await _in_thread(self.control_plane.gpus_view))


class ContainersHandler(CellhopAPIHandler):
    @web.authenticated
    @authorized
    async def get(self):
        self.write_json({"containers": self.control_plane.containers_view()})

    @web.authenticated
    @authorized
    async def post(self):
        """Start a container; answers when it is ready (or streams its events with ?events=1)."""
        body = self.json_body()
        unknown = set(body) - {"spec"}
        if unknown:
            raise web.HTTPError(400, f"unknown field(s) {', '.join(sorted(unknown))}; send {{\"spec\": {{...}}}}")
        spec = ContainerSpec.from_json(body.get("spec") or {})
        stream = self.get_argument("events", "0") not in ("0", "", "false")
        self._cancelled = threading.Event()
        if stream:
            await self._start_streaming(spec)
        else:
            container = await _in_thread(self.control_plane.manager.start, spec, cancelled=self._cancelled)
            if self._cancelled.is_set():
                await _in_thread(self.control_plane.manager.stop, container.id, "its requester went away")
                return
            self.write_json(self._started(container), status=201)

    def on_connection_close(self):
        cancelled = getattr(self, "_cancelled", None)
        if cancelled is not None:
            cancelled.set()

    @staticmethod
    def _started(container) -> dict:
        return {**container.to_dict(), "connection_info": container.connection_info}

    async def _start_streaming(self, spec: ContainerSpec) -> None:
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue = asyncio.Queue()

        def on_event(event):
            loop.call_soon_threadsafe(lines.put_nowait, event)

        self.set_status(200)
        self.set_header("Content-Type", "application/x-ndjson")
        self.set_header("Cache-Control", "no-cache")
        manager = self.control_plane.manager
        task = loop.run_in_executor(None, lambda: manager.start(spec, on_event=on_event, cancelled=self._cancelled))
        final = None
        while final is None:
            waiter = asyncio.ensure_future(lines.get())
            done, _ = await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                await self._send_line(waiter.result())
                continue
            waiter.cancel()
            while not lines.empty():
                await self._send_line(lines.get_nowait())
            try:
                container = task.result()
                final = {"type": "started", "container": self._started(container)}
            except (CellhopError, ValueError) as exc:
                final = {"type": "error", "status": status_of(exc), "error": type(exc).__name__, "message": str(exc)}
            except Exception as exc:  # reported in the stream; the log has the traceback
                self.log.exception("cellhop: starting a container failed")
                final = {"type": "error", "status": 500, "error": type(exc).__name__, "message": str(exc)}
        if self._cancelled.is_set() and final["type"] == "started":
            await _in_thread(manager.stop, final["container"]["id"], "its requester went away")
            return
        await self._send_line(final)
        self.finish()

    async def _send_line(self, event: dict) -> None:
        if self._cancelled.is_set():
            return
        try:
            self.write(json.dumps(event) + "\n")
            await self.flush()
        except StreamClosedError:
            self._cancelled.set()


class ContainerHandler(CellhopAPIHandler):
    @web.authenticated
    @authorized
    async def get(self, container_id):
        self.write_json(self.control_plane.manager.get(container_id).to_dict())

    @web.authenticated
    @authorized
    async def delete(self, container_id):
        manager = self.control_plane.manager
        container = manager.get(container_id)
        await _in_thread(manager.remove, container_id)
        self.write_json(container.to_dict())


class ContainerActionHandler(CellhopAPIHandler):
    @web.authenticated
    @authorized
    async def post(self, container_id, action):
        manager = self.control_plane.manager
        container = manager.get(container_id)
        if action == "stop":
            reason = self.json_body().get("reason") or "stopped through the cellhop API"
            if not isinstance(reason, str) or len(reason) > 300:
                raise web.HTTPError(400, "reason must be a short string")
            await _in_thread(manager.stop, container_id, reason)
        elif action == "interrupt":
            if container.phase != Phase.READY:
                raise web.HTTPError(409, f"container {container_id} is {container.phase.value}; only a ready "
                                         "container can be interrupted")
            await _in_thread(manager.interrupt, container_id)
        elif action == "touch":
            manager.touch(container_id)
        self.write_json(container.to_dict())


class ContainerLogsHandler(CellhopAPIHandler):
    @web.authenticated
    @authorized
    async def get(self, container_id):
        tail = self.get_argument("tail", None)
        if tail is not None:
            if not tail.isdigit() or int(tail) < 1:
                raise web.HTTPError(400, f"tail={tail!r} must be a whole number of lines, at least 1")
            tail = int(tail)
        log = await _in_thread(self.control_plane.manager.logs, container_id, tail)
        self.write_json({"id": container_id, "log": log})


handlers = [
    (r"gpus", GpusHandler),
    (r"containers", ContainersHandler),
    (rf"containers/{_ID}", ContainerHandler),
    (rf"containers/{_ID}/(?P<action>stop|interrupt|touch)", ContainerActionHandler),
    (rf"containers/{_ID}/logs", ContainerLogsHandler),
]
