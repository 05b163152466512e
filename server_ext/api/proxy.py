"""`{base_url}cellhop/proxy/<container id>/<port>/<path>`: a server listening on a port inside a
container, reached through the Jupyter server, over HTTP/1.1 and WebSocket, behind its authentication.

- Who gets in: whoever jupyter_server authenticates (its token, password or login cookie), and a
  kernel's own token (kernel_tokens.py) for the containers that kernel started, no other's.
  Unsafe methods (POST, PUT, PATCH, DELETE) with only the login cookie need jupyter_server's XSRF
  token or a request that says it comes from this server's own origin (Origin, else Referer,
  present and matching, as jupyter_server's check_origin rules it): a proxied app's own page makes
  such requests; another site cannot. A WebSocket with the login cookie needs a matching Origin.
- How the port is reached: the runtime connects from inside the container's network
  (runtime.connect_port, container_ports.py); nothing is published on the host.
- What passes: the request line's path after `<port>` and its query, unchanged (so relative links
  work: the prefix ends with `<port>/`), its body, its headers less the hop-by-hop ones and less the
  Jupyter server's credentials (its token, a kernel's token, the login and XSRF cookies: the
  container never sees them); the answer's status, headers (no cookie of the Jupyter server's) and
  body, streamed as it comes, never rewritten (port_relay.py). A WebSocket (or any Upgrade) becomes
  a byte pipe once the container's server answers the upgrade.
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import unquote_plus, urlparse

from jupyter_server.auth.decorator import authorized
from jupyter_server.auth.utils import HTTP_METHOD_TO_AUTH_ACTION
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import origin_matches_pat
from tornado import httputil, web
from tornado.iostream import IOStream, StreamClosedError, UnsatisfiableReadError

from ...container import Phase
from ...errors import CellhopError, http_status
from ..container_ports import PortClosedConnection
from ..kernel_tokens import kernel_of
from ..port_relay import (CHUNK, HOP_BY_HOP, MAX_HEADER_BYTES, Activity, HttpRelay, cookies_without, pump,
                          relay_http, without_jupyter_cookies)
from .base import AUTH_RESOURCE, KERNEL_TOKEN_SETTING, JsonErrors, KernelTokenAuth, in_thread
from .base import check_may_act_on

PREFIX = "cellhop/proxy/"
_ID_SYNTAX = re.compile(r"[A-Za-z0-9_-]{1,64}")


@web.stream_request_body
class PortProxyHandler(KernelTokenAuth, JsonErrors, JupyterHandler):
    """Every method of one URL space; a GET asking for an Upgrade is tunnelled. A request body is passed
    on as it arrives (never held whole): the request is authenticated, authorized and its container
    connected before the body is read."""

    auth_resource = AUTH_RESOURCE
    _upstream: IOStream | None = None
    _relay: HttpRelay | None = None

    async def prepare(self):
        self._transforms = []  # no compression of our own: the container's answer passes as it came
        if not self._prepare_kernel():
            await super().prepare()  # jupyter_server's authentication (a GET without it: the login page)
            if self._finished:
                return
        headers = self.request.headers
        if "Content-Length" in headers or "Transfer-Encoding" in headers:
            await self._open_for_body()

    async def _open_for_body(self) -> None:
        """A request with a body: check what the method's decorators check, connect, send the head."""
        if self.current_user is None:
            raise web.HTTPError(403)
        action = HTTP_METHOD_TO_AUTH_ACTION.get(self.request.method, "write")
        if not self.authorizer.is_authorized(self, self.current_user, action, AUTH_RESOURCE):
            raise web.HTTPError(403, "not authorized for the cellhop API")
        if self.request.headers.get("Upgrade"):
            raise web.HTTPError(400, "a request with a body cannot ask for an Upgrade")
        container, port_number, target = self._target(**self.path_kwargs)
        if target is None:
            return  # answered with a redirect; the body is dropped
        if "Content-Length" not in self.request.headers and self.request.method not in ("POST", "PUT", "PATCH"):
            raise web.HTTPError(411, f"a {self.request.method} with a body needs a Content-Length")
        upstream = await self._connect(container, port_number)
        self._relay = HttpRelay(self, upstream, where=self._where(container.id, port_number),
                                login_cookie=self.identity_provider.get_cookie_name(self), activity=self.activity)
        await self._relay.send_head(target, self._upstream_headers(upgrade=False))

    async def data_received(self, chunk: bytes) -> None:
        if self._relay is not None:
            await self._relay.send_body(chunk)

    def on_finish(self):
        if self._upstream is not None and self._relay is not None:
            self._upstream.close()

    @staticmethod
    def _where(container_id: str, port: int) -> str:
        return f"the server on port {port} in container {container_id}"

    def compute_etag(self):
        return None  # the container's server decides about ETags and 304s

    def check_xsrf_cookie(self):
        """jupyter_server's rule (a token needs no XSRF token), and besides its XSRF token, a request
        whose Origin (or Referer) is this server's own passes: the proxied app's pages make it."""
        if not hasattr(self, "_jupyter_current_user") or self._cellhop_kernel:
            return None
        try:
            return super().check_xsrf_cookie()
        except web.HTTPError:
            if self._same_origin():
                return None
            raise web.HTTPError(403, "a request with the login cookie but neither Jupyter's XSRF token nor "
                                     "an Origin of this server's: refused as cross-site") from None

    def _same_origin(self) -> bool:
        """Whether the request says it comes from a page this server allows (Origin, else Referer): its own
        origin, or what c.ServerApp.allow_origin / allow_origin_pat allow, as jupyter_server rules it."""
        origin = self.request.headers.get("Origin")
        if origin is None:
            referer = urlparse(self.request.headers.get("Referer", ""))
            origin = f"{referer.scheme}://{referer.netloc}" if referer.scheme and referer.netloc else ""
        origin = origin.lower()
        if not origin or origin == "null":
            return False
        if self.allow_origin == "*" or urlparse(origin).netloc == self.request.headers.get("Host", "").lower():
            return True
        if self.allow_origin:
            return self.allow_origin == origin
        return bool(self.allow_origin_pat) and origin_matches_pat(self.allow_origin_pat, origin)

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, (CellhopError, ValueError)) and not self._finished:
            if self._headers_written:  # the answer had begun: all the client can be told is a cut connection
                self.request.connection.close()
                return
            self.send_error(http_status(e), exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)

    def on_connection_close(self):
        if self._upstream is not None:
            self._upstream.close()

    # -- what is asked -------------------------------------------------------------------------------
    def _target(self, container_id: str, port: str, rest: str | None) -> tuple[object, int, str | None]:
        """(the container, the port, the raw path and query to send it; None: redirect to the prefix with '/')."""
        if not (port.isascii() and port.isdigit()) or len(port) > 5 or not 1 <= int(port) <= 65535:
            raise web.HTTPError(400, f"port {port[:20]!r} is not a TCP port; give a number from 1 to 65535, as in "
                                     f"{PREFIX}<container id>/8000/")
        if not _ID_SYNTAX.fullmatch(container_id):
            raise web.HTTPError(404, "no such container; list them with `%gpu` or GET cellhop/api/containers")
        container = self.control_plane.manager.get(container_id)  # ContainerNotFound: 404
        if container.standby:  # a standby runs nobody's code yet
            raise web.HTTPError(404, f"no container {container_id!r}; list them with `%gpu`")
        check_may_act_on(self.caller, container)
        if container.phase != Phase.READY:
            raise web.HTTPError(409, f"container {container_id} is {container.phase.value}; its ports are reachable "
                                     "while it is ready")
        self.activity = Activity(self.control_plane.manager, container.id)
        self.activity.mark(force=True)  # use of its ports is use of the container: its idle timeout starts again
        if rest is None:
            return container, int(port), None
        # the path as it came (not decoded: %2F stays %2F), after the prefix this route matched
        prefix = f"{self.base_url.rstrip('/')}/{PREFIX}"
        raw = self.request.path
        if not raw.startswith(prefix):
            raise web.HTTPError(404)
        raw_id, _, path = raw[len(prefix):].partition("/")  # past the container id
        raw_port, _, path = path.partition("/")  # past the port
        self._prefix = f"{prefix}{raw_id}/{raw_port}"
        target = "/" + path
        query = self._query_without_token()
        return container, int(port), target + ("?" + query if query else "")

    def _query_without_token(self) -> str:
        query = self.request.query
        if "token=" not in query:
            return query
        kept = []  # the other parameters exactly as they were written
        for part in query.split("&"):
            key, _, value = part.partition("=")
            if not (unquote_plus(key) == "token" and self._is_credential(unquote_plus(value))):
                kept.append(part)
        return "&".join(kept)

    def _is_credential(self, token: str) -> bool:
        """Whether `token` is the Jupyter server's token or a kernel's (never forwarded to a container)."""
        server_token = getattr(self.identity_provider, "token", "") or ""
        key = self.settings.get(KERNEL_TOKEN_SETTING)
        return bool(token) and (token == server_token or (key and kernel_of(key, token) is not None))

    def _upstream_headers(self, upgrade: bool) -> httputil.HTTPHeaders:
        incoming = self.request.headers
        named = {h.strip().lower() for h in incoming.get("Connection", "").split(",")}
        headers = httputil.HTTPHeaders()
        login_cookie = self.identity_provider.get_cookie_name(self)
        for name, value in incoming.get_all():
            low = name.lower()
            if low in HOP_BY_HOP or (low in named and low != "upgrade"):
                continue
            if low == "authorization":
                scheme, _, credential = value.partition(" ")
                if scheme.lower() in ("token", "bearer") and self._is_credential(credential.strip()):
                    continue
            if low == "cookie":
                value = cookies_without(value, login_cookie)
                if not value:
                    continue
            headers.add(name, value)
        if upgrade:
            headers["Connection"] = "Upgrade"
            headers["Upgrade"] = incoming.get("Upgrade", "")
        else:
            headers["Connection"] = "close"
            if "Content-Length" in incoming:  # else a body comes chunked (HttpRelay frames it), or none
                headers["Content-Length"] = incoming["Content-Length"]
            elif "Transfer-Encoding" not in incoming and self.request.method in ("POST", "PUT", "PATCH"):
                headers["Content-Length"] = "0"
        headers["X-Forwarded-Proto"] = self.request.protocol
        headers["X-Forwarded-Host"] = incoming.get("Host", "")
        headers["X-Forwarded-Prefix"] = self._prefix
        return headers

    async def _connect(self, container, port: int) -> IOStream:
        runtime = self.control_plane.manager.runtime
        sock = await in_thread(runtime.connect_port, container, port)
        stream = IOStream(sock, max_buffer_size=MAX_HEADER_BYTES + 4 * CHUNK)
        self._upstream = stream
        return stream

    # -- the methods ------------------------------------------------------------------------------------
    @web.authenticated
    @authorized
    async def get(self, container_id, port, rest=None):
        if self.request.headers.get("Upgrade"):
            await self._tunnel(container_id, port, rest)
        else:
            await self._proxy(container_id, port, rest)

    @web.authenticated
    @authorized
    async def head(self, container_id, port, rest=None):
        await self._proxy(container_id, port, rest)

    @web.authenticated
    @authorized
    async def post(self, container_id, port, rest=None):
        await self._proxy(container_id, port, rest)

    @web.authenticated
    @authorized
    async def put(self, container_id, port, rest=None):
        await self._proxy(container_id, port, rest)

    @web.authenticated
    @authorized
    async def patch(self, container_id, port, rest=None):
        await self._proxy(container_id, port, rest)

    @web.authenticated
    @authorized
    async def delete(self, container_id, port, rest=None):
        await self._proxy(container_id, port, rest)

    @web.authenticated
    @authorized
    async def options(self, container_id, port, rest=None):
        await self._proxy(container_id, port, rest)

    async def _proxy(self, container_id: str, port: str, rest: str | None) -> None:
        container, port_number, target = self._target(container_id, port, rest)
        if target is None:
            query = self.request.query
            self.redirect(self.request.path + "/" + ("?" + query if query else ""))
            return
        if self._relay is not None:  # its head went when the request came, its body as it arrived
            await self._relay.answer()
            return
        upstream = await self._connect(container, port_number)
        await relay_http(self, upstream, target, self._upstream_headers(upgrade=False),
                         where=self._where(container_id, port_number),
                         login_cookie=self.identity_provider.get_cookie_name(self), activity=self.activity)

    async def _tunnel(self, container_id: str, port: str, rest: str | None) -> None:
        """An Upgrade (a WebSocket): send the request, relay the container's answer, then pipe bytes."""
        container, port_number, target = self._target(container_id, port, rest)
        if target is None:
            raise web.HTTPError(400, f"a WebSocket goes to a path under {PREFIX}{container_id}/{port}/")
        if not (self.token_authenticated or self._cellhop_kernel) and \
                not (self.request.headers.get("Origin") and self._same_origin()):
            raise web.HTTPError(403, "a WebSocket with the login cookie must come from a page of this server "
                                     "(its Origin did not match)")
        upstream = await self._connect(container, port_number)
        head = f"{self.request.method} {target} HTTP/1.1\r\n"
        for name, value in self._upstream_headers(upgrade=True).get_all():
            head += f"{name}: {value}\r\n"
        try:
            await upstream.write(head.encode("latin-1") + b"\r\n")
            answer = await upstream.read_until(b"\r\n\r\n", max_bytes=MAX_HEADER_BYTES)
        except (StreamClosedError, UnsatisfiableReadError):
            upstream.close()
            raise PortClosedConnection(f"the server on port {port_number} in container {container_id} did not answer the "
                            "upgrade (closed, or a head over 64 KiB)") from None
        upgraded = answer.split(b" ", 2)[1:2] == [b"101"]
        answer = without_jupyter_cookies(answer, self.identity_provider.get_cookie_name(self), upgraded)
        self._auto_finish = False  # the connection is ours from here: no HTTP answer follows
        client = self.request.connection.detach()
        self.log.info("cellhop: proxy tunnel to port %d in container %s (%s)", port_number, container_id,
                      answer.split(b"\r\n", 1)[0].decode("latin-1", "replace"))
        try:
            await client.write(answer)
        except StreamClosedError:
            upstream.close()
            return
        if not upgraded:  # refused: its answer goes back, and nothing more the client sends goes on
            client.set_close_callback(upstream.close)
            await pump(upstream, client, self.activity)
            return
        await asyncio.gather(pump(client, upstream, self.activity), pump(upstream, client, self.activity))


handlers = [
    (r"(?P<container_id>[^/]+)/(?P<port>[^/]+)(?P<rest>/.*)?", PortProxyHandler),
]
