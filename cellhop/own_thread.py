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


def on_fresh_thread(fn, *args, name: str = "cellhop-thread"):
    """`fn(*args)` on a new thread, waited for: its result, or its exception raised here. For work that
    needs a thread of its own (entering a namespace with setns, which changes only the calling thread; an
    event loop while the caller may be inside one)."""
    outcome: list = [None, None]

    def run():
        try:
            outcome[0] = fn(*args)
        except BaseException as exc:  # raised in the caller's thread
            outcome[1] = exc

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if outcome[1] is not None:
        raise outcome[1]
    return outcome[0]


def _settle(future: asyncio.Future, result, exc: BaseException | None) -> None:
    if not future.done():
        future.set_exception(exc) if exc is not None else future.set_result(result)
