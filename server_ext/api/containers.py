"""REST: `gpus`, `containers` and `containers/{id}[/stop|/interrupt|/touch|/restart|/logs]`."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ...container import ContainerSpec, Phase
from ...own_thread import on_own_thread
from ..log_view import MAX_TAIL
from .base import CellhopAPIHandler, JsonLinesStream, check_may_act_on, in_thread

_ID = r"(?P<container_id>[^/]+)"


class GpusHandler(CellhopAPIHandler):
    @web.authenticated
    @authorized
    async def get(self):
        self.write_json(await in_thread(self.control_plane.gpus_view))


class StandbyPreloadHandler(CellhopAPIHandler):
    @web.authenticated
    @authorized
    async def post(self):
        """A notebook's heavy imports, for the default image's standbys to preload (standby_pool.py keeps
        only well-known libraries, so no request makes another user's container import what it chose)."""
        body = self.json_body()
        modules = body.get("modules") if isinstance(body, dict) else None
        if not isinstance(modules, list) or set(body) - {"modules"} or len(modules) > 64 or \
                not all(isinstance(m, str) for m in modules):
            raise web.HTTPError(400, 'send {"modules": ["numpy", ...]}: at most 64 module names')
        manager = self.control_plane.manager
        kept = manager.standby.hint_preload(modules) if manager.standby is not None else []
        self.write_json({"preload": kept})


class ContainersHandler(JsonLinesStream, CellhopAPIHandler):
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
        if not isinstance(body.get("spec"), dict):
            raise web.HTTPError(400, 'field \'spec\' must be a container spec, a JSON object; send {"spec": {}} '
                                     'for a CPU-only container with the defaults')
        spec = ContainerSpec.from_json(body["spec"])
        spec.caller = self.caller  # who asked, as authenticated (its session secrets, its container)
        if self.wants_events():
            await self._start_streaming(spec)
        else:
            container = await on_own_thread(self.control_plane.manager.start, spec, cancelled=self.gone)
            if self.gone.is_set():
                await on_own_thread(self.control_plane.manager.stop, container.id, "its requester went away")
                return
            self.write_json(self._started(container), status=201)

    @staticmethod
    def _started(container) -> dict:
        return {**container.to_dict(), "connection_info": container.connection_info}

    async def _start_streaming(self, spec: ContainerSpec) -> None:
        manager = self.control_plane.manager
        container = await self.stream_json_lines(
            lambda on_event: manager.start(spec, on_event=on_event, cancelled=self.gone),
            lambda c: {"type": "started", "container": self._started(c)})
        if container is not None and self.gone.is_set():  # its requester left while it started
            await on_own_thread(manager.stop, container.id, "its requester went away")


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
        check_may_act_on(self.caller, container)
        await on_own_thread(manager.remove, container_id)  # stops it first when it runs
        self.write_json(container.to_dict())


class ContainerActionHandler(CellhopAPIHandler):
    @web.authenticated
    @authorized
    async def post(self, container_id, action):
        manager = self.control_plane.manager
        container = manager.get(container_id)
        check_may_act_on(self.caller, container)
        if action == "stop":
            reason = self.json_body().get("reason") or "stopped through the cellhop API"
            if not isinstance(reason, str) or len(reason) > 300:
                raise web.HTTPError(400, "reason must be a short string")
            await on_own_thread(manager.stop, container_id, reason)  # up to the stop grace
        elif action == "interrupt":
            if container.phase != Phase.READY:
                raise web.HTTPError(409, f"container {container_id} is {container.phase.value}; only a ready "
                                         "container can be interrupted")
            await in_thread(manager.interrupt, container_id)
        elif action == "touch":  # body {"idle_timeout": s|0|null} also changes it (keep-warm: 0)
            body = self.json_body()
            if set(body) - {"idle_timeout"}:
                raise web.HTTPError(400, 'touch takes {} or {"idle_timeout": seconds, 0 (never) or null (the default)}')
            manager.touch(container_id, body["idle_timeout"] if "idle_timeout" in body else ...)
        elif action == "restart":  # a fresh kernel process, the GPUs kept (the kernel provisioner's restart)
            if container.phase != Phase.READY:
                raise web.HTTPError(409, f"container {container_id} is {container.phase.value}; only a ready "
                                         "container can be restarted")
            await on_own_thread(manager.restart, container_id)  # a stop, then a start until ready
            self.write_json({**container.to_dict(), "connection_info": container.connection_info})
            return
        self.write_json(container.to_dict())


class ContainerLogsHandler(CellhopAPIHandler):
    @web.authenticated
    @authorized
    async def get(self, container_id):
        """`?tail=N`: the log's last N lines; without it, the log's end, at most 1 MiB."""
        if self.get_argument("follow", "0") not in ("0", "", "false"):  # as it grows, JSON lines (api/exec.py)
            from .exec import follow_route

            return await follow_route(self, container_id)
        tail = self.get_argument("tail", None)
        if tail is not None:
            if not (tail.isascii() and tail.isdigit()) or len(tail) > 9 or int(tail) < 1:
                raise web.HTTPError(400, f"tail={tail[:40]!r} must be a whole number of lines, from 1 to "
                                         f"{MAX_TAIL}")
            tail = min(int(tail), MAX_TAIL)
        check_may_act_on(self.caller, self.control_plane.manager.get(container_id))
        log = await in_thread(self.control_plane.manager.logs, container_id, tail)
        self.write_json({"id": container_id, "log": log})


handlers = [
    (r"gpus", GpusHandler),
    (r"standby/preload", StandbyPreloadHandler),
    (r"containers", ContainersHandler),
    (rf"containers/{_ID}", ContainerHandler),
    (rf"containers/{_ID}/(?P<action>stop|interrupt|touch|restart)", ContainerActionHandler),
    (rf"containers/{_ID}/logs", ContainerLogsHandler),
]
