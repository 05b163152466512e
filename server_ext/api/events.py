"""The event stream: one WebSocket (`cellhop/api/events`) with lifecycle events and GPU metrics.

Client messages: {"type": "configure", "interval": s}, {"type": "pause"}, {"type": "resume"}.
The first server message is `hello` (GPUs and containers now); see docs/api.md.
"""

from __future__ import annotations

import asyncio
import json

from jupyter_core.utils import ensure_async
from jupyter_server.base.handlers import JupyterHandler
from tornado import web, websocket

from ...events import check_interval
from .base import AUTH_RESOURCE, JsonErrors, KernelTokenAuth, parse_json

DEFAULT_INTERVAL = 1.0


class EventsHandler(KernelTokenAuth, JsonErrors, JupyterHandler, websocket.WebSocketHandler):
    auth_resource = AUTH_RESOURCE

    async def prepare(self, *args, **kwargs):
        if self._prepare_kernel():
            return
        # no login redirect for a WebSocket: unauthenticated is a plain 403
        await JupyterHandler.prepare(self, _redirect_to_login=False)

    async def get(self, *args, **kwargs):
        if self.current_user is None:
            raise web.HTTPError(403)
        allowed = await ensure_async(self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE))
        if not allowed:
            raise web.HTTPError(403)
        res = super().get(*args, **kwargs)
        if res is not None:
            await res

    def open(self, *args, **kwargs):
        self._loop = asyncio.get_running_loop()
        try:
            interval = check_interval(self.get_argument("interval", str(DEFAULT_INTERVAL)))
        except ValueError as exc:
            self.close(code=1008, reason=str(exc)[:120])
            return
        paused = self.get_argument("paused", "0") not in ("0", "", "false")
        self._subscription = self.control_plane.subscribe(self._from_thread, metrics_interval=interval,
                                                          paused=paused)

    def _from_thread(self, event: dict) -> None:
        """Called on control-plane threads (or, for hello, right here): hand over to the IO loop."""
        text = json.dumps(event)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._send(text)
        else:
            self._loop.call_soon_threadsafe(self._send, text)

    def _send(self, text: str) -> None:
        try:
            self.write_message(text)
        except websocket.WebSocketClosedError:
            self._unsubscribe()

    def on_message(self, message):
        try:
            try:
                msg = parse_json(message, "the message")
            except web.HTTPError as exc:
                raise ValueError(exc.log_message) from None
            kind = msg.get("type") if isinstance(msg, dict) else None
            sub = self._subscription
            if kind == "configure":
                sub.configure(msg.get("interval"))
            elif kind == "pause":
                sub.pause()
            elif kind == "resume":
                sub.resume()
            else:
                raise ValueError(f"unknown message type {kind!r}; send configure, pause or resume")
        except ValueError as exc:
            self._send(json.dumps({"type": "error", "message": str(exc)}))

    def on_close(self):
        self._unsubscribe()

    def _unsubscribe(self):
        sub = getattr(self, "_subscription", None)
        if sub is not None:
            self._subscription = None
            sub.close()


handlers = [(r"events", EventsHandler)]
