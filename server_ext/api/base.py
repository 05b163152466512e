"""What every cellhop API handler shares: authentication (jupyter_server's, or the kernels'
scoped token), authorization on the `cellhop` resource, JSON bodies and JSON errors.

Every JSON body (and every event-stream message) goes through `parse_json`: at most
MAX_JSON_BYTES, nested at most MAX_JSON_DEPTH deep, no NaN or Infinity; anything else is a
4xx naming the limit, never a 500."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

from jupyter_server.auth import User
from jupyter_server.base.call_context import CallContext
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from tornado import web
from tornado.iostream import StreamClosedError

from ...errors import CellhopError, error_body, http_status
from ...own_thread import on_own_thread
from ..kernel_tokens import USER, Caller, kernel_of

AUTH_RESOURCE = "cellhop"
KERNEL_TOKEN_SETTING = "cellhop_kernel_token"  # the key each kernel's own token is made with
CONTROL_PLANE_SETTING = "cellhop_control_plane"

# Limits on request bodies: a spec, a secret's values, a path need far less than this.
MAX_JSON_BYTES = 1 << 20
MAX_JSON_DEPTH = 32


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number; give a finite number")


def parse_json(raw: bytes | str, what: str = "the request body") -> Any:
    """`raw` as JSON within the limits above; web.HTTPError 413 or 400 naming what was wrong."""
    if len(raw) > MAX_JSON_BYTES:
        raise web.HTTPError(413, f"{what} is {len(raw)} bytes; cellhop takes at most {MAX_JSON_BYTES} bytes of JSON")
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise web.HTTPError(400, f"{what} is nested too deeply; cellhop takes JSON nested at most "
                                 f"{MAX_JSON_DEPTH} levels deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise web.HTTPError(400, f"{what} is not valid JSON ({exc})") from None
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise web.HTTPError(400, f"{what} is nested more than {MAX_JSON_DEPTH} levels deep; "
                                         "send flatter JSON")
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return value


async def in_thread(fn, *args, **kwargs):
    """Run quick blocking control-plane work off the server's event loop (long work: on_own_thread)."""
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))


class _KernelTokenAuthorizer:
    """The token handed to kernels is good for the cellhop API and nothing else."""

    def is_authorized(self, handler, user, action, resource) -> bool:
        return resource == AUTH_RESOURCE


_KERNEL_AUTHORIZER = _KernelTokenAuthorizer()
_KERNEL_USER = User(username="cellhop-kernel", name="cellhop kernel")


class KernelTokenAuth:
    """Mixin for JupyterHandler subclasses: accept `Authorization: token <a kernel's own token>`
    (kernel_tokens: made from the key in settings[KERNEL_TOKEN_SETTING] for one kernel id)."""

    _cellhop_kernel: str | None = None  # the kernel id of a request carrying a kernel's token

    def _presented_kernel(self) -> str | None:
        key = self.settings.get(KERNEL_TOKEN_SETTING)
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return kernel_of(key, token.strip()) if key and scheme.lower() == "token" else None

    def _prepare_kernel(self) -> bool:
        """Authenticate a kernel by its own token; False when the request does not carry one."""
        kernel_id = self._presented_kernel()
        if kernel_id is None:
            return False
        CallContext.set(CallContext.JUPYTER_HANDLER, self)
        if not self.check_host():
            raise web.HTTPError(403)
        self._cellhop_kernel = kernel_id
        self._token_authenticated = True
        self.current_user = self._jupyter_current_user = _KERNEL_USER
        return True

    @property
    def caller(self) -> Caller:
        """Who sent this request, as authenticated: a kernel by its own token, else the server's user."""
        return Caller("kernel", self._cellhop_kernel) if self._cellhop_kernel else USER

    @property
    def authorizer(self):
        if self._cellhop_kernel:
            return _KERNEL_AUTHORIZER
        return JupyterHandler.authorizer.fget(self)

    @property
    def control_plane(self):
        return self.settings[CONTROL_PLANE_SETTING]


class JsonErrors:
    """Mixin: errors are JSON a person can act on, on every cellhop route (the WebSocket's too).

    A cellhop error is answered with its class's `http_status` and its class name as `error`, the
    name the HTTP clients look up in the one registry (cellhop/errors.py) to raise the same class.
    Anything a user can type is a 4xx; 500 is left for real internal failures."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors are JSON a person can act on: {"error": kind, "message": what to do}."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError):
            kind = "HTTPError"
            message = exc.log_message or exc.reason or f"HTTP {status_code}"
            if status_code == 403 and not exc.log_message:
                message = "not authenticated or not authorized for the cellhop API"
        elif exc is not None and status_code < 500 or isinstance(exc, (CellhopError, ValueError)):
            body = error_body(exc)
            kind, message = body["error"], body["message"]
        else:
            kind, message = "InternalError", "cellhop hit an internal error; the server log has the details"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": kind, "message": message}))


class CellhopAPIHandler(KernelTokenAuth, JsonErrors, APIHandler):
    """Base of every REST handler under cellhop/api/. Decorate methods with
    `@authorized` (jupyter_server.auth.decorator); `auth_resource` is `cellhop`."""

    auth_resource = AUTH_RESOURCE
    # The event a successful change through this handler publishes on the event stream (`{"type":
    # "volume", "change": "post"}`: no names or values), so views of the list (the panel) follow it.
    changes: str | None = None

    async def prepare(self) -> None:
        if self._prepare_kernel():
            return
        await super().prepare()

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object; a 400 naming the problem otherwise."""
        body = parse_json(self.request.body or b"{}")
        if not isinstance(body, dict):
            raise web.HTTPError(400, "the request body must be a JSON object")
        return body

    def on_finish(self) -> None:
        if self.changes and self.request.method in ("POST", "PUT", "PATCH", "DELETE") and self.get_status() < 400:
            try:
                self.control_plane.publish({"type": self.changes, "change": self.request.method.lower()})
            except Exception:  # telling views is a courtesy: the change itself is done
                pass
        super().on_finish()

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data))

    def _handle_request_exception(self, e: BaseException) -> None:
        # A CellhopError is the user's (or the host's) problem, reported with its class's own status.
        if isinstance(e, (CellhopError, ValueError)) and not self._finished:
            self.send_error(http_status(e), exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


class JsonLinesStream:
    """Mixin for a route that answers long work (`?events=1`) with a stream of JSON lines:
    the work's events as they happen, then one final line (see docs/api.md)."""

    def wants_events(self) -> bool:
        return self.get_argument("events", "0") not in ("0", "", "false")

    @property
    def gone(self) -> threading.Event:
        """Set when the requester closes the connection (work may use it to cancel)."""
        if not hasattr(self, "_gone"):
            self._gone = threading.Event()
        return self._gone

    def on_connection_close(self):
        self.gone.set()

    async def stream_json_lines(self, work: Callable[[Callable[[dict], None]], Any],
                                final: Callable[[Any], dict]):
        """Run `work(on_event)` in a thread, stream its events, then `final(result)` or an error line.

        Returns the result (None when the work failed)."""
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue = asyncio.Queue()
        self.set_status(200)
        self.set_header("Content-Type", "application/x-ndjson")
        self.set_header("Cache-Control", "no-cache")
        task = on_own_thread(work, lambda e: loop.call_soon_threadsafe(lines.put_nowait, e))
        while True:
            waiter = asyncio.ensure_future(lines.get())
            done, _ = await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                await self._send_line(waiter.result())
                continue
            waiter.cancel()
            while not lines.empty():
                await self._send_line(lines.get_nowait())
            break
        result = None
        try:
            result = task.result()
            last = final(result)
        except (CellhopError, ValueError) as exc:
            last = {"type": "error", "status": http_status(exc), **error_body(exc)}
        except Exception as exc:  # reported in the stream; the log has the traceback
            self.log.exception("cellhop: %s %s failed", self.request.method, self.request.path)
            last = {"type": "error", "status": 500, "error": type(exc).__name__, "message": str(exc)}
        await self._send_line(last)
        if not self.gone.is_set():
            self.finish()
        return result

    async def _send_line(self, event: dict) -> None:
        if self.gone.is_set():
            return
        try:
            self.write(json.dumps(event, default=str) + "\n")
            await self.flush()
        except StreamClosedError:
            self.gone.set()


def check_may_act_on(caller: Caller, container) -> None:
    """A kernel's token stops, restarts, interrupts or reads the log of the containers that kernel
    started, no other's (the server's user may act on any)."""
    owner = Caller.of(container.spec.caller)
    if caller.kind == "kernel" and owner != caller:
        raise web.HTTPError(403, f"container {container.id} was started by {owner.label}; a kernel's "
                                 "token acts only on the containers that kernel started")
