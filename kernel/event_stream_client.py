"""The server's event stream (WebSocket `cellhop/api/events`) in a kernel: a background thread
that stays connected (reconnecting after a server restart) and hands each event to a listener."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

log = logging.getLogger("cellhop")

RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)


class EventStreamSubscription:
    """Same surface as the embedded control plane's subscription: configure, pause, resume, close."""

    def __init__(self, url: str, headers: dict, listener, wants_metrics: bool = True):
        self._url = url
        self._headers = headers
        self._listener = listener
        self._state = {"paused": not wants_metrics, "interval": None}
        self._closed = threading.Event()
        self.connected = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._ws = None
        self._thread = threading.Thread(target=self._run, name="cellhop-events", daemon=True)
        self._thread.start()

    # -- control (any thread) ----------------------------------------------------
    def configure(self, interval: float) -> None:
        self._state["interval"] = float(interval)
        self._send({"type": "configure", "interval": float(interval)})

    def pause(self) -> None:
        self._state["paused"] = True
        self._send({"type": "pause"})

    def resume(self) -> None:
        self._state["paused"] = False
        self._send({"type": "resume"})

    def close(self) -> None:
        self._closed.set()
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._close_ws)
        self._thread.join(timeout=5)

    def _send(self, message: dict) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._write, json.dumps(message))

    def _write(self, text: str) -> None:
        if self._ws is not None:
            try:
                self._ws.write_message(text)
            except Exception:  # reconnect resends the state
                pass

    def _close_ws(self) -> None:
        if self._ws is not None:
            self._ws.close()

    # -- the thread ----------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._connect_forever())
        finally:
            self._loop.close()

    async def _connect_forever(self) -> None:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        failures = 0
        while not self._closed.is_set():
            try:
                self._ws = await websocket_connect(HTTPRequest(self._url, headers=self._headers,
                                                               connect_timeout=10))
            except Exception as exc:
                delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                if failures == 0:
                    log.info("cellhop: event stream unreachable (%r); retrying", exc)
                failures += 1
                await asyncio.sleep(delay)
                continue
            failures = 0
            self.connected.set()
            if self._state["interval"] is not None:
                self._write(json.dumps({"type": "configure", "interval": self._state["interval"]}))
            self._write(json.dumps({"type": "pause" if self._state["paused"] else "resume"}))
            while not self._closed.is_set():
                text = await self._ws.read_message()
                if text is None:
                    break
                try:
                    self._listener(json.loads(text))
                except Exception:
                    log.exception("cellhop: event listener failed")
            self.connected.clear()
            self._ws = None
            if not self._closed.is_set():
                await asyncio.sleep(RECONNECT_DELAYS[0])
