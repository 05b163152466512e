"""The server's wire to one endpoint container, on the server's own event loop (zmq.asyncio): apply
requests go out on the shell channel, pipelined, and each reply settles the future of its request.
Nothing blocks the loop; nothing a container sends is unpickled beyond data types (safe_pickle), and
what `kernel/endpoint.py`'s `serve_call` answers is a tuple of numbers and strings.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import pickle

import zmq
import zmq.asyncio

from ..wire import _url, curve_client_keys, lean_url, make_session


class _Module:
    """Unpickles as an imported module (the container imports it; the server never does)."""

    def __init__(self, name: str):
        self.name = name

    def __reduce__(self):
        return importlib.import_module, (self.name,)


class _ByName:
    """Unpickles as `module.name`: how a request names the container's side (kernel/endpoint.py)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __reduce__(self):
        return getattr, (_Module(self.module), self.name)


SERVE_CALL = _ByName("cellhop.kernel.endpoint", "serve_call")


class _DataOnly(pickle.Unpickler):
    """Plain data only (tuples, lists, dicts, strings, numbers): an answer that names any class or function
    is refused, so nothing a container sends runs code in the server."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"an endpoint's answer may hold plain data only, not {module}.{name}")


def _dumps(obj) -> list:
    return [pickle.dumps(obj, protocol=5)]


class LinkClosed(Exception):
    """The container's wire closed (it died or was stopped) before the request was answered."""


class BadAnswer(Exception):
    """The container answered with something that is not an endpoint answer."""


class KernelLink:
    """An async connection to a container kernel: its calls go on the kernel's lean channel where it has one
    (kernel/lean_channel.py: read by the kernel's main thread, no hand-off through ipykernel's shell thread),
    else on the shell channel."""

    def __init__(self, info: dict, context: zmq.asyncio.Context | None = None):
        self.info = info
        self.session = make_session(info)
        self.context = context or zmq.asyncio.Context.instance()
        self.shell = self._socket(info, "shell", zmq.DEALER)
        self.control = self._socket(info, "control", zmq.DEALER)
        self.calls = self.shell  # where calls go (`use_lean_channel` may move them)
        self._lean_busy = False  # one call at a time on the lean channel; more at once go on the shell
        self.pending: dict[str, asyncio.Future] = {}
        self._raw: set[str] = set()  # requests answered with the reply's content as it is
        self.closed = False
        self._readers = [asyncio.ensure_future(self._read(self.shell))]

    async def use_lean_channel(self, timeout: float = 10.0) -> bool:
        """Send calls on the kernel's lean channel when its kernel_info says it has one; True when so."""
        if lean_url(self.info) is None:
            return False
        msg = self.session.msg("kernel_info_request", {})
        msg_id = msg["header"]["msg_id"]
        future = asyncio.get_running_loop().create_future()
        self.pending[msg_id] = future
        self._raw.add(msg_id)
        try:
            await self.shell.send_multipart(self.session.serialize(msg))
            info = await asyncio.wait_for(future, timeout)
        except (asyncio.TimeoutError, LinkClosed, BadAnswer):
            return False
        finally:
            self.pending.pop(msg_id, None)
            self._raw.discard(msg_id)
        if info.get("cellhop_lean") is not True or self.closed:
            return False
        self.calls = self._socket(self.info, "lean", zmq.DEALER)
        self._readers.append(asyncio.ensure_future(self._read(self.calls)))
        return True

    def _socket(self, info: dict, channel: str, kind: int):
        sock = self.context.socket(kind)
        sock.linger = 0
        server_key = info.get("curve_serverkey")
        if server_key:
            sock.curve_serverkey = server_key.encode() if isinstance(server_key, str) else server_key
            sock.curve_publickey, sock.curve_secretkey = curve_client_keys(info)
        sock.setsockopt(zmq.IDENTITY, self.session.bsession)
        sock.connect(_url(info, channel))
        return sock

    async def call(self, fn, args: tuple, waits: bool = False):
        """fn(*args) in the container (fn named by reference); its return value, rebuilt as data only.
        `waits`: a call answered whenever something comes (a stream's next part, a WebSocket's next
        message) goes on the shell, leaving the lean channel to the quick ones."""
        if self.closed:
            raise LinkClosed("the container's connection is closed")
        msg = self.session.msg("cellhop_apply_request", {"n": 1})
        future = asyncio.get_running_loop().create_future()
        self.pending[msg["header"]["msg_id"]] = future
        frames = self.session.serialize(msg) + _dumps((fn, [(args, {})]))
        # The lean channel takes one call at a time here: with several waiting on its socket, a reply sent
        # between two reads can leave the next request unread (seen with 16 at once); more go on the shell.
        lean = self.calls is not self.shell and not self._lean_busy and not waits
        if lean:
            self._lean_busy = True
        try:
            await (self.calls if lean else self.shell).send_multipart(frames, copy=False)
            return await future
        finally:
            self.pending.pop(msg["header"]["msg_id"], None)
            if lean:
                self._lean_busy = False

    def interrupt(self) -> None:
        if not self.closed:
            msg = self.session.msg("interrupt_request", {})
            self.control.send_multipart(self.session.serialize(msg))

    async def _read(self, sock) -> None:
        try:
            while True:
                frames = await sock.recv_multipart(copy=False)
                _, frames = self.session.feed_identities(frames, copy=False)
                msg = self.session.deserialize(frames, content=True, copy=False)
                msg_id = msg["parent_header"].get("msg_id")
                future = self.pending.get(msg_id)
                if future is None or future.done():
                    continue
                try:
                    future.set_result(msg["content"] if msg_id in self._raw else _answer(msg))
                except Exception as exc:  # noqa: BLE001 - handed to the request that asked
                    future.set_exception(exc)
        except (asyncio.CancelledError, zmq.ZMQError):
            pass
        except Exception as exc:  # a malformed message: the link is done
            self._fail(BadAnswer(f"the container sent a message the server could not read ({exc})"))
            return
        self._fail(LinkClosed("the container's connection closed"))

    def _fail(self, exc: Exception) -> None:
        for future in list(self.pending.values()):
            if not future.done():
                future.set_exception(exc)

    def close(self, why: Exception | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self._fail(why or LinkClosed("the container's connection closed"))
        for reader in self._readers:
            reader.cancel()
        for sock in {self.shell, self.control, self.calls}:
            sock.close(linger=0)


def _answer(msg: dict):
    content = msg["content"]
    if content.get("status") != "ok":
        raise BadAnswer(f"{content.get('ename', 'error')}: {content.get('evalue', '')}")
    buffers = [memoryview(b) for b in msg.get("buffers", [])]
    if not buffers:
        raise BadAnswer("the container's answer held no result")
    try:
        outcomes = _DataOnly(io.BytesIO(buffers[0])).load()
    except Exception as exc:
        raise BadAnswer(f"the container's answer is not plain data ({exc})") from None
    (ok, value), = outcomes
    if not ok:
        raise BadAnswer(f"the call ended with {value!r}")
    return value
