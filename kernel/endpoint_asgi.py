"""The container's side of `cellhop.asgi`: a whole ASGI app (FastAPI, Starlette, a bare ASGI callable)
served at `{base_url}cellhop/endpoints/<name>/...`, with no port and no HTTP server in the container.

The server turns each HTTP request into an ASGI scope and its body and sends them in an apply
request (like a function endpoint's call); here the app runs on an event loop of its own (a thread
made once per container, after the lifespan startup where the app has one), and the answer goes
back as (status, headers, body); a response still sending its body when its first part is there is
streamed, part by part, as a generator endpoint's items are. A WebSocket is a `Socket`: the app's
messages and the caller's cross in the server's apply requests ("ws-recv", "ws-send", "ws-close").

Nothing here holds the container kernel's main thread: each request is answered later (answer_later.py),
when the app's loop has the answer, so one slow response or an open WebSocket does not hold back the
container's other requests.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import traceback
from concurrent.futures import Future

from .answer_later import AnswerLater

STARTUP_TIMEOUT = 60.0


def make_app(app_or_factory):
    """The ASGI app: `app_or_factory` itself (a callable taking scope, receive, send), or what calling it
    with no arguments returns (a factory: the app is made in the container, once)."""
    try:
        params = [p for p in inspect.signature(app_or_factory).parameters.values()
                  if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = [None] * 3
    return app_or_factory() if not params else app_or_factory


class AsgiRunner:
    """One app, on its own event loop thread, answering HTTP requests (`respond`) and WebSockets."""

    def __init__(self, app_or_factory):
        self.app = make_app(app_or_factory)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="cellhop-asgi", daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._startup(), self.loop).result(STARTUP_TIMEOUT + 1)

    async def _startup(self) -> None:
        """The lifespan startup, where the app takes one (an app that raises on a lifespan scope has none)."""
        started = asyncio.Event()
        failed: list[str] = []
        messages: asyncio.Queue = asyncio.Queue()
        await messages.put({"type": "lifespan.startup"})

        async def send(message):
            if message["type"] == "lifespan.startup.failed":
                failed.append(message.get("message", ""))
            if message["type"].startswith("lifespan.startup"):
                started.set()

        task = asyncio.ensure_future(self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                              messages.get, send))
        waiter = asyncio.ensure_future(started.wait())
        await asyncio.wait({task, waiter}, timeout=STARTUP_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done() and not task.cancelled() and task.exception() is not None:
            return  # no lifespan support
        if failed:
            raise RuntimeError(f"the ASGI app's startup failed: {failed[0]}")

    def respond(self, scope: dict, body: bytes) -> AnswerLater:
        """An HTTP request: later ("asgi", status, headers, body) for a response that ended by then, else
        ("asgi-stream", response, status, headers, body so far): the server reads the rest part by part
        (`response.next_part()`)."""
        response = Response(self.loop)
        asyncio.run_coroutine_threadsafe(self._http(scope, body, response), self.loop)
        return AnswerLater(asyncio.run_coroutine_threadsafe(response.head(), self.loop))

    def websocket(self, scope: dict) -> AnswerLater:
        """A WebSocket: later ("ws", socket, "accept", subprotocol, headers) once the app accepted it,
        or ("ws", None, "close", code, reason) where it closed it first (the caller then gets a 403)."""
        socket = Socket(self.loop)
        asyncio.run_coroutine_threadsafe(socket.run(self.app, _asgi_scope(scope, "websocket")), self.loop)
        return AnswerLater(socket.decided)

    async def _http(self, scope: dict, body: bytes, response: Response) -> None:
        received = False

        async def receive():
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": body, "more_body": False}
            await response.gone.wait()  # the app waits for the caller to go away
            return {"type": "http.disconnect"}

        async def send(message):
            if response.gone.is_set():
                raise OSError("the caller went away")
            if message["type"] == "http.response.start":
                response.events.put_nowait(("start", int(message.get("status", 200)), _text_headers(message)))
            elif message["type"] == "http.response.body":
                response.events.put_nowait(("body", bytes(message.get("body", b"")), bool(message.get("more_body"))))

        try:
            await self.app(_asgi_scope(scope, "http"), receive, send)
        except Exception as exc:
            if not response.gone.is_set():
                traceback.print_exc()  # to the container's log
            response.events.put_nowait(("error", type(exc).__name__))
        finally:
            response.events.put_nowait(("end",))


def _asgi_scope(scope: dict, kind: str) -> dict:
    """The scope as the app takes it, from the server's (bytes travel as latin-1 text)."""
    made = {**scope, "type": kind, "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in scope["headers"]],
            "query_string": scope["query_string"].encode("latin-1"), "asgi": {"version": "3.0"}}
    if kind == "websocket":
        made.pop("method", None)
        made["scheme"] = {"https": "wss", "http": "ws"}.get(scope.get("scheme"), scope.get("scheme", "ws"))
        made["subprotocols"] = [p.strip() for k, v in scope["headers"] if k == "sec-websocket-protocol"
                                for p in v.split(",") if p.strip()]
    return made


def _text_headers(message: dict) -> list[list[str]]:
    return [[bytes(k).decode("latin-1"), bytes(v).decode("latin-1")] for k, v in message.get("headers", [])]


class Response:
    """What an app sent for one HTTP request; read on the app's loop, through futures from other threads."""

    def __init__(self, loop):
        self.loop = loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.gone = asyncio.Event()  # the caller went away, or the response ended

    async def head(self):
        status, headers, chunks = None, [], []
        while True:
            event = await self.events.get()
            if event[0] == "start":
                status, headers = event[1], event[2]
            elif event[0] == "body":
                chunks.append(event[1])
                if not event[2]:
                    return self._done(status, headers, chunks)
                if self.events.empty():
                    return ("asgi-stream", self, status, headers, b"".join(chunks))
            else:  # error or end before the body ended
                if status is None:
                    self.gone.set()
                    return ("value", 500, json.dumps({"error": event[1] if event[0] == "error" else "NoResponse",
                                                      "message": "the ASGI app sent no response; its log says "
                                                                 "why (`cellhop endpoint logs NAME`)"}))
                return self._done(status, headers, chunks)

    def _done(self, status, headers, chunks):
        self.gone.set()
        return ("asgi", status or 500, headers, b"".join(chunks))

    def next_part(self) -> AnswerLater:
        """Later, the body's next part (whatever came by then, at least one part): (bytes, ended)."""
        return AnswerLater(asyncio.run_coroutine_threadsafe(self._next_part(), self.loop))

    async def _next_part(self) -> tuple[bytes, bool]:
        chunks = [await self.events.get()]
        while not self.events.empty():
            chunks.append(self.events.get_nowait())
        parts = []
        for event in chunks:
            if event[0] == "body":
                parts.append(event[1])
                if not event[2]:
                    self.gone.set()
                    return b"".join(parts), True
            elif event[0] in ("error", "end"):
                self.gone.set()
                return b"".join(parts), True
        return b"".join(parts), False

    def close(self) -> None:
        """The caller went away: the app's next receive() says so, its next send() fails."""
        self.loop.call_soon_threadsafe(self.gone.set)


ACCEPT_TIMEOUT = 60.0  # seconds an app has to accept (or close) a WebSocket; then the caller gets a 403
MAX_WAITING = 64  # a WebSocket's messages from the caller the app has not read yet; past it the caller waits
MAX_BATCH = 1 << 20  # bytes of the app's messages one read gives the server at most (it reads again for more)


class Socket:
    """One WebSocket of an ASGI app, on the app's loop: what the caller sends waits in `incoming` for the
    app's receive(), what the app sends waits in `outgoing` for the server's next read (`serve`)."""

    def __init__(self, loop):
        self.loop = loop
        self.decided: Future = Future()  # accepted or closed before that
        self.incoming: asyncio.Queue = asyncio.Queue(MAX_WAITING)
        self.outgoing: asyncio.Queue = asyncio.Queue()
        self.ended = False  # the app closed it, returned, or failed

    async def run(self, app, scope: dict) -> None:
        self.incoming.put_nowait({"type": "websocket.connect"})
        self.loop.call_later(ACCEPT_TIMEOUT, self._accept_overdue)
        code = 1000
        try:
            await app(scope, self.incoming.get, self._send)
        except Exception:  # the app failed: the caller gets 1011 (or a 403 before it accepted)
            traceback.print_exc()  # to the container's log
            code = 1011
        finally:
            self._end(code, "")

    async def _send(self, message: dict) -> None:
        kind = message["type"]
        if self.ended:
            raise OSError("the WebSocket is closed")
        if kind == "websocket.accept":
            if not self.decided.done():
                self.decided.set_result(("ws", self, "accept", message.get("subprotocol"), _text_headers(message)))
        elif kind == "websocket.close":
            self._end(int(message.get("code", 1000)), str(message.get("reason") or ""))
        elif kind == "websocket.send":
            if not self.decided.done():
                raise RuntimeError("an ASGI app sent on a WebSocket it had not accepted")
            if message.get("bytes") is not None:
                self.outgoing.put_nowait(("bytes", bytes(message["bytes"])))
            else:
                self.outgoing.put_nowait(("text", str(message.get("text") or "")))
        else:
            raise RuntimeError(f"cellhop does not serve the ASGI message {kind!r} on a WebSocket")

    def _accept_overdue(self) -> None:
        if not self.decided.done():
            self._end(1011, f"the app did not accept the WebSocket within {ACCEPT_TIMEOUT:g} s")

    def _end(self, code: int, reason: str) -> None:
        if self.ended:
            return
        self.ended = True
        if not self.decided.done():
            self.decided.set_result(("ws", None, "close", code if code != 1000 else 403, reason))
        else:
            self.outgoing.put_nowait(("close", code, reason))

    def serve(self, op: str, payload) -> AnswerLater:
        """The server's side: "ws-recv" (later: the app's next messages, at least one), "ws-send"
        (later, once the app has room for it), "ws-close" (the caller went away with a code)."""
        if op == "ws-recv":
            coroutine = self._messages()
        elif op == "ws-send":
            coroutine = self._put({"type": "websocket.receive", payload[0]: payload[1]})
        else:
            coroutine = self._put({"type": "websocket.disconnect", "code": int(payload[0])}, wait=False)
        return AnswerLater(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    async def _messages(self) -> list:
        messages = [await self.outgoing.get()]
        size = len(messages[0][1]) if messages[0][0] != "close" else 0
        while messages[-1][0] != "close" and size < MAX_BATCH and not self.outgoing.empty():
            messages.append(self.outgoing.get_nowait())
            size += len(messages[-1][1]) if messages[-1][0] != "close" else 0
        return messages

    async def _put(self, message: dict, wait: bool = True) -> tuple:
        if self.ended:
            return ("ws-ended",)
        if wait:
            await self.incoming.put(message)
        else:  # a disconnect always gets in: it is the app's last message
            while self.incoming.full():
                self.incoming.get_nowait()
            self.incoming.put_nowait(message)
            self.ended = True
        return ("ok",)

    def close(self) -> None:
        """The caller went away without a close code."""
        self.serve("ws-close", [1006])
