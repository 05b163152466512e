"""Big and broken transfers against a real server process: a 1 GiB upload and download through the
HTTP client with bounded memory on both sides, an upload cut in the middle that leaves the old file, and
a server log (at debug level) that never shows a secret value."""

from __future__ import annotations

import hashlib
import io
import json
import socket
from pathlib import Path

import pytest

from processes import wait_until
from server_process import ServerProcess

pytestmark = pytest.mark.timeout(180)

GIB = 1 << 30
BLOCK = bytes(range(256)) * 4096  # 1 MiB
VALUE = "sk-cellhop-7f3a9c1e5b2d"


class Generated(io.RawIOBase):
    """`size` bytes made on the fly (BLOCK over and over): no copy of them exists anywhere at once."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left, len(BLOCK))
        buffer[:n] = BLOCK[:n]
        self.left -= n
        return n


def reset_peak(pid: int | str = "self") -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the kernel resets VmHWM to the current RSS


def peak_and_now(pid: int | str = "self") -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmHWM"].split()[0]) * 1024, int(fields["VmRSS"].split()[0]) * 1024


@pytest.fixture
def server(runtime_root):
    with ServerProcess(runtime_root, extra_args=[f"--Cellhop.state_dir={runtime_root / 'state'}",
                                                 "--log-level=DEBUG"]) as srv:
        yield srv


@pytest.fixture
def storage(server):
    from cellhop.kernel.http_control_plane import HttpControlPlane

    return HttpControlPlane(server.url, server.token).storage()


def test_a_1gib_upload_and_download_with_bounded_memory(server, storage, runtime_root):
    storage.volume_create("big")
    expected = hashlib.sha256()
    for _ in range(GIB // len(BLOCK)):
        expected.update(BLOCK)
    base_server, base_client = peak_and_now(server.proc.pid)[1], peak_and_now()[1]
    reset_peak(server.proc.pid)
    reset_peak()
    entry = storage.volume_put("big", "weights.bin", Generated(GIB), size=GIB)
    assert entry["size"] == GIB
    got, received = hashlib.sha256(), 0
    for chunk in storage.volume_read("big", "weights.bin"):
        got.update(chunk)
        received += len(chunk)
    server_peak, client_peak = peak_and_now(server.proc.pid)[0], peak_and_now()[0]
    assert received == GIB and got.hexdigest() == expected.hexdigest()
    assert server_peak - base_server < 150 << 20, f"server grew by {(server_peak - base_server) >> 20} MiB"
    assert client_peak - base_client < 150 << 20, f"client grew by {(client_peak - base_client) >> 20} MiB"
    assert (runtime_root / "state" / "volumes" / "big" / "data" / "weights.bin").stat().st_size == GIB
    storage.volume_delete("big")


def test_an_upload_cut_in_the_middle_leaves_the_old_file(server, storage, runtime_root):
    storage.volume_create("v")
    storage.volume_put("v", "model.bin", b"version 1")
    staging = runtime_root / "state" / "volumes" / "v" / "staging"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall((f"PUT /cellhop/api/volumes/v/upload?path=model.bin HTTP/1.1\r\n"
                      f"Host: 127.0.0.1:{server.port}\r\nAuthorization: token {server.token}\r\n"
                      f"Content-Length: {100 << 20}\r\n\r\n").encode())
        for _ in range(10):
            sock.sendall(BLOCK)
        wait_until(lambda: any(p.stat().st_size > 0 for p in staging.iterdir()), timeout=20,
                   what="the upload to be written aside")
        assert b"".join(storage.volume_read("v", "model.bin")) == b"version 1"  # not visible meanwhile
    wait_until(lambda: not list(staging.iterdir()), timeout=20, what="the cut upload's staging file to go")
    assert b"".join(storage.volume_read("v", "model.bin")) == b"version 1"
    assert storage.volume_usage("v")["bytes"] == len(b"version 1")
    # a chunked upload whose source fails midway changes nothing either
    class Failing(io.RawIOBase):
        sent = 0

        def readable(self):
            return True

        def readinto(self, buffer):
            if self.sent > 5 << 20:
                raise OSError("the local disk went away")
            self.sent += len(BLOCK)
            buffer[:len(BLOCK)] = BLOCK
            return len(BLOCK)

    with pytest.raises(Exception, match="went away|nothing changed"):
        storage.volume_put("v", "model.bin", Failing())
    wait_until(lambda: not list(staging.iterdir()), timeout=20, what="the failed upload's staging file to go")
    assert b"".join(storage.volume_read("v", "model.bin")) == b"version 1"


def test_the_server_log_never_shows_a_secret_value(server, storage):
    storage.secret_create("hf", {"HF_TOKEN": VALUE})
    storage.secret_create("sess", {"S_KEY": VALUE + "-session"}, session=True)
    status, container = server.api("POST", "containers", {"spec": {"gpu": "none", "owner": "t",
                                                                   "secrets": ["hf", "sess"]}})
    assert status == 201, container
    status, logs = server.api("GET", f"containers/{container['id']}/logs")
    server.api("POST", f"containers/{container['id']}/stop")
    listed = storage.secret_list()
    assert [s["name"] for s in listed] == ["hf", "sess"]
    assert VALUE not in json.dumps([container, logs, listed])
    assert "POST /cellhop/api/secrets" in server.log()  # the log does record the calls
    assert VALUE not in server.log()
