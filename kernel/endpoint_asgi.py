"""The container's side of `cellhop.asgi`: a whole ASGI app (FastAPI, Starlette, a bare ASGI callable)
served at `{base_url}cellhop/endpoints/<name>/...`, with no port and no HTTP server in the container.

The server turns each HTTP request into an ASGI scope and its body and sends them in an apply
request (like a function endpoint's call); here the app runs on an event loop of its own (a thread
made once per container, after the lifespan startup where the app has one), and the answer goes
back as (status, headers, body); a response still sending its body when its first part is there is
streamed, part by part, as a generator endpoint's items are. WebSockets are not served.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import queue
import threading
import traceback

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
    """One app, on its own event loop thread; `runner(scope, body)` -> ("asgi", status, headers, body)."""

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

    def __call__(self, scope: dict, body: bytes):
        """("asgi", status, headers, body) for a response that ended by now, else ("asgi-stream", response,
        status, headers, body so far): the server reads the rest with `response.next_chunk()`."""
        response = Response()
        asyncio.run_coroutine_threadsafe(self._http(scope, body, response), self.loop)
        return response.head()

    async def _http(self, scope: dict, body: bytes, response: Response) -> None:
        scope = {**scope, "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in scope["headers"]],
                 "query_string": scope["query_string"].encode("latin-1"), "asgi": {"version": "3.0"}}
        received = False

        async def receive():
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": body, "more_body": False}
            while not response.ended.is_set():  # the app waits for the caller to go away
                await asyncio.sleep(0.1)
            return {"type": "http.disconnect"}

        async def send(message):
            if response.ended.is_set():
                raise OSError("the caller went away")
            if message["type"] == "http.response.start":
                headers = [[bytes(k).decode("latin-1"), bytes(v).decode("latin-1")]
                           for k, v in message.get("headers", [])]
                response.events.put(("start", int(message.get("status", 200)), headers))
            elif message["type"] == "http.response.body":
                response.events.put(("body", bytes(message.get("body", b"")), bool(message.get("more_body"))))

        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            if not response.ended.is_set():
                traceback.print_exc()  # to the container's log
            response.events.put(("error", type(exc).__name__))
        finally:
            response.events.put(("end",))


class Response:
    """What an app sent for one request, as the kernel's thread reads it (the app's loop writes it)."""

    def __init__(self):
        self.events: queue.Queue = queue.Queue()
        self.ended = threading.Event()

    def head(self):
        status, headers, chunks = None, [], []
        while True:
            event = self.events.get()
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
                    self.ended.set()
                    return ("value", 500, json.dumps({"error": event[1] if event[0] == "error" else "NoResponse",
                                                      "message": "the ASGI app sent no response; its log says "
                                                                 "why (`cellhop endpoint logs NAME`)"}))
                return self._done(status, headers, chunks)

    def _done(self, status, headers, chunks):
        self.ended.set()
        return ("asgi", status or 500, headers, b"".join(chunks))

    def next_chunk(self) -> tuple[bytes, bool]:
        """The body's next part (whatever came by now, at least one part): (bytes, ended)."""
        chunks = []
        while True:
            event = self.events.get() if not chunks else self._ready()
            if event is None:
                return b"".join(chunks), False
            if event[0] == "body":
                chunks.append(event[1])
                if not event[2]:
                    self.ended.set()
                    return b"".join(chunks), True
            elif event[0] in ("error", "end"):
                self.ended.set()
                return b"".join(chunks), True

    def _ready(self):
        try:
            return self.events.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        """The caller went away: the app's next receive() says so, its next send() fails."""
        self.ended.set()
