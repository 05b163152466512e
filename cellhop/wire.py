"""A lean Jupyter wire-protocol connection to one kernel (raw pyzmq + jupyter_client's Session),
and a container kernel's connection info.

Used by the control plane to see a container kernel become ready, and by the
notebook side to ship cells. It opens only the sockets asked for, signs with
the kernel's HMAC key, and sends buffers as separate (zero-copy) frames.

A connection info is what a kernel's connection file holds (transport, ip,
ports, HMAC key), plus, for a kernel on another host (the Ray runtime),
its CurveZMQ fields: the kernel's public key and the client key pair it
admits (derived by the control plane, never sent to the node; curve.py).
`connection_info` makes a fresh one; `plain_info` strips the secret parts.
"""

from __future__ import annotations

import secrets
from hmac import compare_digest
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import zmq
from jupyter_client.session import Session

CHANNELS = ("shell", "iopub", "stdin", "control", "hb")
CLIENT_PUBLIC, CLIENT_SECRET = "curve_client_publickey", "curve_client_secretkey"
ALLOWED_CLIENTS = "cellhop_curve_clients"  # in the node's connection file: the client public keys admitted
CURVE_FIELDS = ("curve_serverkey", "curve_publickey", "curve_secretkey", CLIENT_PUBLIC, CLIENT_SECRET,
                ALLOWED_CLIENTS)
_MAX_IPC_PATH = 100  # AF_UNIX paths are limited to 108 bytes


def free_ports(count: int, ip: str = "127.0.0.1") -> list[int]:
    """`count` TCP ports free on `ip` right now (all held open together, so they differ)."""
    socks, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind((ip, 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def connection_info(transport: str = "tcp", ip: str = "127.0.0.1", ipc_dir: Path | None = None) -> dict:
    """A fresh connection file's content: a new HMAC key, and ipc sockets in `ipc_dir` (transport 'ipc',
    where the path is short enough) or free TCP ports on `ip`."""
    info = {"key": secrets.token_hex(32), "signature_scheme": "hmac-sha256", "kernel_name": "cellhop-container"}
    if transport == "ipc" and ipc_dir is not None and len(str(Path(ipc_dir) / "k-5")) < _MAX_IPC_PATH:
        info.update(transport="ipc", ip=str(Path(ipc_dir) / "k"))
        info.update({f"{ch}_port": n for n, ch in enumerate(CHANNELS, start=1)})
    else:
        info.update(transport="tcp", ip=ip)
        info.update({f"{ch}_port": p for ch, p in zip(CHANNELS, free_ports(len(CHANNELS), ip))})
    return info


def plain_info(info: dict, keep_key: bool = True) -> dict:
    """`info` without its CurveZMQ fields (keys, admitted clients) and, unless `keep_key`, its HMAC key."""
    drop = set(CURVE_FIELDS) | (set() if keep_key else {"key"})
    return {k: v for k, v in info.items() if k not in drop}


def curve_client_keys(info: dict) -> tuple[bytes, bytes]:
    """The client key pair to reach the kernel of `info` with: the one it admits, else a throwaway
    pair (which a kernel with an authenticator refuses)."""
    public, secret = info.get(CLIENT_PUBLIC), info.get(CLIENT_SECRET)
    if public and secret:
        return (public.encode() if isinstance(public, str) else public,
                secret.encode() if isinstance(secret, str) else secret)
    return zmq.curve_keypair()


CHANNEL_SOCKET_TYPES = {
    "shell": zmq.DEALER,
    "lean": zmq.DEALER,  # a cellhop container kernel's socket for calls (kernel/lean_channel.py), ipc only
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


def lean_url(info: dict) -> str | None:
    """Where a cellhop container kernel of connection info `info` takes calls past its shell thread
    (kernel/lean_channel.py): beside its ipc sockets; None for other transports."""
    if info.get("transport") != "ipc" or not info.get("ip"):
        return None
    path = f"{info['ip']}-lean"
    return f"ipc://{path}" if len(path.encode()) <= _MAX_IPC_PATH else None


def _url(info: dict, channel: str) -> str:
    if channel == "lean":
        url = lean_url(info)
        if url is None:
            raise ValueError("a lean channel needs an ipc connection")
        return url
    port = info[f"{channel}_port"]
    if info.get("transport", "tcp") == "ipc":
        return f"ipc://{info['ip']}-{port}"
    return f"tcp://{info['ip']}:{port}"


def _deserialize(session: Session, frames: list) -> Message:
    """Session.deserialize, checked the same way (signature, replays), without turning the header dates into
    datetimes (dateutil, a fifth of a warm call's parsing; nothing here reads them)."""
    if len(frames) < 5:
        raise TypeError("malformed message, must have at least 5 elements")
    parts = [bytes(f.bytes) if isinstance(f, zmq.Frame) else bytes(f) for f in frames[:5]]
    if session.auth is not None:
        signature = parts[0]
        if not signature:
            raise ValueError("Unsigned Message")
        if signature in session.digest_history:
            raise ValueError(f"Duplicate Signature: {signature!r}")
        session._add_digest(signature)
        if not compare_digest(signature, session.sign(parts[1:5])):
            raise ValueError(f"Invalid Signature: {signature!r}")
    header = session.unpack(parts[1])
    msg = {"header": header, "msg_id": header["msg_id"], "msg_type": header["msg_type"],
           "parent_header": session.unpack(parts[2]), "metadata": session.unpack(parts[3]),
           "content": session.unpack(parts[4])}
    buffers = [memoryview(f.buffer) if isinstance(f, zmq.Frame) else memoryview(f) for f in frames[5:]]
    return Message(msg, buffers)


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
        for channel in channels:
            self.open(channel)

    def open(self, channel: str) -> zmq.Socket:
        """Connect the socket of one more channel."""
        info = self.info
        server_key = info.get("curve_serverkey")
        client_keys = curve_client_keys(info) if server_key else None
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
        return sock

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
        return _deserialize(self.session, frames)

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
