"""An endpoint whose function is `async def` (or an async generator): its calls run on an event loop of the
container's own (awaited_there.container_loop), so the kernel's main thread takes the next request meanwhile
(answer_later.py). Calls overlap there up to the endpoint's `concurrency` (1 by default: more requests
start more containers); an `async def` that blocks (CPU or GPU work without an await) holds its loop, as
it would anywhere.

A call past the endpoint's `timeout` is cancelled: asyncio.CancelledError at its current `await`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

from .answer_later import AnswerLater
from .awaited_there import container_loop

_CALLS: dict[int, Future] = {}  # call id -> the call on the loop


def run_on_loop(call_id: int | None, make) -> AnswerLater:
    """The coroutine `make()` on the endpoint's loop; answered with its value (it answers, never raises,
    but where cancelled)."""
    future = asyncio.run_coroutine_threadsafe(make(), container_loop())
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
    asyncio.run_coroutine_threadsafe(agen.aclose(), container_loop())
