"""A TCP connection to a port inside a local container, made from inside its network namespace.

An isolated container (container_network.py) has a network namespace of its own: its 127.0.0.1 is
not the host's, and no port of it is published on the host (a host port would let any local user
past the Jupyter server's authentication). The proxy (api/proxy.py) reaches a container's port the
way a process inside it would: a short-lived thread enters the container's network namespace
(setns(2) with CLONE_NEWNET on /proc/<kernel pid>/ns/net, which changes that thread alone), makes
the socket and connects it to 127.0.0.1:<port> there, and hands the connected socket back; the
socket stays in the namespace it was made in, whichever thread uses it afterwards.

setns into a network namespace needs CAP_SYS_ADMIN over it and over the caller's own user namespace:
a server run as root has both. A rootless server's containers live in a user namespace bubblewrap
made; entering it needs a single-threaded process, so there a small helper process (this module run
as a program) enters the user and network namespaces, connects, and passes the socket back over a
socketpair (SCM_RIGHTS).

A container that shares the host's network (transport 'tcp', network 'host', no bubblewrap) is in
this process's own namespace: its ports are the host's loopback ports, reached directly.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import subprocess
import sys

from ..errors import CellhopError
from ..own_thread import on_fresh_thread

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
CONNECT_TIMEOUT = 10.0


class PortNotListening(CellhopError):
    """Nothing accepts connections on that port inside the container."""

    http_status = 502


class PortsNotSupported(CellhopError):
    """The runtime has no way to a container's ports that keeps them behind the server's authentication."""

    http_status = 501


class PortClosedConnection(CellhopError):
    """The server on the port closed the connection without a (whole) answer."""

    http_status = 502


class PortUnreachable(CellhopError):
    """The container's network could not be entered (it exited, or this host does not allow it)."""

    http_status = 502


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _namespace_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _refused(port: int, where: str, exc: OSError) -> CellhopError:
    if isinstance(exc, ConnectionRefusedError):
        return PortNotListening(f"nothing listens on port {port} {where}; start the server there (listening on "
                                "127.0.0.1 or 0.0.0.0 inside the container) and load the page again")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return PortNotListening(f"port {port} {where} did not accept a connection within {CONNECT_TIMEOUT:.0f} s; "
                                "is its server busy?")
    return PortUnreachable(f"could not connect to port {port} {where}: {exc}")


def _connect_loopback(port: int, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        sock.settimeout(None)
        return sock
    except BaseException:
        sock.close()
        raise


def _connect_in_thread(netns_fd: int, port: int, timeout: float) -> socket.socket:
    """setns in a thread of its own (which then ends), so no other thread of the server changes namespace."""

    def enter_and_connect() -> socket.socket:
        if _libc().setns(netns_fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")
        return _connect_loopback(port, timeout)

    return on_fresh_thread(enter_and_connect, name="cellhop-port-connect")


def _connect_by_helper(user_fd: int, net_fd: int, port: int, timeout: float) -> socket.socket:
    """A helper process (single-threaded: it may enter a user namespace) enters the namespaces open as
    `user_fd` and `net_fd`, connects, and sends the socket back."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        proc = subprocess.Popen([sys.executable, "-m", __name__, str(user_fd), str(net_fd), str(port),
                                 str(theirs.fileno()), str(timeout)],
                                pass_fds=(user_fd, net_fd, theirs.fileno()), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)
        theirs.close()
        ours.settimeout(timeout + 20)
        try:
            msg, fds, _, _ = socket.recv_fds(ours, 64, 1)
        finally:
            proc.wait()
        if fds:
            return socket.socket(fileno=fds[0])
        code = int(msg.decode()) if msg[:8].isdigit() else errno.EIO
        raise (ConnectionRefusedError(code, os.strerror(code)) if code == errno.ECONNREFUSED
               else OSError(code, os.strerror(code)))
    finally:
        ours.close()
        theirs.close()


def connect_in_container(pid: int, port: int, timeout: float = CONNECT_TIMEOUT, *, still_ours=None,
                         helper: bool | None = None) -> socket.socket:
    """A blocking socket connected to 127.0.0.1:`port` in the network namespace of process `pid` (a
    container's kernel). `still_ours()`: called once the namespaces are open, whether `pid` is still the
    container's (not a reused pid): False refuses. `helper`: True to always use the helper process, None
    to use it only where a thread may not enter the namespace. Raises PortNotListening or PortUnreachable
    (502)."""
    if not 1 <= port <= 65535:
        raise CellhopError(f"port {port} is not a TCP port; give a number from 1 to 65535")
    where = "inside the container"
    fds = []
    try:
        for kind in ("net", "user"):
            fds.append(os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC))
        net_fd, user_fd = fds
        if still_ours is not None and not still_ours():
            raise PortUnreachable("the container's kernel has exited; start the container again")
        if _fd_id(net_fd) == _namespace_id("/proc/self/ns/net"):
            where = "on this host's loopback (the container shares the host's network)"
            return _connect_loopback(port, timeout)
        if not helper:
            try:
                return _connect_in_thread(net_fd, port, timeout)
            except PermissionError:
                if helper is False:
                    raise
        return _connect_by_helper(user_fd, net_fd, port, timeout)  # rootless: enter its user namespace first
    except FileNotFoundError:
        raise PortUnreachable("the container's kernel has exited; start the container again") from None
    except OSError as exc:
        raise _refused(port, where, exc) from None
    finally:
        for fd in fds:
            os.close(fd)


def _fd_id(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _helper_main(argv: list[str]) -> int:
    """The helper: enter the user namespace open as fd `user` (where it is not this process's own) and the
    network namespace open as fd `net`, connect to 127.0.0.1:`port`, send the socket over fd `out` (or
    the errno as digits)."""
    user_fd, net_fd, port, out = (int(a) for a in argv[:4])
    timeout = float(argv[4])
    channel = socket.socket(fileno=out)
    libc = _libc()
    try:
        for fd, flag in ((user_fd, CLONE_NEWUSER), (net_fd, CLONE_NEWNET)):
            if flag == CLONE_NEWUSER and _fd_id(fd) == _namespace_id("/proc/self/ns/user"):
                continue
            if libc.setns(fd, flag) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        sock = _connect_loopback(port, timeout)
        socket.send_fds(channel, [b"ok"], [sock.fileno()])
        return 0
    except OSError as exc:
        code = exc.errno or (errno.ETIMEDOUT if isinstance(exc, TimeoutError) else errno.EIO)
        channel.sendall(str(code).encode())
        return 1


if __name__ == "__main__":
    sys.exit(_helper_main(sys.argv[1:]))
