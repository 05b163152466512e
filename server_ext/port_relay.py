"""Relaying one HTTP request, or a connection after an Upgrade, between a tornado handler's client and a
server reached over a connected stream (a port inside a container: api/proxy.py; endpoints may use it
too). Nothing is rewritten: the request head is the caller's, the answer's status, headers (less the
hop-by-hop ones and less Set-Cookie of the Jupyter server's own cookies) and body pass as they come,
chunk by chunk, with backpressure both ways."""

from __future__ import annotations

import time

from tornado import httputil, web
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.iostream import IOStream, StreamClosedError

from ..errors import CellhopError
from .container_ports import PortClosedConnection

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "trailers", "transfer-encoding", "upgrade", "expect", "content-length"}
MAX_HEADER_BYTES = 64 * 1024  # of the server's answer's head
MAX_BODY_BYTES = 1 << 50  # streamed through, never held: no limit worth the name
CHUNK = 64 * 1024
XSRF_COOKIE = "_xsrf"


def is_jupyter_cookie(name: str, login_cookie: str) -> bool:
    """Whether a cookie is the Jupyter server's own (its login cookie, its XSRF cookie)."""
    return name in (login_cookie, XSRF_COOKIE) or name.startswith("username-")


class HttpRelay:
    """One request relayed to a server over `upstream` (a connected stream, closed at the end): its head,
    its body as it arrives (send_body, any number of times), then the server's answer passed to
    `handler`'s client as it arrives (status, headers less hop-by-hop ones and Set-Cookie of
    `login_cookie` or _xsrf, body chunk by chunk), then finished. `where` names the server in errors:
    PortClosedConnection (502) when it closed before answering; a connection cut midway closes the
    client's connection (nothing else can be said then)."""

    def __init__(self, handler: web.RequestHandler, upstream: IOStream, *, where: str, login_cookie: str = "",
                 activity: Activity | None = None):
        self.handler, self.upstream, self.where = handler, upstream, where
        self.connection = HTTP1Connection(upstream, True, HTTP1ConnectionParameters(
            no_keep_alive=True, chunk_size=CHUNK, max_header_size=MAX_HEADER_BYTES,
            max_body_size=MAX_BODY_BYTES, decompress=False))
        self.answer_delegate = _Answer(handler, login_cookie, activity)

    def _closed(self, exc: BaseException) -> PortClosedConnection:
        self.upstream.close()
        return PortClosedConnection(f"{self.where} closed the connection before it answered ({exc or 'closed'}); "
                                    "its log may say why")

    async def send_head(self, target: str, headers: httputil.HTTPHeaders) -> None:
        start = httputil.RequestStartLine(self.handler.request.method, target, "HTTP/1.1")
        try:
            await self.connection.write_headers(start, headers)
        except StreamClosedError as exc:
            raise self._closed(exc) from None

    async def send_body(self, chunk: bytes) -> None:
        try:
            await self.connection.write(chunk)
        except StreamClosedError as exc:
            raise self._closed(exc) from None

    async def answer(self) -> None:
        handler, request = self.handler, self.handler.request
        try:
            self.connection.finish()
            await self.connection.read_response(self.answer_delegate)
        except (StreamClosedError, httputil.HTTPInputError) as exc:
            if not handler._headers_written and not request.connection.stream.closed():
                raise self._closed(exc) from None
            request.connection.close()
            return
        finally:
            self.upstream.close()
        if self.answer_delegate.cut:
            request.connection.close()  # the client's side went away, or the server's mid-answer
        elif not handler._finished:
            handler.finish()


async def relay_http(handler: web.RequestHandler, upstream: IOStream, target: str, headers: httputil.HTTPHeaders, *,
                     where: str, login_cookie: str = "", activity: Activity | None = None) -> None:
    """HttpRelay in one call, for a request whose body tornado has already read (handler.request.body)."""
    relay = HttpRelay(handler, upstream, where=where, login_cookie=login_cookie, activity=activity)
    await relay.send_head(target, headers)
    if handler.request.body:
        await relay.send_body(handler.request.body)
    await relay.answer()


class _Answer(httputil.HTTPMessageDelegate):
    """The server's answer, passed on to the client as it arrives."""

    def __init__(self, handler: web.RequestHandler, login_cookie: str, activity: Activity | None):
        self.handler, self.login_cookie, self.activity = handler, login_cookie, activity
        self.cut = False

    def headers_received(self, start_line, headers):
        handler = self.handler
        handler.set_status(start_line.code, start_line.reason or None)
        for name in [n for n in handler._headers if n.lower() in ("content-type", "server", "date", "etag")]:
            handler.clear_header(name)
        named = {h.strip().lower() for h in headers.get("Connection", "").split(",")}
        seen = set()
        for name, value in headers.get_all():
            low = name.lower()
            if (low in HOP_BY_HOP and low != "content-length") or low in named:
                continue
            if low == "set-cookie" and is_jupyter_cookie(_cookie_name(value), self.login_cookie):
                continue  # the container may not set (or replace) the Jupyter server's own cookies
            if low not in seen:
                handler.clear_header(name)
                seen.add(low)
            handler.add_header(name, value)

    async def data_received(self, chunk):
        if self.activity is not None:
            self.activity.mark()
        try:
            self.handler.write(chunk)
            await self.handler.flush()
        except StreamClosedError:
            self.cut = True
            raise

    def finish(self):
        pass

    def on_connection_close(self):
        self.cut = True


class Activity:
    """Traffic to a container keeps it from idling out: manager.touch, at most every few seconds."""

    EVERY = 5.0

    def __init__(self, manager, container_id: str):
        self.manager, self.container_id, self.last = manager, container_id, 0.0

    def mark(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.EVERY:
            self.last = now
            try:
                self.manager.touch(self.container_id)
            except CellhopError:  # gone meanwhile: its connection ends on its own
                pass


def _cookie_name(set_cookie: str) -> str:
    return set_cookie.split("=", 1)[0].strip()


def cookies_without(header: str, login_cookie: str) -> str:
    """A Cookie header less the Jupyter server's cookies (kept byte for byte otherwise)."""
    kept = [part for part in header.split(";")
            if part.strip() and not is_jupyter_cookie(part.split("=", 1)[0].strip(), login_cookie)]
    return ";".join(kept).strip()


def without_jupyter_cookies(head: bytes, login_cookie: str, upgraded: bool = True) -> bytes:
    """An answer's head less Set-Cookie of the Jupyter server's cookies; not upgraded: `Connection: close`."""
    lines = head.split(b"\r\n")
    kept = [line for line in lines
            if not (line.lower().startswith(b"set-cookie:")
                    and is_jupyter_cookie(_cookie_name(line[11:].decode("latin-1")), login_cookie))
            and (upgraded or not line.lower().startswith(b"connection:"))]
    if not upgraded:
        kept.insert(1, b"Connection: close")
    return b"\r\n".join(kept)


async def pump(source: IOStream, sink: IOStream, activity: Activity) -> None:
    """Bytes from `source` to `sink` as they come (a connection after its Upgrade), until either closes."""
    try:
        while True:
            data = await source.read_bytes(CHUNK, partial=True)
            activity.mark()
            await sink.write(data)
    except StreamClosedError:
        pass
    finally:
        source.close()
        sink.close()
