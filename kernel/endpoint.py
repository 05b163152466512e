"""`cellhop.endpoint`: a notebook function served over HTTP by the cellhop server, on autoscaled containers.

    @cellhop.endpoint(gpu="H100", max_containers=4, scaledown=60)
    def predict(text: str):
        return {"label": ...}

    predict.deploy("predict")   # served at {base_url}cellhop/endpoints/predict/

A POST with a JSON object body calls it with those keyword arguments (GET: the query parameters,
as strings) and answers with the JSON of its return value; a generator streams its items as JSON
lines. The server owns a deployed endpoint: it outlives this kernel and a server restart
(server_ext/endpoints.py). `@cellhop.batched(max_batch_size=32, wait_ms=10)` makes concurrent
requests one call on lists.

This module is also the container's side of an endpoint call (`serve_call`, named by reference in
the apply requests the server sends): it answers with JSON text only, so the server never unpickles
anything but a tuple of numbers and strings from a container.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import json
import sys
import traceback

from ..endpoint_concurrency import default_concurrency
from ..endpoint_errors import NEED_SERVER, EndpointNotFound, EndpointsNeedServer  # noqa: F401 (re-exported)

DEFAULTS = {"gpu": None, "min_containers": 0, "max_containers": 4, "concurrency": None, "scaledown": 60.0,
            "timeout": None, "public": False, "cpus": None, "memory": None, "volumes": None, "secrets": None}


class Endpoint:
    """A function that can be deployed as an HTTP endpoint (`f.deploy("name")`); calling it runs it here."""

    def __init__(self, fn, _asgi: bool = False, **options):
        self.asgi = _asgi  # cellhop.asgi: a whole ASGI app (endpoint_asgi.py)
        fn = fn if _asgi else getattr(fn, "klass", fn)  # a @cellhop.cls class: the class itself
        self.fn = getattr(fn, "fn", fn)  # a @batched function keeps its batching options
        self.batch = getattr(fn, "batch", None)
        unknown = set(options) - set(DEFAULTS) - {"image", "method"}
        if unknown:
            raise TypeError(f"cellhop.endpoint() got unknown option(s) {', '.join(sorted(unknown))}; "
                            f"it takes {', '.join(sorted([*DEFAULTS, 'image', 'method']))}")
        self.image = options.pop("image", None)
        self.method = options.pop("method", None)
        if self.asgi:
            if self.method is not None or self.batch is not None:
                raise TypeError("cellhop.asgi serves a whole app: it takes no method= and no @cellhop.batched")
        elif inspect.isclass(self.fn):  # made once per container (its @cellhop.enter methods run), then called
            self.method = self.method or "__call__"
            if not callable(getattr(self.fn, self.method, None)) or (
                    self.method == "__call__" and "__call__" not in dir(self.fn)):
                raise TypeError(f"endpoint class {self.fn.__name__} has no method {self.method}(); define "
                                "__call__ or pass method='name' to @cellhop.endpoint")
        elif self.method is not None:
            raise TypeError("method= names the method of an endpoint class; this endpoint is a function")
        self.options = {**DEFAULTS, **options}
        self.__name__ = getattr(self.fn, "__name__", "endpoint")
        self.__doc__ = getattr(self.fn, "__doc__", None)
        self.__wrapped__ = self.fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<cellhop.endpoint {self.__name__} gpu={self.options['gpu'] or 'none'}>"

    def spec(self) -> dict:
        """What the server stores beside the code: the container request and the pool's limits."""
        target = getattr(self.fn, self.method) if self.method else self.fn
        from .secret import secret_names
        from .volume import mounts_of

        spec = {**self.options, "gpu": self.options["gpu"] or "none",
                "generator": not self.asgi and (inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target)),
                "async": not self.asgi and _is_async(target),
                "batch": self.batch,
                "volumes": mounts_of(self.options["volumes"]), "secrets": secret_names(self.options["secrets"])}
        if spec["concurrency"] is None:  # 1 for a function (its calls run one at a time), 8 for an app
            spec["concurrency"] = default_concurrency(self.asgi)
        if self.asgi:
            spec["asgi"] = True
        return spec

    def deploy(self, name: str | None = None, control=None) -> dict:
        """Deploy (or replace: a rolling update) under `name`; returns the endpoint's view, with its `url`."""
        import cloudpickle

        control = control or _control_plane()
        name = name or self.__name__
        deploy = getattr(control, "deploy_endpoint", None)
        if deploy is None:
            raise EndpointsNeedServer(NEED_SERVER)
        spec = self.spec()
        if self.image is not None and not getattr(self.image, "is_default", False):
            spec["image"] = control.build_image(self.image.to_json())["key"]
        shipped = (_ASGI, self.fn) if self.asgi else (_CLASS, self.fn, self.method) if self.method else self.fn
        view = deploy(name, cloudpickle.dumps(shipped), spec)
        return _Deployed(view)


class _Deployed(dict):
    """The server's view of a deployed endpoint; shows its URL in a notebook."""

    def __repr__(self) -> str:
        return f"endpoint {self.get('name')!r} (version {self.get('version')}) at {self.get('url')}"

    def _repr_html_(self) -> str:
        import html

        url = html.escape(str(self.get("url")))
        return (f"endpoint <b>{html.escape(str(self.get('name')))}</b> (version {self.get('version')}) at "
                f"<a href='{url}' target='_blank'>{url}</a>")


def _control_plane():
    from .control_client import get_control_plane

    return get_control_plane()


def endpoint(fn=None, **options):
    """`@cellhop.endpoint(gpu=, min_containers=0, max_containers=4, concurrency=None, scaledown=60, timeout=None,
    public=False, image=None)`: a function to deploy with `.deploy(name)`. `concurrency`: requests in flight per
    container; by default 1 (more requests start more containers); more than 1 runs that many calls at once
    in one container, each on a thread of its own (for a function that may run alongside itself)."""
    if fn is not None and callable(fn) and not options:
        return Endpoint(fn)
    if fn is not None:
        raise TypeError("use @cellhop.endpoint or @cellhop.endpoint(gpu=..., ...)")
    return lambda f: Endpoint(f, **options)


class _Batched:
    def __init__(self, fn, max_batch_size: int, wait_ms: float):
        if not (isinstance(max_batch_size, int) and 1 <= max_batch_size <= 1024):
            raise ValueError(f"max_batch_size={max_batch_size!r}: give a whole number from 1 to 1024")
        if not (isinstance(wait_ms, (int, float)) and 0 <= wait_ms <= 10_000):
            raise ValueError(f"wait_ms={wait_ms!r}: give milliseconds from 0 to 10000")
        self.fn = fn
        self.batch = {"max_batch_size": max_batch_size, "wait_ms": float(wait_ms)}
        self.__name__ = getattr(fn, "__name__", "endpoint")

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def batched(fn=None, *, max_batch_size: int = 32, wait_ms: float = 10):
    """`@cellhop.batched(max_batch_size=32, wait_ms=10)` under `@cellhop.endpoint`: concurrent requests
    become one call whose every argument is a list (one item per request); it returns a list of results,
    one per request, in order."""
    if fn is not None:
        return _Batched(fn, max_batch_size, wait_ms)
    return lambda f: _Batched(f, max_batch_size, wait_ms)


def asgi(app, **options) -> Endpoint:
    """`cellhop.asgi(app_or_factory, gpu=..., max_containers=..., ...)`: a whole ASGI app (FastAPI, Starlette, a
    bare ASGI callable; or a function of no arguments that makes one, in each container) to deploy with
    `.deploy(name)`; served at `{base_url}cellhop/endpoints/<name>/` and every path below it."""
    return Endpoint(app, _asgi=True, **options)


def deploy(fn, name: str | None = None, **options) -> dict:
    """`cellhop.deploy(f, name=...)`: deploy an `@cellhop.endpoint` function (or a plain one, with `options`)."""
    if not isinstance(fn, Endpoint):
        fn = Endpoint(fn, **options)
    elif options:
        raise TypeError("give the options to @cellhop.endpoint(...), not to deploy()")
    return fn.deploy(name)


# -- the container's side: called by reference in the server's apply requests ---------------------
_CLASS = "cellhop-endpoint-class"
_ASGI = "cellhop-endpoint-asgi"
_FUNCTIONS: dict[str, object] = {}  # endpoint key (name@version) -> the function, or the error text
_STREAMS: dict[int, object] = {}  # open generators
_STREAM_IDS = itertools.count(1)


def serve_call(op: str, key: str, code: bytes | None, payload, threads: int = 0, call_id: int | None = None):
    """One request of the server: ("value", status, JSON text), ("stream", id, JSON lines, done), or for
    a batch a list of ("value", status, JSON text). Prints go to the container's log. An `async def`
    function's calls run on the endpoint's event loop (endpoint_loop.py); with `threads`, a function
    deployed with concurrency > 1 runs its calls on threads (endpoint_threads.py). `call_id` names such a
    call for ("cancel", ..., call id)."""
    if op == "cancel":
        from .endpoint_loop import cancel as cancel_on_loop
        from .endpoint_threads import cancel as cancel_thread

        return ("cancelled", cancel_thread(payload) or cancel_on_loop(payload))
    if op in ("call", "batch", "next"):
        with contextlib.redirect_stdout(sys.__stdout__), contextlib.redirect_stderr(sys.__stderr__):
            work = _work(op, key, code, payload)  # loading it (an endpoint class's @enter) prints to the log too
        if isinstance(work, _OnLoop):
            from .endpoint_loop import run_on_loop
            from .endpoint_threads import output_to_container_log

            output_to_container_log()
            return run_on_loop(call_id, work.make)
        if not callable(work):
            return work
        if not threads:
            with contextlib.redirect_stdout(sys.__stdout__), contextlib.redirect_stderr(sys.__stderr__):
                return work()
        from .endpoint_threads import output_to_container_log, run_on_thread

        output_to_container_log()
        return run_on_thread(call_id, work, lambda: _error(504, "EndpointTimeout", "stopped at its timeout"))
    with contextlib.redirect_stdout(sys.__stdout__), contextlib.redirect_stderr(sys.__stderr__):
        if op == "close":
            gen = _STREAMS.pop(payload, None)
            if inspect.isasyncgen(gen):
                from .endpoint_loop import close_later

                close_later(gen)
            elif gen is not None:
                with contextlib.suppress(ValueError):  # still running on a thread: it ends with its caller
                    gen.close()
            return ("closed",)
        if op in ("ws-recv", "ws-send", "ws-close"):  # payload: [socket id, ...]
            socket = _STREAMS.get(payload[0])
            if socket is None or not hasattr(socket, "serve"):
                return ("ws-ended",)
            if op == "ws-close":
                _STREAMS.pop(payload[0], None)
            return socket.serve(op, payload[1:])
        fn = _load(key, code)
        if isinstance(fn, str):
            return _error(500, "EndpointLoadError", fn)
        if op in ("asgi", "ws-open"):
            if not hasattr(fn, "respond"):
                return _error(400, "NotAnApp", f"endpoint {key} is a function, not an ASGI app")
            later = fn.respond(payload["scope"], payload["body"]) if op == "asgi" else fn.websocket(payload["scope"])
            return later.then(_kept)
        return _error(400, "UnknownRequest", f"the container does not know the request {op!r}")


class _OnLoop:
    """Work for the endpoint's event loop: `make()` makes the coroutine that answers."""

    def __init__(self, make):
        self.make = make


def _is_async(fn) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


def _work(op: str, key: str, code: bytes | None, payload):
    """What answers a call, a batch or a stream's next item: a function of nothing, or _OnLoop for an
    async one (the function loaded first, here); or, where it cannot be loaded, the answer saying so."""
    if op == "next":
        gen = _STREAMS.get(payload)
        return _OnLoop(lambda: _next_async(payload, gen)) if inspect.isasyncgen(gen) else lambda: _next(payload)
    fn = _load(key, code)
    if isinstance(fn, str):
        return [_error(500, "EndpointLoadError", fn)] * len(payload) if op == "batch" else \
            _error(500, "EndpointLoadError", fn)
    if op == "batch":
        return _OnLoop(lambda: _call_batch_async(fn, payload)) if _is_async(fn) else lambda: _call_batch(fn, payload)
    return _OnLoop(lambda: _call_async(fn, payload)) if _is_async(fn) else lambda: _call(fn, payload)


def _call(fn, payload: dict):
    try:
        result = fn(**payload)
    except Exception as exc:
        return _raised(exc)
    if inspect.isgenerator(result):
        return _stream(result)
    return _json(result)


async def _call_async(fn, payload: dict):
    try:
        result = fn(**payload)
        if inspect.isasyncgen(result):
            return _stream(result)
        value = await result
    except Exception as exc:  # not CancelledError: a cancelled call (its timeout) is answered by no one
        return _raised(exc)
    return _json(value)


def _stream(gen) -> tuple:
    stream_id = next(_STREAM_IDS)
    _STREAMS[stream_id] = gen
    return ("stream", stream_id, "", False)


def _load(key: str, code: bytes | None):
    fn = _FUNCTIONS.get(key)
    if fn is None and code is not None:
        import cloudpickle

        try:
            fn = cloudpickle.loads(code)
            if isinstance(fn, tuple) and fn and fn[0] == _CLASS:
                fn = _instance_method(*fn[1:])
            elif isinstance(fn, tuple) and fn and fn[0] == _ASGI:
                from .endpoint_asgi import AsgiRunner

                fn = AsgiRunner(fn[1])
        except Exception as exc:
            traceback.print_exc()
            fn = f"the endpoint's function could not be loaded in its container: {type(exc).__name__}: {exc}"
        _FUNCTIONS.clear()  # one endpoint version per container
        _FUNCTIONS[key] = fn
    return fn if fn is not None else f"endpoint {key} is not loaded in this container"


def _instance_method(klass, method: str):
    """The endpoint class made once in this container, its @cellhop.enter methods run in definition order;
    its @cellhop.exit methods run when the container stops (scaledown, an update, a delete:
    class_instances.py)."""
    from .class_instances import keep

    instance = klass()
    marked: dict[str, list[str]] = {"__cellhop_enter__": [], "__cellhop_exit__": []}
    for cls in reversed(klass.__mro__):
        for name, member in vars(cls).items():
            target = getattr(member, "__func__", member)
            for marker, names in marked.items():
                if name not in names and getattr(target, marker, False):
                    names.append(name)
    from .awaited_there import call

    for name in marked["__cellhop_enter__"]:
        call(getattr(instance, name))  # an async one run to its end
    keep(f"endpoint {klass.__qualname__}", instance, tuple(marked["__cellhop_exit__"]))
    return getattr(instance, method)


def _next(stream_id: int):
    """The generator's next item, as a JSON line (one item a request: the next may take long to come)."""
    gen = _STREAMS.get(stream_id)
    if gen is None:
        return ("stream", stream_id, "", True)
    if hasattr(gen, "next_part"):  # an ASGI response: its body's bytes as they come
        return gen.next_part().then(lambda part: _part(stream_id, *part))
    try:
        item = next(gen)
    except StopIteration:
        return _ended(stream_id, "")
    except Exception as exc:
        return _ended(stream_id, _raised(exc)[2] + "\n")
    answer = _item(stream_id, item)
    if answer[3]:
        gen.close()
    return answer


async def _next_async(stream_id: int, gen):
    """An async generator's next item, on the endpoint's loop."""
    try:
        item = await gen.__anext__()
    except StopAsyncIteration:
        return _ended(stream_id, "")
    except Exception as exc:
        return _ended(stream_id, _raised(exc)[2] + "\n")
    answer = _item(stream_id, item)
    if answer[3]:
        await gen.aclose()
    return answer


def _item(stream_id: int, item) -> tuple:
    """An item as its JSON line; or, for one that is not JSON, the stream's end saying so (close the generator)."""
    try:
        return ("stream", stream_id, json.dumps(item, allow_nan=False) + "\n", False)
    except (TypeError, ValueError) as exc:
        return _ended(stream_id, _not_json(exc)[2] + "\n")


def _ended(stream_id: int, last: str) -> tuple:
    _STREAMS.pop(stream_id, None)
    return ("stream", stream_id, last, True)


def _kept(answer: tuple) -> tuple:
    """An ASGI answer, with the response still sending (or the WebSocket) kept here under an id."""
    if answer[0] not in ("asgi-stream", "ws") or answer[1] is None:
        return answer
    stream_id = next(_STREAM_IDS)
    _STREAMS[stream_id] = answer[1]  # endpoint_asgi.Response or Socket
    return (answer[0], stream_id, *answer[2:])


def _part(stream_id: int, chunk: bytes, done: bool) -> tuple:
    if done:
        _STREAMS.pop(stream_id, None)
    return ("stream", stream_id, chunk, done)


def _call_batch(fn, calls: list) -> list:
    lists = _batch_lists(calls)
    if isinstance(lists, list):
        return lists
    try:
        results = list(fn(**lists))
    except Exception as exc:
        return [_raised(exc)] * len(calls)
    return _batch_answers(results, calls)


async def _call_batch_async(fn, calls: list) -> list:
    lists = _batch_lists(calls)
    if isinstance(lists, list):
        return lists
    try:
        results = list(await fn(**lists))
    except Exception as exc:
        return [_raised(exc)] * len(calls)
    return _batch_answers(results, calls)


def _batch_lists(calls: list):
    """The batch's arguments, each a list with an item per request; or the answers refusing the batch."""
    names = sorted({k for kwargs in calls for k in kwargs})
    if any(set(kwargs) != set(names) for kwargs in calls):
        return [_error(400, "BadBatch", f"every request of a batched endpoint must send the same arguments "
                                        f"({', '.join(names)})")] * len(calls)
    return {n: [kwargs[n] for kwargs in calls] for n in names}


def _batch_answers(results: list, calls: list) -> list:
    if len(results) != len(calls):
        return [_error(500, "BadBatch", f"the batched function returned {len(results)} results for "
                                        f"{len(calls)} requests; return one per request, in order")] * len(calls)
    return [_json(r) for r in results]


def _json(value):
    try:
        return ("value", 200, json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        return _not_json(exc)


def _not_json(exc):
    return _error(500, "NotJSON", f"the endpoint's function returned a value that is not JSON ({exc}); "
                                  "return dicts, lists, strings, numbers, booleans or None")


def _raised(exc: Exception):
    traceback.print_exc()  # to the container's log (`cellhop endpoint logs NAME`)
    return _error(500, type(exc).__name__, f"the endpoint's function raised {type(exc).__name__}: {exc}")


def _error(status: int, kind: str, message: str):
    return ("value", status, json.dumps({"error": kind, "message": message}))
