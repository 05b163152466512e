"""How many requests one container of an endpoint takes at once, where its deploy does not say.

A function's (or a class's) calls run one at a time in its container, on its kernel's main
thread: a second request sent to a busy container would only wait there behind the first while
another container could serve it, so a function endpoint takes 1 and its pool starts another
container instead (up to `max_containers`). An ASGI app's requests overlap in its container
(they run on the app's own event loop there), so an app takes 8. A `concurrency=` given at
deploy is kept as given: a function given more than 1 runs that many calls at once in one
container, each on a thread of its own (kernel/endpoint_threads.py).
"""

from __future__ import annotations

FUNCTION_CONCURRENCY = 1
APP_CONCURRENCY = 8


def default_concurrency(asgi: bool) -> int:
    """Requests in flight per container for an endpoint that does not set `concurrency`."""
    return APP_CONCURRENCY if asgi else FUNCTION_CONCURRENCY
