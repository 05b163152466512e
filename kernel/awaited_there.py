"""An `async def` function shipped to a container (`cellhop.remote`, `.map`, `.spawn`, a detached run): there,
calling it runs its coroutine to the end and returns what it returns, as a plain function's call would.

The container kernel's main thread runs the call, inside the kernel's own event loop, where
`asyncio.run` is refused; so the coroutine runs on an event loop of its own thread while the main
thread waits for it (`asyncio.run` there: as a script runs it). An interrupt (the cell's ■, a timeout)
cancels it at its current `await`; its `finally` blocks run before the interrupt is raised.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading


def shipped_form(fn):
    """What to ship for `fn`: `fn` itself, or for an async function AwaitedThere(fn)."""
    return AwaitedThere(fn) if inspect.iscoroutinefunction(fn) else fn


class AwaitedThere:
    def __init__(self, fn):
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        box: dict = {}
        started = threading.Event()

        async def main():
            box["loop"], box["task"] = asyncio.get_running_loop(), asyncio.current_task()
            started.set()
            return await self.fn(*args, **kwargs)

        def run() -> None:
            try:
                box["value"] = asyncio.run(main())  # as a script would run it: its leftover tasks cancelled at the end
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread below
                box["error"] = exc

        runner = threading.Thread(target=run, name="cellhop-async-call", daemon=True)
        runner.start()
        try:
            runner.join()  # an interrupt (SIGINT to this thread) ends the wait
        except BaseException:
            if started.wait(5):  # cancelled at its current await; its finally blocks run (and print) meanwhile
                box["loop"].call_soon_threadsafe(box["task"].cancel)
            runner.join(5)
            raise
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def __reduce__(self):
        return AwaitedThere, (self.fn,)
