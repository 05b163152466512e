"""A function endpoint's calls on threads of its container, where it was deployed with `concurrency` > 1.

By default a function endpoint takes one request per container (endpoint_concurrency.py). One
deployed with `concurrency=N` says its function may run N calls at once in one container (a model
that releases the GIL while it computes, an I/O-bound call): the server then sends up to N requests
to a container at once and each runs on a thread of its own there, while the kernel's main thread
takes the next request (answer_later.py). Ray Serve runs a synchronous deployment's requests so;
Modal asks for `@modal.concurrent` for the same.

A call past the endpoint's `timeout` is stopped with CallTimedOut raised in its thread: at its next
line of Python (a call blocked inside C code — a sleep, a CUDA synchronisation — ends when that
returns). CallTimedOut is a BaseException, so the function's own `except Exception` does not
swallow it. What the threads print goes to the container's log, as the main thread's calls do.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from .answer_later import AnswerLater


class CallTimedOut(BaseException):
    """Raised in an endpoint call's thread when the server gave up on it (the endpoint's timeout)."""


_LOCK = threading.Lock()
_RUNNING: dict[int, int] = {}  # call id -> the thread running it


def run_on_thread(call_id: int, work, timed_out) -> AnswerLater:
    """`work()` on a thread of its own; answered with its value, or `timed_out()` where it was cancelled."""
    future: Future = Future()

    def body() -> None:
        try:
            try:
                with _LOCK:
                    _RUNNING[call_id] = threading.get_ident()
                value = work()
            finally:
                with _LOCK:
                    _RUNNING.pop(call_id, None)
        except CallTimedOut:  # raised by cancel(), at the latest right after the entry above was dropped (so
            # never once body() returned: the pool's thread is not hit by it)
            value = timed_out()
        except BaseException as exc:  # noqa: BLE001 - the call's outcome, as a direct call's would be
            future.set_exception(exc)
            return
        future.set_result(value)

    _workers().submit(body)
    return AnswerLater(future)


@functools.cache
def _workers() -> ThreadPoolExecutor:
    """Threads kept for the next calls (starting one costs ~0.1 ms, a trivial call's whole time); as many as
    calls run at once, which the server keeps to the endpoint's concurrency (4096 at most)."""
    return ThreadPoolExecutor(max_workers=4096, thread_name_prefix="cellhop-endpoint-call")


def cancel(call_id: int) -> bool:
    """Stop the call `call_id` at its next line of Python; False where it is not running (done already)."""
    with _LOCK:  # the thread drops its entry under the same lock: never raised in a thread that moved on
        ident = _RUNNING.get(call_id)
        if ident is None:
            return False
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(CallTimedOut))
    return True


def output_to_container_log() -> None:
    """The process's own stdout and stderr for good: the main thread sends a call's prints there only
    for its duration (contextlib.redirect_stdout), which does not cover other threads; an endpoint's
    container serves nothing but its endpoint."""
    if sys.__stdout__ is not None:
        sys.stdout = sys.__stdout__
    if sys.__stderr__ is not None:
        sys.stderr = sys.__stderr__
