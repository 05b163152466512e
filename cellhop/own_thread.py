"""Long blocking control-plane work (a start that queues for a GPU, an image build) off an
event loop, on a thread of its own: the loop's default executor is small (a few threads on a
small host) and shared with the server's quick calls, so minutes-long waits must not fill it."""

from __future__ import annotations

import asyncio
import threading


def on_own_thread(fn, *args, **kwargs) -> asyncio.Future:
    """`fn(*args, **kwargs)` on a new daemon thread; a future of the running loop settles with it."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def run():
        try:
            outcome = (fn(*args, **kwargs), None)
        except BaseException as exc:  # handed to the awaiting coroutine
            outcome = (None, exc)
        try:
            loop.call_soon_threadsafe(_settle, future, *outcome)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    threading.Thread(target=run, name="cellhop-long-call", daemon=True).start()
    return future


def _settle(future: asyncio.Future, result, exc: BaseException | None) -> None:
    if not future.done():
        future.set_exception(exc) if exc is not None else future.set_result(result)
