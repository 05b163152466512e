"""A container's ports on the Ray runtime (server_ext/port_tunnel.py): `RayRuntime.connect_port` reaches a
server inside a container on a Ray node through the container actor's relay, CurveZMQ with the one client
key the control plane derives, and never through a port opened for everyone. The real two-node cluster of
ray_cluster.py; the container runs a small HTTP server in its kernel."""

from __future__ import annotations

import hashlib
import shutil
import socket
import tempfile

import pytest

from kernel_fixtures import short_runtime_dir
from test_proxy_ports import _status, proxy  # noqa: F401  (proxy is a fixture)
from ray_cluster import HEAD_IP, WORKER_IP, ray_cluster  # noqa: F401  (ray_cluster is a fixture)

pytestmark = pytest.mark.timeout(240)

SERVER = r'''
import hashlib, http.server, socket, threading
_big = bytes(range(256)) * (16 << 10)  # 4 MiB
_seen = []
class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        _seen.append(self.path)
        body = _big if self.path == "/big" else f"hello from the container, {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
threading.Thread(target=_server.serve_forever, daemon=True).start()
_free = socket.socket(); _free.bind(("127.0.0.1", 0))
port, free_port, big_sha = _server.server_address[1], _free.getsockname()[1], hashlib.sha256(_big).hexdigest()
_free.close()
'''


@pytest.fixture(scope="module")
def ray_manager(ray_cluster):  # noqa: F811
    from traitlets.config import Config

    from cellhop.server_ext.config import Cellhop
    from cellhop.server_ext.container_manager import ContainerManager

    root = short_runtime_dir()
    state = tempfile.mkdtemp(prefix="cellhop-ray-state-", dir="/var/tmp")
    config = Config()
    config.RayRuntime.address = ray_cluster.address
    manager = ContainerManager(Cellhop(config=config, runtime="ray", runtime_root=root, state_dir=state,
                                       queue_timeout=15))
    yield manager
    manager.close()
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)


def run_in(container, code: str, names: list[str]) -> dict:
    from cellhop.wire import KernelConnection

    conn = KernelConnection(container.connection_info, channels=("shell",))
    try:
        reply = conn.request("shell", "execute_request", {"code": code, "silent": False, "user_expressions":
                                                          {n: n for n in names}}, timeout=30)
    finally:
        conn.close()
    assert reply.content["status"] == "ok", reply.content
    return {n: eval(reply.content["user_expressions"][n]["data"]["text/plain"]) for n in names}


def http_get(sock: socket.socket, path: str) -> tuple[bytes, bytes]:
    sock.settimeout(60)
    sock.sendall(f"GET {path} HTTP/1.0\r\nHost: container\r\n\r\n".encode())
    data = bytearray()
    while chunk := sock.recv(1 << 16):
        data += chunk
    sock.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return head, body


def refused(url: str, server_key: str, keys: tuple[str, str] | None, port: int) -> bool:
    """Whether a DEALER with client `keys` (None: no CurveZMQ) gets no answer at all to an "open"."""
    import zmq

    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    if keys is not None:
        dealer.curve_serverkey = server_key.encode()
        dealer.curve_publickey, dealer.curve_secretkey = (k.encode() for k in keys)
    dealer.connect(url)
    dealer.send_multipart([b"open", str(port).encode()])
    answered = dealer.poll(3000)
    dealer.close(linger=0)
    context.term()
    return not answered


def test_a_port_inside_a_ray_container_through_its_relay(ray_manager):
    import ray

    from cellhop.container import ContainerSpec
    from cellhop.server_ext.container_ports import PortNotListening, PortUnreachable
    from cellhop.server_ext.runtimes.curve import keypair
    from cellhop.wire import CLIENT_PUBLIC, CLIENT_SECRET

    runtime = ray_manager.runtime
    c = ray_manager.start(ContainerSpec(gpu="none", owner="ports"))
    stopped = False
    try:
        assert c.node in (HEAD_IP, WORKER_IP)
        got = run_in(c, SERVER, ["port", "free_port", "big_sha"])
        port, free_port = got["port"], got["free_port"]

        head, body = http_get(runtime.connect_port(c, port), "/hello")
        assert head.startswith(b"HTTP/1.0 200") and body == b"hello from the container, /hello", head
        head, body = http_get(runtime.connect_port(c, port), "/big")  # more than the relay's window, in order
        assert head.startswith(b"HTTP/1.0 200") and hashlib.sha256(body).hexdigest() == got["big_sha"]

        with pytest.raises(PortNotListening, match=f"nothing listens on port {free_port}"):
            runtime.connect_port(c, free_port)

        # the relay listens on the node's address only, with CurveZMQ, and answers one client key alone:
        # not a stranger's, not a client without CurveZMQ, not even the kernel's client pair (notebooks hold it)
        url = ray.get(c.handle.actor.port_relay.remote(), timeout=30)
        assert url.startswith(f"tcp://{c.node}:")
        server_key = c.handle.kernel_public
        info = c.connection_info
        assert refused(url, server_key, keypair(), port)
        assert refused(url, server_key, None, port)
        assert refused(url, server_key, (info[CLIENT_PUBLIC], info[CLIENT_SECRET]), port)
        assert run_in(c, "n = len(_seen)", ["n"])["n"] == 2  # none of them reached the server

        # a connection open when the container ends is closed; then there is no way in at all
        held = runtime.connect_port(c, port)
        ray_manager.stop(c.id)
        stopped = True
        held.settimeout(60)
        assert held.recv(1) == b""
        held.close()
        with pytest.raises(PortUnreachable, match="has no running kernel"):
            runtime.connect_port(c, port)
    finally:
        if not stopped:
            ray_manager.stop(c.id)


# -- the proxy route of a real cellhop server on the Ray runtime --------------------------------------------
@pytest.fixture
def jp_server_config(runtime_root, ray_cluster):  # noqa: F811
    return {"ServerApp": {"jpserver_extensions": {"cellhop": True}},
            "Cellhop": {"runtime": "ray", "runtime_root": str(runtime_root), "idle_timeout": 0},
            "RayRuntime": {"address": ray_cluster.address}}


async def test_the_proxy_route_reaches_a_server_in_a_ray_container(control_plane, proxy):
    from cellhop.container import ContainerSpec

    manager = control_plane.manager
    assert manager.runtime.name == "ray"
    c = manager.start(ContainerSpec(gpu="none", owner="proxied"))
    try:
        got = run_in(c, SERVER, ["port", "free_port"])
        r = await proxy(c.id, got["port"], "/page?x=1")
        assert r.code == 200 and r.body == b"hello from the container, /page?x=1"
        code, body = await _status(proxy(c.id, got["free_port"], "/"))
        assert code == 502 and b"PortNotListening" in body and b"nothing listens" in body, body
    finally:
        manager.stop(c.id)


# -- an endpoint whose containers the Ray runtime places -----------------------------------------------------
WHERE = """
def where(x):  # which container answered
    import os
    return {"y": 2 * int(x), "container": os.environ["CELLHOP_CONTAINER_ID"]}
"""


def _notebook_function(source: str, name: str):
    """A function defined as in a notebook (in __main__), so it is shipped by value, as a notebook's is."""
    namespace = {"__name__": "__main__"}
    exec(source, namespace)
    return namespace[name]


async def test_an_endpoint_is_served_from_containers_on_the_cluster(control_plane, jp_fetch):
    import json

    import cloudpickle

    from cellhop.kernel.endpoint import Endpoint

    where = _notebook_function(WHERE, "where")
    spec = Endpoint(where, max_containers=1, scaledown=60).spec()
    r = await jp_fetch("cellhop", "api", "endpoints", "where", method="PUT", body=cloudpickle.dumps(where),
                       params={"spec": json.dumps(spec)})
    assert r.code == 201, r.body
    try:
        r = await jp_fetch("cellhop", "endpoints", "where", "", method="POST", body=json.dumps({"x": 21}),
                           request_timeout=180, raise_error=False)
        assert r.code == 200, r.body
        answer = json.loads(r.body)
        assert answer["y"] == 42, answer
        container = control_plane.manager.get(answer["container"])
        assert container.spec.owner == "endpoint where" and container.node in (HEAD_IP, WORKER_IP), container.node
        assert "curve_serverkey" in container.connection_info  # reached over CurveZMQ, as every Ray container
    finally:
        await jp_fetch("cellhop", "api", "endpoints", "where", method="DELETE")
