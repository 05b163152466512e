"""A shipped call whose answer comes later, so that its container takes the next request meanwhile.

A call (container_kernel.cellhop_apply_request) that returns an AnswerLater is answered when its future
settles, not when the call returns: the kernel's main thread is free for the next request in between.
Only for waits that run no user code on the main thread: an ASGI app (endpoint_asgi.py) runs on an
event loop of its own, and a main thread waiting for one response's next part, or for a WebSocket's
next message, would hold every other request of that container behind it.
"""

from __future__ import annotations

from concurrent.futures import Future


class AnswerLater:
    def __init__(self, future: Future):
        self.future = future

    def then(self, fn) -> AnswerLater:
        """The answer made by `fn` from the future's result (`fn` runs where the future settles)."""
        made: Future = Future()

        def settled(future: Future) -> None:
            try:
                made.set_result(fn(future.result()))
            except BaseException as exc:  # noqa: BLE001 - the call's outcome, as a direct call's would be
                made.set_exception(exc)

        self.future.add_done_callback(settled)
        return AnswerLater(made)
