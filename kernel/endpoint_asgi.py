"""The container's side of `cellhop.asgi`: a whole ASGI app (FastAPI, Starlette, a bare ASGI callable)
served at `{base_url}cellhop/endpoints/<name>/...`, with no port and no HTTP server in the container.

The server turns each HTTP request into an ASGI scope and its body and sends them in an apply
request (like a function endpoint's call); here the app runs on an event loop of its own (a thread
made once per container, after the lifespan startup where the app has one), and the answer goes
back as (status, headers, body). The app's whole response is gathered before it goes back (no
streaming yet), and WebSockets are not served.
"""

from __future__ import annotations

import asyncio
import inspect
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
        return asyncio.run_coroutine_threadsafe(self._http(scope, body), self.loop).result()

    async def _http(self, scope: dict, body: bytes):
        scope = {**scope, "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in scope["headers"]],
                 "query_string": scope["query_string"].encode("latin-1"), "asgi": {"version": "3.0"}}
        received = asyncio.Event()
        done = asyncio.Event()
        start: dict = {}
        chunks: list[bytes] = []

        async def receive():
            if not received.is_set():
                received.set()
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))
                if not message.get("more_body"):
                    done.set()

        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            traceback.print_exc()  # to the container's log
            if not start:
                return ("value", 500, f'{{"error": "{type(exc).__name__}", "message": "the ASGI app raised"}}')
        finally:
            done.set()
        headers = [[bytes(k).decode("latin-1"), bytes(v).decode("latin-1")] for k, v in start.get("headers", [])]
        return ("asgi", int(start.get("status", 500)), headers, b"".join(chunks))
