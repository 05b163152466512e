"""A socket of its own for shipped calls, read by the container kernel's main thread.

Inside the container (container_kernel.py). ipykernel 7 reads the shell
socket in a thread of its own and hands each request to the main thread
over an inproc socket, and each reply back the same way: two thread
hand-offs per request, which on a busy host cost as much as the rest of a
trivial `f.remote()`. Shipped calls and cells (`cellhop_apply_request`,
`cellhop_execute_request`) may come instead on `<ipc base>-lean`, a ROUTER socket beside the
kernel's ipc sockets that the main thread's event loop reads itself; the
request is dispatched as the shell dispatches it (the kernel's lock, so
one request at a time; the parent set, so output goes where it belongs;
SIGINT raises KeyboardInterrupt in the call; busy and idle as for any
shipped request: lean_status.py) and the reply goes back on the same
socket. Only with ipc transport; the kernel's `kernel_info` says it is
there (`cellhop_lean`), so a notebook uses it only with a kernel that has it.
"""

from __future__ import annotations

import asyncio
import logging

import zmq

from ..wire import lean_url

LEAN_TYPES = frozenset({"cellhop_apply_request", "cellhop_execute_request"})

log = logging.getLogger("cellhop")


class LeanChannel:
    """The container kernel's lean socket (see the module docstring)."""

    def __init__(self, kernel, url: str, context=None):
        self.kernel = kernel
        self.socket = (context or zmq.Context.instance()).socket(zmq.ROUTER)
        self.socket.linger = 0
        self.socket.bind(url)
        self._stream = None
        self._lock = None

    @classmethod
    def open(cls, kernel, info: dict, context=None) -> LeanChannel | None:
        url = lean_url(info)
        if url is None:
            return None
        try:
            return cls(kernel, url, context)
        except zmq.ZMQError as exc:
            log.warning("cellhop: no lean channel (%s); calls go through the shell", exc)
            return None

    def start(self, io_loop) -> None:
        """Read the socket on the kernel's own (main thread's) event loop."""
        from zmq.eventloop.zmqstream import ZMQStream

        self._stream = ZMQStream(self.socket, io_loop)
        self._stream.on_recv(self._received, copy=False)

    def _received(self, frames) -> None:
        asyncio.ensure_future(self._dispatch(frames))

    async def _dispatch(self, frames) -> None:
        kernel = self.kernel
        lock = getattr(kernel, "_main_asyncio_lock", None)
        if lock is None:
            lock = self._lock = self._lock or asyncio.Lock()
        async with lock:  # one request at a time, shell requests included
            try:
                idents, rest = kernel.session.feed_identities(frames, copy=False)
                msg = kernel.session.deserialize(rest, content=True, copy=False)
            except Exception:
                log.warning("cellhop: an invalid message on the lean channel was dropped")
                return
            msg_type = msg["header"].get("msg_type")
            if msg_type not in LEAN_TYPES:
                return
            kernel.set_parent(idents, msg, channel="shell")
            kernel._publish_status("busy", "shell")
            try:
                kernel.pre_handler_hook()  # SIGINT raises KeyboardInterrupt in the call, as on the shell
            except Exception:
                pass
            try:
                await getattr(kernel, msg_type)(self.socket, idents, msg)
            except Exception:
                log.exception("cellhop: a call on the lean channel failed")
            except KeyboardInterrupt:
                log.error("KeyboardInterrupt caught in kernel.")
            finally:
                try:
                    kernel.post_handler_hook()
                except Exception:
                    pass
            kernel._publish_status("idle", "shell")
        self.look_for_requests()

    def look_for_requests(self) -> None:
        """After a reply: it went out on the socket itself, not through the stream, and a send can swallow
        the edge of the socket's (edge-triggered) descriptor that says a request is waiting (a pipelined
        .map's next chunk), so look for one now rather than at the next wake-up."""
        if self._stream is not None and self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._stream.flush(zmq.POLLIN)
