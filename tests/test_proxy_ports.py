"""A container's ports through the Jupyter server: `{base_url}cellhop/proxy/<container id>/<port>/`
(server_ext/api/proxy.py, server_ext/container_ports.py, cellhop.forward).

A real jupyter_server with cellhop, a kernel of it, a real bubblewrap container in its own network
namespace running `python -m http.server` and a small tornado app (a chunked stream that waits for
the client, a large body, a WebSocket echo, an echo of what it was sent, a page setting cookies)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from server_kernel_client import run
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from cellhop.kernel.forward import forward
from cellhop.server_ext.api.base import KERNEL_TOKEN_SETTING
from cellhop.server_ext.container_ports import PortUnreachable, connect_in_container
from cellhop.server_ext.kernel_tokens import token_for

pytestmark = pytest.mark.timeout(240)

APP = r'''
import asyncio, json, sys
import tornado.web, tornado.websocket

released = asyncio.Event()

class Stream(tornado.web.RequestHandler):
    async def get(self):
        self.write("part 0\n")
        await self.flush()
        await released.wait()  # the rest only once the client has seen part 0 (a proxy that buffers never lets it)
        for i in range(1, 4):
            self.write(f"part {i}\n")
            await self.flush()

class Release(tornado.web.RequestHandler):
    def get(self):
        released.set()
        self.write("released")

class Big(tornado.web.RequestHandler):
    def get(self):
        self.write(bytes(range(256)) * (24 << 12))  # 24 MiB

class Echo(tornado.web.RequestHandler):
    def answer(self):
        self.write({"uri": self.request.uri, "body": self.request.body.decode(errors="replace"),
                    "headers": dict(self.request.headers.get_all())})
    get = post = put = answer

uploaded = {"n": 0}
some_arrived = asyncio.Event()

@tornado.web.stream_request_body
class Upload(tornado.web.RequestHandler):
    def data_received(self, chunk):
        uploaded["n"] += len(chunk)
        some_arrived.set()
    def put(self):
        self.write({"n": uploaded["n"]})

class Arrived(tornado.web.RequestHandler):
    async def get(self):
        await some_arrived.wait()  # answers once part of the upload is here (a proxy that buffers never lets it)
        self.write({"n": uploaded["n"]})

class Cookies(tornado.web.RequestHandler):
    def get(self):
        self.set_cookie("_xsrf", "planted-by-the-container")
        self.set_cookie("app", "ok")
        self.write("cookies")

class HugeHead(tornado.web.RequestHandler):
    def get(self):
        for i in range(20):
            self.set_header(f"X-Big-{i}", "b" * 8000)
        self.write("huge")

class Ws(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin):
        return True  # as many apps do: the proxy is what must refuse another site's page

    def on_message(self, message):
        self.write_message("echo: " + message)

async def main():
    app = tornado.web.Application([("/stream", Stream), ("/release", Release), ("/big", Big),
                                   ("/echo", Echo), ("/cookies", Cookies), ("/ws", Ws),
                                   ("/hugehead", HugeHead), ("/upload", Upload), ("/arrived", Arrived)])
    app.listen(int(sys.argv[1]), address="127.0.0.1")
    await asyncio.Event().wait()

asyncio.run(main())
'''

START = '''%%remote --no-pull
import pathlib, socket, subprocess, sys, time
site = pathlib.Path("site")
(site / "sub").mkdir(parents=True, exist_ok=True)
(site / "index.html").write_text('<a href="sub/page.html">next</a> INDEX-MARK')
(site / "sub" / "page.html").write_text("PAGE-MARK")
pathlib.Path("app.py").write_text({app!r})
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port
ports = [free(), free()]
quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
subprocess.Popen([sys.executable, "-m", "http.server", str(ports[0]), "--bind", "127.0.0.1", "--directory", "site"], **quiet)
subprocess.Popen([sys.executable, "app.py", str(ports[1])], **quiet)
for port in ports:
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            break
        except OSError:
            assert time.time() < deadline, "the servers did not start"
            time.sleep(0.1)
print("PORTS", *ports)
'''


async def _serving(start_kernel, control_plane):
    """A kernel whose container runs the two servers: (kernel id, kernel client, container id, files, app)."""
    kid, kc = await start_kernel()
    content, out, _ = await run(kc, START.format(app=APP), timeout=180)
    assert content["status"] == "ok", (content, out)
    files, app = (int(p) for p in re.search(r"PORTS (\d+) (\d+)", out).groups())
    [container] = control_plane.manager.list()
    return kid, kc, container.id, files, app


@pytest.fixture
def proxy(jp_base_url, http_server_client, jp_auth_header):
    """fetch(container id, port, rest, **kwargs): a request through the proxy, the path sent as written."""

    def fetch(container_id, port, rest="/", headers=None, auth=True, **kwargs):
        headers = dict(headers or {})
        if auth:
            for key, value in jp_auth_header.items():
                headers.setdefault(key, value)
        kwargs.setdefault("request_timeout", 60)
        kwargs.setdefault("follow_redirects", False)
        return http_server_client.fetch(f"{jp_base_url}cellhop/proxy/{container_id}/{port}{rest}",
                                        headers=headers, **kwargs)

    return fetch


async def _status(call) -> tuple[int, bytes]:
    try:
        r = await call
    except HTTPClientError as exc:
        return exc.code, exc.response.body if exc.response is not None else b""
    return r.code, r.body


async def test_servers_in_a_container_answer_through_the_proxy(start_kernel, control_plane, proxy, jp_base_url,
                                                               jp_http_port, jp_auth_header):
    _, kc, cid, files, app = await _serving(start_kernel, control_plane)

    # python -m http.server: the page, then its relative link resolved against the proxied URL
    page = await proxy(cid, files, "/")
    assert b"INDEX-MARK" in page.body and page.headers["Content-Type"].startswith("text/html")
    link = re.search(rb'href="([^"]+)"', page.body).group(1).decode()
    assert (await proxy(cid, files, "/" + link)).body == b"PAGE-MARK"
    # the prefix without its slash redirects to it (relative links need it)
    r = await proxy(cid, files, "", raise_error=False)
    assert r.code == 302 and r.headers["Location"].endswith(f"cellhop/proxy/{cid}/{files}/")
    head = await proxy(cid, files, "/sub/page.html", method="HEAD")
    assert head.code == 200 and head.body == b"" and head.headers["Content-Length"] == "9"

    # use through the proxy is use of the container: its idle time starts again
    container = control_plane.manager.get(cid)
    container.last_activity -= 1000
    before = container.last_activity
    await proxy(cid, files, "/")
    assert container.last_activity > before + 500

    # a chunked stream is passed on as it comes: the server sends the rest only once part 0 was received here
    received = []
    released = asyncio.get_running_loop().create_future()

    def on_chunk(chunk):
        received.append(chunk)
        if b"part 0" in b"".join(received) and not released.done():
            released.set_result(asyncio.ensure_future(proxy(cid, app, "/release")))

    streamed = await proxy(cid, app, "/stream", streaming_callback=on_chunk)
    assert (await released.result()).body == b"released"
    assert b"".join(received) == b"".join(f"part {i}\n".encode() for i in range(4))
    assert streamed.code == 200

    # a request body is passed on as it comes: the test sends the rest once the server has some of it
    async def produce(write):
        await write(b"u" * 65536)
        arrived = json.loads((await proxy(cid, app, "/arrived")).body)["n"]
        assert 0 < arrived <= 65536
        for _ in range(64):
            await write(b"u" * 65536)

    r = await proxy(cid, app, "/upload", method="PUT", body_producer=produce,
                    headers={"Content-Length": str(65 * 65536)}, request_timeout=120)
    assert json.loads(r.body)["n"] == 65 * 65536

    # a large body, intact
    big = await proxy(cid, app, "/big", request_timeout=120)
    assert big.body == bytes(range(256)) * (24 << 12)

    # a request body and the query pass unchanged; the Jupyter server's credentials never reach the container
    r = await proxy(cid, app, "/echo?a=1&b=%2F", method="POST", body="x" * 100_000,
                    headers={"Cookie": "_xsrf=secret; app=1", "X-App": "kept"})
    echoed = json.loads(r.body)
    assert echoed["uri"] == "/echo?a=1&b=%2F" and echoed["body"] == "x" * 100_000
    sent = {k.lower(): v for k, v in echoed["headers"].items()}
    assert "authorization" not in sent and sent["cookie"] == "app=1" and sent["x-app"] == "kept"
    assert sent["x-forwarded-prefix"] == f"{jp_base_url}cellhop/proxy/{cid}/{app}"
    token = jp_auth_header["Authorization"].split()[1]
    r = await proxy(cid, app, f"/echo?a=%2F+b&token={token}&q=1", auth=False,
                    headers={"Authorization": "Bearer app-key"})
    echoed = json.loads(r.body)  # authenticated by the query's token: it is dropped, the app's own key kept
    assert echoed["uri"] == "/echo?a=%2F+b&q=1" and echoed["headers"]["Authorization"] == "Bearer app-key"
    # the container may set its own cookies, not the Jupyter server's
    r = await proxy(cid, app, "/cookies")
    cookies = r.headers.get_list("Set-Cookie")
    assert any(c.startswith("app=ok") for c in cookies) and not any(c.startswith("_xsrf") for c in cookies)

    # a WebSocket
    ws = await websocket_connect(HTTPRequest(
        f"ws://127.0.0.1:{jp_http_port}{jp_base_url}cellhop/proxy/{cid}/{app}/ws", headers=jp_auth_header))
    for text in ("hello", "x" * 200_000):
        await ws.write_message(text)
        assert await asyncio.wait_for(ws.read_message(), 30) == "echo: " + text
    ws.close()

    # cellhop.forward in the container, and %%remote --port from the notebook
    content, out, _ = await run(kc, f"%%remote --no-pull\nimport cellhop\nprint(cellhop.forward({app}))")
    assert content["status"] == "ok" and out.strip() == f"{jp_base_url}cellhop/proxy/{cid}/{app}/", out
    content, out, msgs = await run(kc, f"%%remote --port {files}\nx = 1")
    links = [m["content"]["data"]["text/html"] for m in msgs if m["msg_type"] == "display_data"
             and "text/html" in m["content"]["data"]]
    assert content["status"] == "ok" and any(f'href="{jp_base_url}cellhop/proxy/{cid}/{files}/"' in h
                                              for h in links), msgs


class _HostPage(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"HOST-LOOPBACK")

    def log_message(self, *args):
        pass


async def test_the_proxy_lets_in_only_the_user_and_reaches_only_that_container(
        start_kernel, control_plane, proxy, jp_fetch, jp_serverapp, jp_base_url, jp_http_port):
    kid, _, cid, files, app = await _serving(start_kernel, control_plane)
    key = jp_serverapp.web_app.settings[KERNEL_TOKEN_SETTING]

    # no credentials: the login page (GET) or 403; a wrong container id: 404; bad ports: 400
    code, _ = await _status(proxy(cid, files, "/", auth=False))
    assert code in (302, 403)
    code, _ = await _status(proxy(cid, app, "/echo", auth=False, method="POST", body="x"))
    assert code == 403
    code, body = await _status(proxy("0123456789ab", files, "/"))
    assert code == 404 and json.loads(body)["error"] == "ContainerNotFound"
    for port in ("0", "65536", "80a", "-1", "1" * 40):
        code, _ = await _status(proxy(cid, port, "/"))
        assert code == 400, port
    # a kernel's own token reaches its own container's ports; another kernel's token does not
    code, body = await _status(proxy(cid, files, "/", auth=False, headers={"Authorization": f"token {token_for(key, kid)}"}))
    assert code == 200 and b"INDEX-MARK" in body
    other = {"Authorization": f"token {token_for(key, 'another-kernel')}"}
    code, body = await _status(proxy(cid, files, "/", auth=False, headers=other))
    assert code == 403 and b"INDEX-MARK" not in body
    code, body = await _status(proxy(cid, app, "/echo", auth=False, headers=other, method="POST", body="x" * 1000))
    assert code == 403 and b"uri" not in body  # refused before its body was read or anything connected
    code, _ = await _status(websocket_connect(HTTPRequest(
        f"ws://127.0.0.1:{jp_http_port}{jp_base_url}cellhop/proxy/{cid}/{app}/ws", headers=other)))
    assert code == 403

    # both ways into the namespace (a thread's setns; the helper process a rootless server uses) reach it
    pid = control_plane.manager.runtime._kernel_pid(control_plane.manager.get(cid))
    for helper in (False, True):
        with connect_in_container(pid, files, helper=helper) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            answer = b"".join(iter(lambda: sock.recv(65536), b""))
        assert b"INDEX-MARK" in answer, helper

    # a port nothing listens on: 502 naming it
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        unused = s.getsockname()[1]
    code, body = await _status(proxy(cid, unused, "/"))
    assert code == 502 and json.loads(body)["error"] == "PortNotListening" and str(unused) in json.loads(body)["message"]
    # the host's own loopback is not the container's: a server there is not reached through the proxy
    host = ThreadingHTTPServer(("127.0.0.1", 0), _HostPage)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    try:
        host_port = host.server_address[1]
        assert host_port not in (files, app)
        code, body = await _status(proxy(cid, host_port, "/"))
        assert code == 502 and b"HOST-LOOPBACK" not in body
    finally:
        host.shutdown()
        host.server_close()
    # another container's URL does not lead to this container's ports
    r = await jp_fetch("cellhop", "api", "containers", method="POST", body=json.dumps({"spec": {}}),
                       request_timeout=120)
    other_id = json.loads(r.body)["id"]
    code, body = await _status(proxy(other_id, files, "/"))
    assert code == 502 and b"INDEX-MARK" not in body

    # hostile request lines, sent as written
    async def raw(request_line: str, extra: str = "") -> bytes:
        token = jp_serverapp.identity_provider.token
        reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
        writer.write(f"{request_line}\r\nHost: 127.0.0.1:{jp_http_port}\r\nAuthorization: token {token}\r\n"
                     f"{extra}Connection: close\r\n\r\n".encode())
        data = b""
        try:
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 60)
        except ConnectionResetError:  # refused before the whole request was read
            pass
        writer.close()
        return data

    prefix = f"{jp_base_url}cellhop/proxy"
    for line in (f"GET http://127.0.0.1:{jp_http_port}{prefix}/{cid}/{files}/ HTTP/1.1",  # absolute form
                 f"GET {prefix}/{other_id}%2F..%2F{cid}/{files}/ HTTP/1.1",  # an encoded slash in the id
                 f"GET {prefix}/{other_id}/{files}%2F/ HTTP/1.1"):
        answer = await raw(line)
        assert b"INDEX-MARK" not in answer and not answer.startswith(b"HTTP/1.1 200"), (line, answer[:200])
    # '..' after the port stays in that container: the other container's server never sees it
    answer = await raw(f"GET {prefix}/{other_id}/{files}/../../{cid}/{files}/ HTTP/1.1")
    assert b"INDEX-MARK" not in answer and answer.startswith(b"HTTP/1.1 502"), answer[:200]
    # an upgrade the container's server does not take: its answer (no credentials sent), then nothing more
    # the client sends reaches the container
    token = jp_serverapp.identity_provider.token
    reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
    request = (f"GET {prefix}/{cid}/{app}/echo HTTP/1.1\r\nHost: 127.0.0.1:{jp_http_port}\r\n"
               f"Authorization: token {token}\r\n").encode()
    writer.write(request + b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
    echoed = json.loads(await asyncio.wait_for(reader.readexactly(length), 60))
    assert head.startswith(b"HTTP/1.1 200") and b"\r\nConnection: close\r\n" in head, head
    assert "Authorization" not in echoed["headers"] and echoed["headers"]["Upgrade"] == "websocket"
    writer.write(request + b"\r\n")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 60) == b""
    writer.close()
    answer = await raw(f"GET {prefix}/{cid}/{files}/ HTTP/1.1", extra=f"X-Big: {'a' * 200_000}\r\n")
    assert b"INDEX-MARK" not in answer
    # a container answering with a head too large for the proxy: 502, not an endless read
    code, body = await _status(proxy(cid, app, "/hugehead"))
    assert code == 502 and json.loads(body)["error"] == "PortClosedConnection", body


async def test_a_login_cookie_needs_this_servers_origin_for_unsafe_methods_and_websockets(
        start_kernel, control_plane, proxy, jp_serverapp, jp_base_url, jp_http_port):
    _, _, cid, _, app = await _serving(start_kernel, control_plane)
    token = jp_serverapp.identity_provider.token
    r = await proxy(cid, app, f"/echo?token={token}", auth=False)  # a token in the URL sets the login cookie
    cookie = "; ".join(c.split(";")[0] for c in r.headers.get_list("Set-Cookie") if c.startswith("username-"))
    assert cookie, r.headers
    own = f"http://127.0.0.1:{jp_http_port}"
    code, body = await _status(proxy(cid, app, "/echo", auth=False, method="POST", body="a",
                                     headers={"Cookie": cookie}))
    assert code == 403, body
    code, body = await _status(proxy(cid, app, "/echo", auth=False, method="POST", body="a",
                                     headers={"Cookie": cookie, "Origin": "http://evil.example"}))
    assert code == 403, body
    code, body = await _status(proxy(cid, app, "/echo", auth=False, method="POST", body="a",
                                     headers={"Cookie": cookie, "Origin": own}))
    assert code == 200 and json.loads(body)["body"] == "a"
    assert "username-" not in json.loads(body)["headers"].get("Cookie", "")
    code, _ = await _status(proxy(cid, app, "/echo", auth=False, method="PUT", body="a",
                                  headers={"Cookie": cookie, "Referer": f"{own}{jp_base_url}lab"}))
    assert code == 200
    url = f"ws://127.0.0.1:{jp_http_port}{jp_base_url}cellhop/proxy/{cid}/{app}/ws"
    code, _ = await _status(websocket_connect(HTTPRequest(url, headers={"Cookie": cookie,
                                                                        "Origin": "http://evil.example"})))
    assert code == 403
    ws = await websocket_connect(HTTPRequest(url, headers={"Cookie": cookie, "Origin": own}))
    await ws.write_message("same origin")
    assert await asyncio.wait_for(ws.read_message(), 30) == "echo: same origin"
    ws.close()


def test_forward_outside_a_container_says_where_it_works_and_host_network_is_plain_loopback(monkeypatch):
    monkeypatch.delenv("CELLHOP_CONTAINER_ID", raising=False)
    with pytest.raises(RuntimeError, match="inside a cellhop container"):
        forward(8000)
    monkeypatch.setenv("CELLHOP_CONTAINER_ID", "abc123")
    monkeypatch.delenv("CELLHOP_PROXY_BASE", raising=False)
    with pytest.raises(RuntimeError, match="not started by a Jupyter server"):
        forward(8000)
    monkeypatch.setenv("CELLHOP_PROXY_BASE", "/base/")
    for port in (0, 65536, "80", True):
        with pytest.raises(ValueError, match="not a TCP port"):
            forward(port)
    url = forward(6006)
    assert url == "/base/cellhop/proxy/abc123/6006/" and 'href="/base/cellhop/proxy/abc123/6006/"' in url._repr_html_()
    # a process in this process's own network namespace (a host-network container) is reached on loopback
    host = ThreadingHTTPServer(("127.0.0.1", 0), _HostPage)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    try:
        import os

        with connect_in_container(os.getpid(), host.server_address[1]) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert b"HOST-LOOPBACK" in b"".join(iter(lambda: sock.recv(65536), b""))
        # a pid that is no longer the container's (reused once its kernel exited) is refused, not entered
        with pytest.raises(PortUnreachable):
            connect_in_container(os.getpid(), host.server_address[1], still_ours=lambda: False)
    finally:
        host.shutdown()
        host.server_close()


async def test_a_gpu_kernel_forwards_a_port_of_its_own_container(jp_fetch, jp_serverapp, control_plane, proxy,
                                                                 jp_base_url):
    r = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "cellhop-h100", "path": ""}),
                       request_timeout=120)
    kid = json.loads(r.body)["id"]
    km = jp_serverapp.kernel_manager
    kc = km.get_kernel(kid).client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        content, out, _ = await run(kc, "import http.server, threading, pathlib, cellhop\n"
                                        "pathlib.Path('k.txt').write_text('FROM-THE-GPU-KERNEL')\n"
                                        "srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), "
                                        "http.server.SimpleHTTPRequestHandler)\n"
                                        "threading.Thread(target=srv.serve_forever, daemon=True).start()\n"
                                        "print(cellhop.forward(srv.server_address[1]))")
        assert content["status"] == "ok", content
        [container] = [c for c in control_plane.manager.list() if c.phase.value == "ready"]
        url = out.strip()
        prefix = f"{jp_base_url}cellhop/proxy/{container.id}/"
        assert url.startswith(prefix) and url.endswith("/"), url
        port = int(url[len(prefix):].strip("/"))
        assert (await proxy(container.id, port, "/k.txt")).body == b"FROM-THE-GPU-KERNEL"
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(kid, now=True)
