"""Loopback sockets in front of a container kernel that speaks CurveZMQ (one on a Ray node).

A whole GPU kernel on another host is reached by jupyter_client and JupyterLab,
which cannot do Curve with keys they never get (the kernel's secret key stays on
its node). The provisioner therefore puts this tunnel in front of it: plain
sockets on 127.0.0.1 of the server's host, relayed frame for frame to the
kernel's encrypted ones. Messages stay HMAC-signed end to end; what leaves the
host is encrypted. One proxy thread a channel; `close()` ends them.
"""

from __future__ import annotations

import threading

import zmq

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
        public, secret = zmq.curve_keypair()  # this tunnel's own pair; it never leaves this process
        self.remote = {k: remote_info[k] for k in ("ip", *(f"{c}_port" for c in _CHANNELS))}
        self.local_info = {k: v for k, v in remote_info.items()
                           if k not in ("curve_serverkey", "curve_publickey", "curve_secretkey")}
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
