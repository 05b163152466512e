"""`async def` functions and methods run in a container (`cellhop.remote`, `.map`, `.spawn`, a detached run,
a `cellhop.cls` method, its enter and exit methods): there, calling one runs its coroutine to the end and returns what it returns, as
a plain function's call would.

The container kernel's main thread runs the call inside the kernel's own event loop, where a second
loop cannot run; so coroutines run on one event loop of the container's own, a thread made on first
use, while the main thread waits. That loop lives as long as the container, so what a call leaves on
it (an async HTTP client, a model server's connection kept by a `cellhop.cls` instance) serves the
next call. An interrupt (the cell's ■, a timeout) cancels the coroutine at its current `await`; its
`finally` blocks run before the interrupt is raised.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading

CANCEL_GRACE = 5.0  # seconds a cancelled coroutine has to run its finally blocks


def shipped_form(fn):
    """What to ship for `fn`: `fn` itself, or for an async function AwaitedThere(fn)."""
    return AwaitedThere(fn) if inspect.iscoroutinefunction(fn) else fn


class AwaitedThere:
    def __init__(self, fn):
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        return run_to_end(lambda: self.fn(*args, **kwargs))

    def __reduce__(self):
        return AwaitedThere, (self.fn,)


def call(fn, *args, **kwargs):
    """fn(*args, **kwargs); for an async fn, its coroutine run to its end on the container's loop."""
    if inspect.iscoroutinefunction(fn):
        return run_to_end(lambda: fn(*args, **kwargs))
    return fn(*args, **kwargs)


def run_to_end(make):
    """The coroutine `make()` run on the container's loop; its value (or its exception), once it ended."""
    tasks: list[asyncio.Task] = []

    async def main():
        tasks.append(asyncio.current_task())
        return await make()

    loop = container_loop()
    if _running_loop() is loop:  # waiting on itself would never end
        raise RuntimeError("an async function was called to its end from the container's own event loop; "
                           "await it there instead")
    future = asyncio.run_coroutine_threadsafe(main(), loop)
    try:
        return future.result()  # an interrupt (SIGINT to this thread) ends the wait
    except BaseException:
        if not future.done() and tasks:
            loop.call_soon_threadsafe(tasks[0].cancel)
            try:
                future.result(CANCEL_GRACE)
            except BaseException:  # noqa: BLE001 - cancelled (or it failed while cancelled): the interrupt is raised
                pass
        raise


@functools.cache
def container_loop() -> asyncio.AbstractEventLoop:
    """The container's own event loop for async code of its calls (also an async endpoint's: endpoint_loop.py)."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="cellhop-async-loop", daemon=True).start()
    return loop


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # none on this thread
        return None
