"""`{base_url}cellhop/endpoints/{name}/`: an endpoint called over HTTP. A function: POST a JSON object (or
GET with query parameters), answered with the JSON of its return value (a generator: JSON lines as they
come). An ASGI app: any method and path under it, answered as the app answers (streamed as it sends).
WebSockets to an ASGI app: endpoint_socket.py.
"""

from __future__ import annotations

import asyncio

from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.iostream import StreamClosedError

from ...errors import CellhopError
from ..endpoints_pool import Stream
from .base import JsonErrors, KernelTokenAuth, parse_json
from .endpoint_callers import ENDPOINT_PATH, ENDPOINTS_SETTING, EndpointCallerAuth, add_app_headers, asgi_scope


class EndpointCallHandler(EndpointCallerAuth, KernelTokenAuth, JsonErrors, APIHandler):
    """`{base_url}cellhop/endpoints/{name}/`: POST a JSON object (or GET with query parameters) to call it."""

    @allow_unauthenticated
    async def get(self, name, subpath=None):
        if await self._served_as_app(name, subpath):
            return
        kwargs = {k: self.get_argument(k) for k in self.request.arguments
                  if not (k == "token" and self.token_authenticated)}
        await self._call(name, kwargs)

    @allow_unauthenticated
    async def post(self, name, subpath=None):
        if await self._served_as_app(name, subpath):
            return
        body = parse_json(self.request.body or b"{}")
        if not isinstance(body, dict):
            raise web.HTTPError(400, "send a JSON object: its fields are the function's keyword arguments")
        await self._call(name, body)

    @allow_unauthenticated
    async def put(self, name, subpath=None):
        if not await self._served_as_app(name, subpath):
            raise web.HTTPError(405, "call a function endpoint with POST (or GET)")

    patch = delete = put

    async def _served_as_app(self, name: str, subpath: str | None) -> bool:
        """Authorize; serve an ASGI app's request (True), or check that a function is called at its root."""
        record = self._authorize(name)
        if record["spec"].get("asgi"):
            await self._call(record["name"], asgi_scope(self, record["name"], subpath), "asgi")
            return True
        if subpath not in (None, "", "/"):
            raise web.HTTPError(404, f"endpoint {record['name']!r} is a function: call it at "
                                     f"cellhop/endpoints/{record['name']}/")
        return False

    def on_connection_close(self) -> None:
        """The caller went away: a request still queued or running for it is called off."""
        self._gone = True
        task = getattr(self, "_task", None)
        if task is not None and not task.done():
            task.cancel()

    async def _call(self, name: str, kwargs: dict, op: str = "call") -> None:
        pool = self.settings[ENDPOINTS_SETTING].pool(name)
        self._task = asyncio.ensure_future(pool.call(kwargs, op))
        try:
            answer = await self._task
        except asyncio.CancelledError:
            if getattr(self, "_gone", False):
                return  # nobody to answer
            raise
        except CellhopError as exc:
            return self.answer_error(exc)
        self.set_header("Content-Type", "application/json")
        if isinstance(answer, tuple) and answer[0] == "asgi":
            _, status, headers, body = answer
            self.set_status(status)
            content_type = add_app_headers(self, headers) or "application/octet-stream"
            self.finish(body, set_content_type=content_type)  # APIHandler.finish would say JSON
            return
        if not isinstance(answer, Stream):
            status, text = answer
            self.set_status(status)
            self.finish(text)
            return
        content_type = "application/x-ndjson"
        if answer.head is not None:  # an ASGI app's streamed response
            status, headers, first = answer.head
            self.set_status(status)
            content_type = add_app_headers(self, headers) or content_type
            if first:
                self.write(first)
        else:
            self.set_header("Cache-Control", "no-cache")
        self.set_header("Content-Type", content_type)
        chunks = answer.chunks()
        try:
            if answer.head is not None and answer.head[2]:
                await self.flush()  # the first part now, whenever the rest comes
            async for text in chunks:
                self.write(text)
                await self.flush()
        except StreamClosedError:
            pass
        finally:
            await chunks.aclose()
        if not self._finished:
            self.finish(set_content_type=content_type)


serving_handlers = [(ENDPOINT_PATH, EndpointCallHandler)]
