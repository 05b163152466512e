"""An endpoint whose function is `async def` (or an async generator): its calls run on an event loop of the
container's own, a thread made once, so the kernel's main thread takes the next request meanwhile
(answer_later.py). Calls overlap there up to the endpoint's `concurrency` (1 by default: more requests
start more containers); an `async def` that blocks (CPU or GPU work without an await) holds its loop, as
it would anywhere.

A call past the endpoint's `timeout` is cancelled: asyncio.CancelledError at its current `await`.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import Future

from .answer_later import AnswerLater

_CALLS: dict[int, Future] = {}  # call id -> the call on the loop


@functools.cache
def endpoint_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="cellhop-endpoint-loop", daemon=True).start()
    return loop


def run_on_loop(call_id: int | None, make) -> AnswerLater:
    """The coroutine `make()` on the endpoint's loop; answered with its value (it answers, never raises,
    but where cancelled)."""
    future = asyncio.run_coroutine_threadsafe(make(), endpoint_loop())
    if call_id is not None:
        _CALLS[call_id] = future
        future.add_done_callback(lambda _: _CALLS.pop(call_id, None))
    return AnswerLater(future)


def cancel(call_id: int) -> bool:
    """Cancel the call `call_id`; False where it is not on the loop (ended, or not an async call)."""
    future = _CALLS.get(call_id)
    return future is not None and future.cancel()


def close_later(agen) -> None:
    """Close an async generator whose caller went away (its `finally` runs on the loop)."""
    asyncio.run_coroutine_threadsafe(agen.aclose(), endpoint_loop())
