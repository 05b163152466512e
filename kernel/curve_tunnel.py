"""Loopback sockets in front of a container kernel that speaks CurveZMQ (one on a Ray node).

A whole GPU kernel on another host is reached by jupyter_client and JupyterLab,
which cannot do Curve with keys they never get (the kernel's secret key stays on
its node). The provisioner therefore puts this tunnel in front of it: plain
sockets on 127.0.0.1 of the server's host, relayed frame for frame to the
kernel's encrypted ones. Messages stay HMAC-signed end to end; what leaves the
host is encrypted. One proxy thread a channel; `close()` ends them.

The tunnel's shell, control and stdin sockets share one identity, as
jupyter_client's do (its session id): the kernel sends an `input_request` on
stdin to the identity its execute_request came from on shell, so with two
identities `input()` would wait forever.

The kernel admits only its own clients: the connection info carries the
client key pair (`curve_client_publickey`/`curve_client_secretkey`, derived by
the control plane and the node alike, curve.py), and the node runs the
kernel through `serve_kernel` below, whose ZAP authenticator refuses any
other client key, so knowing the kernel's public key is not enough.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid

import zmq

from ..wire import ALLOWED_CLIENTS, plain_info
from ..wire import curve_client_keys as client_keys

# channel -> (socket type facing local clients, socket type facing the kernel)
_CHANNELS = {
    "shell": (zmq.ROUTER, zmq.DEALER),
    "control": (zmq.ROUTER, zmq.DEALER),
    "stdin": (zmq.ROUTER, zmq.DEALER),
    "hb": (zmq.ROUTER, zmq.DEALER),
    "iopub": (zmq.XPUB, zmq.XSUB),
}


class CurveTunnel:
    """`local_info` is a connection info for the kernel behind `remote_info` (which has curve_serverkey)."""

    def __init__(self, remote_info: dict):
        server_key = remote_info["curve_serverkey"]
        server_key = server_key.encode() if isinstance(server_key, str) else server_key
        public, secret = client_keys(remote_info)  # the pair the kernel admits; it never leaves this host
        identity = uuid.uuid4().hex.encode()  # shell, control and stdin: one identity (see above)
        self.remote = {k: remote_info[k] for k in ("ip", *(f"{c}_port" for c in _CHANNELS))}
        self.local_info = plain_info(remote_info)
        self.local_info.update(transport="tcp", ip="127.0.0.1")
        self._context = zmq.Context()
        self._threads: list[threading.Thread] = []
        self._controls: list[zmq.Socket] = []
        for channel, (local_type, remote_type) in _CHANNELS.items():
            local = self._context.socket(local_type)
            local.linger = 0
            if local_type == zmq.XPUB:
                local.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscriber's subscription reaches the kernel
            self.local_info[f"{channel}_port"] = local.bind_to_random_port("tcp://127.0.0.1")
            remote = self._context.socket(remote_type)
            remote.linger = 0
            remote.curve_serverkey, remote.curve_publickey, remote.curve_secretkey = server_key, public, secret
            if channel in ("shell", "control", "stdin"):
                remote.setsockopt(zmq.IDENTITY, identity)
            remote.connect(f"tcp://{remote_info['ip']}:{remote_info[f'{channel}_port']}")
            address = f"inproc://tunnel-{channel}"
            steer = self._context.socket(zmq.PAIR)
            steer.bind(address)
            control = self._context.socket(zmq.PAIR)
            control.linger = 0
            control.connect(address)
            self._controls.append(control)
            thread = threading.Thread(target=self._relay, args=(local, remote, steer),
                                      name=f"cellhop-tunnel-{channel}", daemon=True)
            thread.start()
            self._threads.append(thread)

    @staticmethod
    def _relay(local: zmq.Socket, remote: zmq.Socket, steer: zmq.Socket) -> None:
        try:
            zmq.proxy_steerable(local, remote, None, steer)
        except zmq.ZMQError:
            pass
        finally:
            for sock in (local, remote, steer):
                sock.close(linger=0)

    def leads_to(self, remote_info: dict) -> bool:
        """True when this tunnel already fronts `remote_info` (a restart in place keeps ports and keys)."""
        return all(remote_info.get(k) == v for k, v in self.remote.items())

    def close(self) -> None:
        for control in self._controls:
            control.send(b"TERMINATE")
        for thread in self._threads:
            thread.join(timeout=2)
        for control in self._controls:
            control.close(linger=0)
        self._controls.clear()
        self._threads.clear()
        self._context.term()


# -- the kernel's side: admit only known client keys ------------------------------------------------
class _KnownKeys:
    """A ZAP credentials provider: the client public keys (Z85) the kernel admits."""

    def __init__(self, keys):
        self.keys = {k.encode() if isinstance(k, str) else k for k in keys}

    def callback(self, domain, key) -> bool:
        return key in self.keys


def admit_only(keys) -> None:
    """From now on, every CurveZMQ server socket of this process admits only clients with one of `keys`:
    a ZAP authenticator is started in the socket's context before the socket is bound (ipykernel makes
    two contexts, one for the heartbeat)."""
    from zmq.auth.thread import ThreadAuthenticator

    provider = _KnownKeys(keys)
    authenticators: dict[int, ThreadAuthenticator] = {}
    lock = threading.Lock()
    original = zmq.Socket.set

    def set_option(sock, option, value):
        if option == zmq.CURVE_SERVER and value:
            with lock:
                context = sock.context
                if id(context) not in authenticators:
                    auth = ThreadAuthenticator(context)
                    auth.start()
                    auth.configure_curve_callback(domain="*", credentials_provider=provider)
                    authenticators[id(context)] = auth
        return original(sock, option, value)

    original_term, original_destroy = zmq.Context.term, zmq.Context.destroy

    def stop_authenticator(context) -> None:
        """The authenticator's thread closes its own sockets: before its context is termed (which would
        wait for them forever) or destroyed (which would close them from this thread, and libzmq aborts)."""
        with lock:
            auth = authenticators.pop(id(context), None)
        if auth is not None:
            auth.stop()

    def term(context):
        stop_authenticator(context)
        return original_term(context)

    def destroy(context, linger=None):
        stop_authenticator(context)
        return original_destroy(context, linger)

    zmq.Socket.set = set_option
    zmq.Socket.setsockopt = set_option
    zmq.Context.term = term
    zmq.Context.destroy = destroy


def serve_kernel(argv: list[str] | None = None) -> None:
    """The container kernel (container_kernel.main), admitting only the clients its connection file names."""
    argv = list(sys.argv[1:] if argv is None else argv)
    connection_file = argv[argv.index("-f") + 1] if "-f" in argv else None
    with open(connection_file) as f:
        config = json.load(f)
    allowed = list(config.get(ALLOWED_CLIENTS) or [])
    if not allowed:
        raise SystemExit("cellhop: the connection file names no client key to admit")
    if config.get("curve_publickey"):  # ipykernel's own debug socket connects with the kernel's pair
        allowed.append(config["curve_publickey"])
    admit_only(allowed)
    from .container_kernel import ContainerKernel, main

    # the whole way out (ipykernel's own cleanup, then the interpreter's) may take EXIT_GRACE twice over
    # from the shutdown request; a context's term() racing the authenticator's sockets could hang it forever
    ContainerKernel.shutdown_hooks.append(lambda: _exit_after(2 * EXIT_GRACE))
    main(argv)
    _exit_after(EXIT_GRACE)


EXIT_GRACE = 5.0  # seconds the interpreter's exit (ipykernel's atexit close, contexts' term) may take


def _exit_after(seconds: float) -> None:
    """The kernel has shut down: let the interpreter exit as usual (atexit: ipykernel closes its sockets
    and terminates its contexts), but never hang there. A context's term() can wait on the authenticator's
    sockets when the two race at exit; the process then ends with status 0 after `seconds`."""

    def force():
        time.sleep(seconds)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(0)

    threading.Thread(target=force, name="cellhop-exit-watchdog", daemon=True).start()


if __name__ == "__main__":
    serve_kernel()
