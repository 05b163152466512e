"""A lean Jupyter wire-protocol connection to one kernel (raw pyzmq + jupyter_client's Session).

Used by the control plane to see a container kernel become ready, and by the
notebook side to ship cells. It opens only the sockets asked for, signs with
the kernel's HMAC key, and sends buffers as separate (zero-copy) frames.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import zmq
from jupyter_client.session import Session

from .curve_tunnel import client_keys as curve_client_keys

CHANNEL_SOCKET_TYPES = {
    "shell": zmq.DEALER,
    "control": zmq.DEALER,
    "stdin": zmq.DEALER,
    "iopub": zmq.SUB,
}


@dataclass
class Message:
    """A received message: the parsed dict and its buffers (memoryviews, not copied)."""

    msg: dict
    buffers: list

    @property
    def type(self) -> str:
        return self.msg["header"]["msg_type"]

    @property
    def content(self) -> dict:
        return self.msg["content"]

    @property
    def parent_id(self) -> str | None:
        return self.msg.get("parent_header", {}).get("msg_id")


def _url(info: dict, channel: str) -> str:
    port = info[f"{channel}_port"]
    if info.get("transport", "tcp") == "ipc":
        return f"ipc://{info['ip']}-{port}"
    return f"tcp://{info['ip']}:{port}"


def make_session(info: dict) -> Session:
    key = info["key"]
    return Session(
        key=key.encode() if isinstance(key, str) else key,
        signature_scheme=info.get("signature_scheme", "hmac-sha256"),
        session=uuid.uuid4().hex,
        username="cellhop",
    )


class KernelConnection:
    """Sockets to one kernel. Not thread-safe: each socket belongs to one thread."""

    def __init__(self, info: dict, channels=("shell", "control", "stdin", "iopub"), context=None):
        self.info = info
        self.context = context or zmq.Context.instance()
        self.session = make_session(info)
        self.sockets: dict[str, zmq.Socket] = {}
        # A kernel on another host (Ray runtime) speaks CurveZMQ: its public key is in the info, and so is
        # the client key pair it admits (derived by the control plane, never sent to the node; curve.py).
        server_key = info.get("curve_serverkey")
        client_keys = curve_client_keys(info) if server_key else None
        for channel in channels:
            sock = self.context.socket(CHANNEL_SOCKET_TYPES[channel])
            sock.linger = 0
            if client_keys:
                sock.curve_serverkey = server_key.encode() if isinstance(server_key, str) else server_key
                sock.curve_publickey, sock.curve_secretkey = client_keys
            if channel == "iopub":
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            else:
                sock.setsockopt(zmq.IDENTITY, self.session.bsession)
            sock.connect(_url(info, channel))
            self.sockets[channel] = sock

    def message(self, msg_type: str, content: dict, metadata=None, parent=None) -> dict:
        """A message to send later with `send_message` (its msg_id is known before it leaves)."""
        return self.session.msg(msg_type, content, parent=parent, metadata=metadata)

    def send(self, channel: str, msg_type: str, content: dict, buffers=None, metadata=None, parent=None) -> str:
        """Send a request; return its msg_id."""
        msg = self.message(msg_type, content, metadata=metadata, parent=parent)
        self.session.send(self.sockets[channel], msg, buffers=buffers)
        return msg["header"]["msg_id"]

    def send_message(self, channel: str, msg: dict, buffers=None) -> None:
        """Send a fully formed message (re-signed with this kernel's key)."""
        self.session.send(self.sockets[channel], msg, buffers=buffers)

    def recv(self, channel: str, timeout: float | None = None) -> Message | None:
        """The next message on `channel`, or None after `timeout` seconds."""
        sock = self.sockets[channel]
        if timeout is not None and not sock.poll(int(timeout * 1000)):
            return None
        frames = sock.recv_multipart(copy=False)
        _, frames = self.session.feed_identities(frames, copy=False)
        msg = self.session.deserialize(frames, content=True, copy=False)
        buffers = [memoryview(b) for b in msg.pop("buffers", [])]
        return Message(msg, buffers)

    def request(self, channel: str, msg_type: str, content: dict, timeout: float, buffers=None) -> Message:
        """Send and wait for the reply to that very request."""
        msg_id = self.send(channel, msg_type, content, buffers=buffers)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            reply = self.recv(channel, timeout=max(left, 0))
            if reply is None:
                raise TimeoutError(f"no {msg_type} reply within {timeout} s")
            if reply.parent_id == msg_id:
                return reply

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close(linger=0)
        self.sockets.clear()
