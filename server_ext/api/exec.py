"""REST: `containers/{id}/exec` (a command inside a container, its output streamed), `containers/{id}/terminal`
(a JupyterLab terminal whose shell runs inside it), and `containers/{id}/logs?follow=1` (its log as it
grows: follow_route, called by containers.ContainerLogsHandler).

The same authorization as the other container routes: the server's user acts on any container, a
kernel's token only on the containers that kernel started (containers.check_may_act_on)."""

from __future__ import annotations

import asyncio
import json

from jupyter_server.auth.decorator import authorized
from tornado import web
from tornado.iostream import StreamClosedError

from ...errors import CellhopError, error_body, http_status
from ..container_exec import Exec, plan
from ..terminals import keep_alive, open_terminal
from .base import CellhopAPIHandler, JsonLinesStream, in_thread
from .base import check_may_act_on

_ID = r"(?P<container_id>[^/]+)"


class _Lines(JsonLinesStream, CellhopAPIHandler):
    """A route answering with JSON lines as they come."""

    def start_lines(self) -> None:
        self.set_status(200)
        self.set_header("Content-Type", "application/x-ndjson")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")

    async def send(self, line: dict) -> None:
        if self.gone.is_set():
            return
        try:
            self.write(json.dumps(line) + "\n")
            await self.flush()
        except StreamClosedError:
            self.gone.set()


class ExecHandler(_Lines):
    _run: Exec | None = None

    def on_connection_close(self):
        super().on_connection_close()
        if self._run is not None:
            self._run.kill()  # its requester went away: so does the command

    @web.authenticated
    @authorized
    async def post(self, container_id):
        """{"argv": [...], "stdin": "...", "timeout": s}: JSON lines {"stream": "stdout"|"stderr", "text": ...},
        then {"exit_code": N} (with "timed_out": true when the timeout killed it)."""
        body = self.json_body()
        unknown = set(body) - {"argv", "stdin", "timeout"}
        if unknown:
            raise web.HTTPError(400, f"unknown field(s) {', '.join(sorted(unknown))}; send "
                                     '{"argv": ["cmd", "arg"], "stdin": "text", "timeout": seconds}')
        manager = self.control_plane.manager
        container = manager.get(container_id)
        check_may_act_on(self.caller, container)
        entry = await in_thread(plan, manager.runtime, container)
        run = self._run = Exec(entry, body.get("argv"), body.get("stdin"), body.get("timeout"))
        manager.touch(container_id)
        self.start_lines()
        queue: asyncio.Queue = asyncio.Queue(maxsize=64)  # bounded: the command's output waits for the requester
        task = asyncio.ensure_future(run.run(queue.put))
        keep_alive(manager, container_id, lambda: not task.done())  # its idle timeout waits for the command
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    await self.send(getter.result())
                    continue
                getter.cancel()
                break
            while not queue.empty():
                await self.send(queue.get_nowait())
            try:
                last = task.result()
            except (CellhopError, ValueError) as exc:
                last = {"type": "error", "status": http_status(exc), **error_body(exc)}
            await self.send(last)
        finally:
            run.kill()
        manager.touch(container_id)
        if not self.gone.is_set():
            self.finish()


class TerminalHandler(CellhopAPIHandler):
    @web.authenticated
    @authorized
    async def post(self, container_id):
        """A terminal (jupyter_server's, by name) whose shell runs inside the container: {"name": ...}.
        {"open": true} also asks the JupyterLab windows listening on the event stream to open its tab."""
        body = self.json_body()
        unknown = set(body) - {"open", "shell"}
        if unknown:
            raise web.HTTPError(400, f"unknown field(s) {', '.join(sorted(unknown))}; send {{\"open\": true}} "
                                     'or {"shell": ["bash", "-l"]}')
        manager = self.control_plane.manager
        container = manager.get(container_id)
        check_may_act_on(self.caller, container)
        terminals = self.settings.get("terminal_manager")
        if terminals is None:
            raise web.HTTPError(501, "this Jupyter server has no terminals (jupyter_server_terminals is not "
                                     "installed or terminals are disabled: ServerApp.terminals_enabled)")
        name = open_terminal(terminals, manager.runtime, container, body.get("shell"))  # on the loop: terminado's
        keep_alive(manager, container_id, lambda: name in terminals.terminals)  # its idle timeout waits
        if body.get("open"):
            self.control_plane.publish({"type": "terminal", "name": name, "container": container_id})
        self.write_json({"name": name, "container": container_id}, status=201)


async def follow_route(handler, container_id) -> None:
    """`GET containers/{id}/logs?follow=1[&tail=N]` (containers.ContainerLogsHandler hands it here): the log's
    last `tail` lines (default 100), then what it writes as it writes it, as JSON lines {"log": text}; ends
    with {"exited": true, "status": {...}} once the container has ended. `Accept: text/event-stream`: the same
    objects as server-sent events (`data: {...}`)."""
    import threading

    from ..log_follow import follow

    tail = handler.get_argument("tail", "100")
    if not (tail.isascii() and tail.isdigit()) or len(tail) > 6:
        raise web.HTTPError(400, f"tail={tail[:40]!r} must be a whole number of lines (0: only new output)")
    manager = handler.control_plane.manager
    container = manager.get(container_id)
    check_may_act_on(handler.caller, container)
    gone = threading.Event()
    events = "text/event-stream" in handler.request.headers.get("Accept", "")  # an EventSource's

    async def send(line: dict) -> None:
        if gone.is_set():
            return
        try:
            handler.write(f"data: {json.dumps(line)}\n\n" if events else json.dumps(line) + "\n")
            await handler.flush()
        except StreamClosedError:
            gone.set()

    handler.set_status(200)
    handler.set_header("Content-Type", "text/event-stream" if events else "application/x-ndjson")
    handler.set_header("Cache-Control", "no-cache")
    handler.set_header("X-Accel-Buffering", "no")
    handler.on_connection_close = gone.set
    await follow(manager, container, int(tail), send, gone)
    if not gone.is_set():
        handler.finish()


handlers = [
    (rf"containers/{_ID}/exec", ExecHandler),
    (rf"containers/{_ID}/terminal", TerminalHandler),
]
