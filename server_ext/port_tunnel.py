"""A container's TCP port on a Ray node, reached from the control plane over CurveZMQ (`RayRuntime.connect_port`).

The proxy (api/proxy.py) wants a blocking socket connected to a port inside a container. On the Ray
runtime the container runs on another node, so nothing there is published on a port: the container's
actor (ray_actor.py) keeps one relay (`RelayServer`), a ZMQ ROUTER bound on the node's address with the
actor's CurveZMQ key pair, behind a ZAP authenticator that admits exactly one client public key. That key
pair is derived on both sides from the control plane's and the actor's keys (curve.client_keypair with the
context `relay_context(container id)`), so it is not the pair the kernel admits and handed to notebooks:
only the control plane, which holds its secret key, can open a connection. Knowing the actor's public key
(it goes through Ray) is not enough, and a client without CurveZMQ completes no handshake.

On the control plane, `open_port` makes one DEALER per proxied connection, asks the relay to connect to
the port (the node connects from inside the container's network, container_ports.connect_in_container,
off its pump thread), then pumps bytes between the DEALER and one end of a socketpair whose other end
it returns. Frames (the first is the kind):

    ["open", port]    client -> relay: connect to `port` inside the container
    ["ok"]            relay -> client: connected
    ["error", class name, message]   relay -> client: the connection was not made (PortNotListening, ...)
    ["d", bytes]      either way: data
    ["a", count]      either way: `count` bytes of the other's data were written on (flow control)
    ["c"]             either way: no more data this way (the sender's socket read end-of-file)
    ["x"]             either way: the connection is gone (reset, or the container or relay ended)

Flow control: a side reads from its socket only while less than WINDOW bytes it sent are unacknowledged,
so neither side ever holds more than that of one connection.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time

import zmq

from ..errors import CellhopError
from .container_ports import PortClosedConnection, PortNotListening, PortUnreachable

log = logging.getLogger("cellhop")

CHUNK = 256 * 1024
WINDOW = 2 << 20  # unacknowledged bytes a side may have sent on one connection
OPEN_TIMEOUT = 45.0  # the node's connect may take container_ports' timeout, plus its helper process
POLL_MS = 1000
_ERRORS = {cls.__name__: cls for cls in (PortNotListening, PortUnreachable, PortClosedConnection)}


def relay_context(container_id: str) -> str:
    """The key-derivation context of container `container_id`'s relay client pair (curve.client_keypair)."""
    return f"{container_id}/ports"


class _Stream:
    """One connection's byte stream on either side: a non-blocking socket and the frames of its peer."""

    def __init__(self, sock: socket.socket, send):
        sock.setblocking(False)
        self.sock, self.send = sock, send  # send(list of frames) to the peer
        self.out = bytearray()  # the peer's data, not yet written to the socket
        self.unacked = 0
        self.read_eof = self.peer_eof = self.shut = self.closed = False

    def events(self) -> int:
        if self.closed:
            return 0
        flags = zmq.POLLIN if not self.read_eof and self.unacked < WINDOW else 0
        return flags | (zmq.POLLOUT if self.out else 0)

    @property
    def done(self) -> bool:
        return self.closed or (self.read_eof and self.shut)

    def on_frame(self, kind: bytes, rest: list) -> None:
        if kind == b"d" and rest and not self.peer_eof:
            self.out += rest[0]
            self.writable()
        elif kind == b"a" and rest:
            self.unacked = max(0, self.unacked - int(rest[0]))
        elif kind == b"c":
            self.peer_eof = True
            self._shut_when_written()
        elif kind == b"x":
            self.close(notify=False)

    def readable(self) -> None:
        try:
            data = self.sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if data:
            self.unacked += len(data)
            self.send([b"d", data])
        else:
            self.read_eof = True
            self.send([b"c"])

    def writable(self) -> None:
        if self.closed:
            return
        try:
            n = self.sock.send(self.out) if self.out else 0
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if n:
            del self.out[:n]
            self.send([b"a", str(n).encode()])
        self._shut_when_written()

    def _shut_when_written(self) -> None:
        if self.peer_eof and not self.out and not self.shut and not self.closed:
            self.shut = True
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self, notify: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        if notify:
            try:
                self.send([b"x"])
            except zmq.ZMQError:
                pass
        self.sock.close()


# -- the node's side ----------------------------------------------------------------------------------
class _Admitted:
    """A ZAP credentials provider: the one client public key (Z85) admitted."""

    def __init__(self, key: str):
        self.key = key.encode()

    def callback(self, domain, key) -> bool:
        return key == self.key


class RelayServer:
    """The relay of one container on its node: `url` (tcp://<node ip>:<random port>), CurveZMQ with the
    actor's key pair, admitting only `admitted` (a client public key). `connect(port)` returns a connected
    blocking socket or raises a CellhopError (container_ports' errors); it runs on a thread of its own.
    `close()` ends every connection and the relay."""

    def __init__(self, ip: str, public: str, secret: str, admitted: str, connect):
        from zmq.auth.thread import ThreadAuthenticator

        self._connect = connect
        self._context = zmq.Context()
        self._auth = ThreadAuthenticator(self._context)
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=_Admitted(admitted))
        router = self._context.socket(zmq.ROUTER)
        router.linger = 0
        router.sndhwm = router.rcvhwm = 0  # flow control is the window's (WINDOW), never a dropped frame
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.curve_server = True
        router.curve_publickey, router.curve_secretkey = public.encode(), secret.encode()
        self.url = f"tcp://{ip}:{router.bind_to_random_port(f'tcp://{ip}')}"
        self._router = router
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._opened: queue.SimpleQueue = queue.SimpleQueue()  # (identity, socket or None, error frames)
        self._streams: dict[bytes, _Stream] = {}
        self._pending: set[bytes] = set()
        self._stopping = False
        self._thread = threading.Thread(target=self._pump, name="cellhop-port-relay", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._wake()
        self._thread.join(timeout=10)
        self._auth.stop()
        self._context.term()
        os.close(self._wake_r)
        os.close(self._wake_w)
        while not self._opened.empty():
            _, sock, _ = self._opened.get()
            if sock is not None:
                sock.close()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _sender(self, identity: bytes):
        def send(frames):
            try:
                self._router.send_multipart([identity, *frames])
            except zmq.ZMQError:  # the client is gone (ROUTER_MANDATORY): its stream ends below
                stream = self._streams.get(identity)
                if stream is not None and not stream.closed:
                    stream.close(notify=False)
        return send

    def _open(self, identity: bytes, port: bytes) -> None:
        """On a thread of its own: connect, and hand the result to the pump."""
        try:
            sock = self._connect(int(port))
            result = (identity, sock, None)
        except ValueError:
            result = (identity, None, [b"error", b"CellhopError", b"the port must be a number"])
        except CellhopError as exc:
            result = (identity, None, [b"error", type(exc).__name__.encode(), str(exc).encode()])
        except Exception as exc:  # noqa: BLE001  (said to the control plane, which raises it)
            result = (identity, None, [b"error", b"PortUnreachable", f"the node could not connect: {exc}".encode()])
        self._opened.put(result)
        self._wake()

    def _pump(self) -> None:
        try:
            while not self._stopping:
                poller = zmq.Poller()
                poller.register(self._router, zmq.POLLIN)
                poller.register(self._wake_r, zmq.POLLIN)
                for stream in self._streams.values():
                    if stream.events():
                        poller.register(stream.sock, stream.events())
                ready = dict(poller.poll(POLL_MS))
                if self._wake_r in ready:
                    self._take_opened()
                if self._router in ready:
                    self._from_clients()
                for stream in list(self._streams.values()):
                    # zmq.Poller answers a plain socket by its file descriptor
                    flags = ready.get(stream.sock.fileno(), 0) if not stream.closed else 0
                    if flags & zmq.POLLIN:
                        stream.readable()
                    if flags & zmq.POLLOUT:
                        stream.writable()
                for identity in [i for i, s in self._streams.items() if s.done]:
                    self._streams.pop(identity).close(notify=False)
        except Exception:  # noqa: BLE001
            log.exception("cellhop: the port relay stopped")
        finally:
            for stream in self._streams.values():
                stream.close()
            self._streams.clear()
            self._router.close(linger=0)

    def _take_opened(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while not self._opened.empty():
            identity, sock, error = self._opened.get()
            self._pending.discard(identity)
            if sock is None:
                self._sender(identity)(error)
                continue
            self._streams[identity] = _Stream(sock, self._sender(identity))
            self._streams[identity].send([b"ok"])

    def _from_clients(self) -> None:
        while True:
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue
            identity, kind, rest = frames[0], frames[1], frames[2:]
            stream = self._streams.get(identity)
            if kind == b"open" and rest and stream is None and identity not in self._pending:
                self._pending.add(identity)
                threading.Thread(target=self._open, args=(identity, rest[0]), name="cellhop-port-open",
                                 daemon=True).start()
            elif stream is not None:
                stream.on_frame(kind, rest)


# -- the control plane's side ---------------------------------------------------------------------------
def open_port(context: zmq.Context, url: str, server_public: str, client_pair: tuple[str, str], port: int,
              where: str, alive=lambda: True, timeout: float = OPEN_TIMEOUT) -> socket.socket:
    """A blocking socket connected, through the relay at `url`, to `port` inside the container. Raises the
    container_ports error the node met (PortNotListening: 502, ...), or PortUnreachable when the relay does
    not answer within `timeout`. `alive()`: whether the container still runs (checked every second while
    the connection lasts; False ends it). `where` names the container in errors."""
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.sndhwm = dealer.rcvhwm = 0
    dealer.curve_serverkey = server_public.encode()
    dealer.curve_publickey, dealer.curve_secretkey = (k.encode() for k in client_pair)
    try:
        dealer.connect(url)
        dealer.send_multipart([b"open", str(port).encode()])
        if not dealer.poll(timeout * 1000):
            raise PortUnreachable(f"the port relay of {where} did not answer within {timeout:.0f} s; "
                                  "is its Ray node reachable from this host?")
        reply = dealer.recv_multipart()
        if reply[0] == b"error":
            kind, message = reply[1].decode(), reply[2].decode(errors="replace")
            raise _ERRORS.get(kind, CellhopError)(message)
        if reply[0] != b"ok":
            raise PortUnreachable(f"the port relay of {where} answered {reply[0][:20]!r}, not 'ok'")
        ours, theirs = socket.socketpair()
    except BaseException:
        dealer.close(linger=0)
        raise
    threading.Thread(target=_pump_one, args=(dealer, ours, alive), name="cellhop-port-tunnel",
                     daemon=True).start()
    return theirs


def _pump_one(dealer: zmq.Socket, sock: socket.socket, alive) -> None:
    stream = _Stream(sock, dealer.send_multipart)
    next_check = time.monotonic() + POLL_MS / 1000
    try:
        while not stream.done:
            poller = zmq.Poller()
            poller.register(dealer, zmq.POLLIN)
            if stream.events():
                poller.register(sock, stream.events())
            ready = dict(poller.poll(POLL_MS))
            if time.monotonic() >= next_check:
                if not alive():
                    break
                next_check = time.monotonic() + POLL_MS / 1000
            if dealer in ready:
                while not stream.closed:
                    try:
                        frames = dealer.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    stream.on_frame(frames[0], frames[1:])
            flags = ready.get(sock.fileno(), 0) if not stream.closed else 0
            if flags & zmq.POLLIN:
                stream.readable()
            if flags & zmq.POLLOUT:
                stream.writable()
    except Exception:  # noqa: BLE001
        log.exception("cellhop: a proxied connection to a Ray container failed")
    finally:
        stream.close(notify=not stream.done)
        dealer.close(linger=0)
