"""`{base_url}cellhop/endpoints/{name}/...` asked for a WebSocket: the ASGI app of that endpoint takes it.

Same callers as over HTTP (endpoint_callers.py); a WebSocket opened with the login cookie alone must
come from this server's own origin (jupyter_server's rule), so another site cannot open one in the
user's name. Before the handshake the app is asked (its scope, as over HTTP, without the Jupyter
server's credentials): where it accepts, the handshake answers with its subprotocol and headers;
where it closes first, 403 and nothing more. Then the caller's messages and the app's cross through
the endpoint's container (endpoints_pool.Socket), which keeps one of its `concurrency` places for the
WebSocket until it closes. The container ends: close code 1011.

Routed ahead of the HTTP handler by `route` (a request that asks for `Upgrade: websocket`), so the
HTTP handler stays a plain one.
"""

from __future__ import annotations

import asyncio

from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.routing import Matcher, PathMatches, Rule
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from ...errors import CellhopError
from ..endpoints_link import BadAnswer, LinkClosed
from ..endpoints_pool import Socket
from .base import JsonErrors, KernelTokenAuth
from .endpoint_callers import ENDPOINT_PATH, ENDPOINTS_SETTING, EndpointCallerAuth, add_app_headers, asgi_scope

_UNSENDABLE_CODES = {1004, 1005, 1006, 1015}  # meaningful locally, never sent in a close frame


class EndpointSocketHandler(EndpointCallerAuth, KernelTokenAuth, JsonErrors, WebSocketMixin, WebSocketHandler,
                            JupyterHandler):
    _socket: Socket | None = None
    _reader: asyncio.Future | None = None

    @allow_unauthenticated  # who may call is the endpoint's to say (public=True): _authorize
    async def get(self, name, subpath=None):
        record = self._authorize(name)
        if not record["spec"].get("asgi"):
            raise web.HTTPError(400, f"endpoint {record['name']!r} is a function: WebSockets reach ASGI apps "
                                     "(cellhop.asgi) only")
        if not self.check_origin(self.request.headers.get("Origin")):
            raise web.HTTPError(403, "a WebSocket opened with the login cookie must come from this server's "
                                     "own pages")
        pool = self.settings[ENDPOINTS_SETTING].pool(record["name"])
        try:
            answer = await pool.call(asgi_scope(self, record["name"], subpath), "ws-open")
        except CellhopError as exc:  # before the handshake: an HTTP answer, as an HTTP call's
            return self.answer_error(exc)
        if not isinstance(answer, Socket):
            raise web.HTTPError(403, f"the app of endpoint {record['name']!r} refused the WebSocket "
                                     f"(close code {answer[3]})")
        self._socket = answer
        try:
            add_app_headers(self, [(k, v) for k, v in answer.headers if k.lower() != "content-type"
                                   and not k.lower().startswith("sec-websocket")])
            await super().get(name, subpath)  # the handshake, then the frames until it closes
        finally:
            await answer.close(self.close_code)

    def check_origin(self, origin: str | None = None) -> bool:
        """Any origin for a caller with a credential of its own (a token, a key) or none (a public
        endpoint); with the login cookie only, jupyter_server's own rule."""
        if self._endpoint_key is not None or self._cellhop_kernel or self.token_authenticated \
                or self.current_user is None:
            return True
        return super().check_origin(origin)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        chosen = self._socket.subprotocol if self._socket is not None else None
        return chosen if chosen in subprotocols else None

    def open(self, *args, **kwargs):
        super().open(*args, **kwargs)
        self._reader = asyncio.ensure_future(self._from_app())

    async def _from_app(self) -> None:
        try:
            while True:
                for message in await self._socket.receive():
                    if message[0] == "close":
                        code = message[1] if 1000 <= message[1] < 5000 and message[1] not in _UNSENDABLE_CODES \
                            else 1000
                        reason = message[2].encode()[:120].decode(errors="ignore")  # a close frame holds 123
                        self.close(code, reason or None)
                        return
                    await self.write_message(message[1], binary=message[0] == "bytes")
        except (LinkClosed, BadAnswer):
            self.close(1011, "the endpoint's container ended")
        except WebSocketClosedError:
            pass

    async def on_message(self, message):
        """The caller's message to the app; the next one is read once the app has room for this one."""
        try:
            await self._socket.send("bytes" if isinstance(message, bytes) else "text", message)
        except (LinkClosed, BadAnswer):
            self.close(1011, "the endpoint's container ended")

    def on_close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._socket is not None:
            asyncio.ensure_future(self._socket.close(self.close_code))


class _AsksForWebSocket(Matcher):
    """A path's rule that takes only requests asking for `Upgrade: websocket`."""

    def __init__(self, pattern: str):
        self.path = PathMatches(pattern)
        self.regex = self.path.regex

    def match(self, request):
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return None
        return self.path.match(request)

    def reverse(self, *args):
        return self.path.reverse(*args)


def route(web_app, pattern: str, handler) -> None:
    """Take WebSockets at `pattern` (under the server's base_url) ahead of the handlers added after this
    (the extension's own are added after its initialize_handlers)."""
    full = url_path_join(web_app.settings["base_url"], pattern)
    web_app.add_handlers(".*$", [Rule(_AsksForWebSocket(full), handler)])


upgrade_handlers = [(ENDPOINT_PATH, EndpointSocketHandler)]
