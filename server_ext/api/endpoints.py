"""REST: `endpoints` (GET list), `endpoints/{name}` (GET detail, PUT deploy, DELETE),
`endpoints/{name}/keys` (POST: a new key, shown once), `endpoints/{name}/logs` (GET);
and the endpoints themselves at `{base_url}cellhop/endpoints/{name}/` (`serving_handlers`).

A deploy is `PUT endpoints/{name}?spec=<JSON>` with the function's cloudpickle bytes as the body
(application/octet-stream): the server stores them and never unpickles them.
"""

from __future__ import annotations

import asyncio
import json

from jupyter_server.auth import User
from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from jupyter_server.base.call_context import CallContext
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError

from ...errors import CellhopError, error_body, http_status
from ...endpoint_errors import EndpointBusy
from ..endpoints_pool import Stream
from ..endpoints_store import KEY_PREFIX
from ..kernel_tokens import USER
from .base import CellhopAPIHandler, JsonErrors, KernelTokenAuth, in_thread, parse_json

ENDPOINTS_SETTING = "cellhop_endpoints"
MAX_CODE_BYTES = 64 << 20
_NAME = r"(?P<name>[^/]+)"


class _EndpointsAPI(CellhopAPIHandler):
    @property
    def endpoints(self):
        return self.settings[ENDPOINTS_SETTING]


class EndpointsHandler(_EndpointsAPI):
    @web.authenticated
    @authorized
    async def get(self):
        self.endpoints.started()
        self.write_json({"endpoints": self.endpoints.list_view()})


class EndpointHandler(_EndpointsAPI):
    @web.authenticated
    @authorized
    async def get(self, name):
        self.write_json(self.endpoints.view(name))

    @web.authenticated
    @authorized
    async def put(self, name):
        code = self.request.body or b""
        if not code:
            raise web.HTTPError(400, "send the function's cloudpickle bytes as the body (cellhop.endpoint's "
                                     "deploy() does)")
        if len(code) > MAX_CODE_BYTES:
            raise web.HTTPError(413, f"the function is {len(code)} bytes pickled; an endpoint takes at most "
                                     f"{MAX_CODE_BYTES >> 20} MiB: load large data in the function from a volume")
        spec = parse_json(self.get_argument("spec", "{}"), "the spec parameter")
        self.write_json(await self.endpoints.deploy(name, code, spec, self.caller), status=201)

    @web.authenticated
    @authorized
    async def delete(self, name):
        self.write_json(await self.endpoints.delete(name, self.caller))


class EndpointKeysHandler(_EndpointsAPI):
    @web.authenticated
    @authorized
    async def post(self, name):
        key = await in_thread(self.endpoints.new_key, name, self.caller)
        self.write_json({"name": name, "key": key,
                         "use": "Authorization: Bearer <key>; it calls this endpoint and nothing else"}, 201)


class EndpointLogsHandler(_EndpointsAPI):
    @web.authenticated
    @authorized
    async def get(self, name):
        tail = self.get_argument("tail", "200")
        if not (tail.isascii() and tail.isdigit()) or not 1 <= int(tail) <= 100_000:
            raise web.HTTPError(400, "tail must be a whole number of lines from 1 to 100000")
        self.write_json(await in_thread(self.endpoints.logs, name, self.caller, int(tail)))


handlers = [
    (r"endpoints", EndpointsHandler),
    (rf"endpoints/{_NAME}", EndpointHandler),
    (rf"endpoints/{_NAME}/keys", EndpointKeysHandler),
    (rf"endpoints/{_NAME}/logs", EndpointLogsHandler),
]

_KEY_USER = User(username="cellhop-endpoint-key", name="cellhop endpoint key")


class EndpointCallHandler(KernelTokenAuth, JsonErrors, APIHandler):
    """`{base_url}cellhop/endpoints/{name}/`: POST a JSON object (or GET with query parameters) to call it."""

    _endpoint_key: str | None = None

    async def prepare(self) -> None:
        scheme, _, value = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip().startswith(KEY_PREFIX):
            # an endpoint key: checked against the endpoint in _authorize; it is no Jupyter credential
            CallContext.set(CallContext.JUPYTER_HANDLER, self)
            if not self.check_host():
                raise web.HTTPError(403)
            self._endpoint_key = value.strip()
            self._token_authenticated = True
            self.current_user = self._jupyter_current_user = _KEY_USER
            return
        if self._prepare_kernel():
            return
        await super().prepare()

    def check_xsrf_cookie(self):
        if getattr(self, "_jupyter_current_user", None) is None:
            return None  # not authenticated: no ambient credential to forge (only a public endpoint answers)
        return super().check_xsrf_cookie()

    def _authorize(self, name: str) -> dict:
        endpoints = self.settings[ENDPOINTS_SETTING]
        try:
            record = endpoints.record(name)
        except CellhopError:  # a caller who may not call it does not learn whether it exists either
            if self._endpoint_key is None and (self._cellhop_kernel or self.current_user is not None):
                raise
            raise web.HTTPError(403, f"not authorized to call endpoint {name[:64]!r}") from None
        if self._endpoint_key is not None:
            caller = None
        elif self._cellhop_kernel:
            caller = self.caller
        elif self.current_user is not None and self.authorizer.is_authorized(self, self.current_user,
                                                                             "write", "cellhop"):
            caller = USER
        else:
            caller = None
        if not endpoints.may_call(record, caller, self._endpoint_key):
            raise web.HTTPError(403, f"not authorized to call endpoint {record['name']!r}: send the Jupyter "
                                     "server's token or `Authorization: Bearer <key>` with a key of this "
                                     "endpoint (`cellhop endpoint key NAME`)")
        return record

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
            await self._call(record["name"], _scope(self, record["name"], subpath), "asgi")
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
        except EndpointBusy as exc:
            self.set_header("Retry-After", "1")
            return self._error(exc)
        except CellhopError as exc:
            return self._error(exc)
        self.set_header("Content-Type", "application/json")
        if isinstance(answer, tuple) and answer[0] == "asgi":
            _, status, headers, body = answer
            self.set_status(status)
            content_type = "application/octet-stream"
            for key, value in headers:
                if key.lower() == "content-type":
                    content_type = value
                elif key.lower() not in _HOP_BY_HOP:
                    self.add_header(key, value)
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
            for key, value in headers:
                if key.lower() == "content-type":
                    content_type = value
                elif key.lower() not in _HOP_BY_HOP:
                    self.add_header(key, value)
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

    def _error(self, exc: CellhopError) -> None:
        self.set_status(http_status(exc))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(error_body(exc)))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, (CellhopError, ValueError)) and not self._finished:
            self.send_error(http_status(e), exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive"}
_NOT_FORWARDED = {"authorization", "cookie", "x-xsrftoken"}  # Jupyter's credentials stay with Jupyter


def _scope(handler, name: str, subpath: str | None) -> dict:
    """An ASGI app's request, as the container rebuilds its scope (bytes travel as latin-1 text)."""
    request = handler.request
    root = url_path_join(handler.base_url, "cellhop", "endpoints", name)
    query = "&".join(part for part in request.query.split("&")
                     if part and not (handler.token_authenticated and part.startswith("token=")))
    host, _, port = request.host.rpartition(":")
    return {"scope": {"type": "http", "http_version": "1.1", "method": request.method, "scheme": request.protocol,
                      "path": subpath or "/", "root_path": root.rstrip("/"), "query_string": query,
                      "headers": [(k.lower(), v) for k, v in request.headers.get_all()
                                  if k.lower() not in _NOT_FORWARDED],
                      "client": [request.remote_ip, 0],
                      "server": [host or request.host, int(port) if port.isdigit() else 80]},
            "body": request.body or b""}


serving_handlers = [
    (rf"/cellhop/endpoints/{_NAME}(?P<subpath>/.*)?", EndpointCallHandler),
]
