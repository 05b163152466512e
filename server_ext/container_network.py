"""A container's own network namespace, with outbound access through slirp4netns.

`c.LocalRuntime.network = "isolated"` (the default where slirp4netns is installed):
bubblewrap gives the container a network namespace of its own, so nothing on
the host's loopback (notebook kernels, the server, anything else listening
there) is reachable from it, and slirp4netns gives it a tap0 interface
(10.0.2.100/24, gateway 10.0.2.2) to the outside world with
--disable-host-loopback, so the gateway does not lead back to the host's
loopback either. bubblewrap holds the sandbox (--block-fd) until slirp4netns
says the interface is up, which costs a few milliseconds.

The kernel's own channels are unix sockets in the container's folder, which
work across network namespaces. A container whose channels are TCP ports on
loopback (`c.Cellhop.transport = "tcp"`, a folder path too long for a unix
socket, the Ray runtime's nodes) shares the host's network instead: that is
said in the log once and in the runtime's describe(). `network = "host"`
shares it always. Without slirp4netns, "isolated" gives a namespace with only
loopback (no outbound access), which is said too.

slirp4netns exits when the server closes its end of a pipe (--exit-fd): when the
container is cleaned up, or when the server itself dies.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

from ..errors import CellhopError

TAP = "tap0"
SLIRP_DNS = "10.0.2.3"
_LOOPBACK_PREFIXES = ("127.", "::1")


def find_slirp4netns() -> str | None:
    return shutil.which("slirp4netns")


def resolv_conf_override(path: str = "/etc/resolv.conf") -> bytes | None:
    """A resolv.conf for the namespace when the host's names only loopback resolvers (systemd-resolved's
    127.0.0.53, a local dnsmasq), which the namespace cannot reach: slirp4netns's resolver instead."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    servers = [line.split()[1] for line in lines if line.startswith("nameserver") and len(line.split()) > 1]
    if not servers or not all(s.startswith(_LOOPBACK_PREFIXES) for s in servers):
        return None
    kept = [line for line in lines if line.startswith(("search", "domain", "options"))]
    return "\n".join([f"nameserver {SLIRP_DNS}", *kept, ""]).encode()


def _wait_for_loopback(pid: int, timeout: float) -> None:
    """Wait until bubblewrap has set up loopback in the namespace of `pid` (127.0.0.1 in its routes, and lo up,
    which gives it ::1): slirp4netns configuring the namespace at the same time makes bubblewrap's netlink
    requests fail now and then ("loopback: Failed RTM_NEWADDR")."""
    deadline = time.monotonic() + timeout
    for name, needle in (("fib_trie", b"127.0.0.1"), ("if_inet6", b" lo\n")):
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{pid}/net/{name}", "rb") as f:
                    if needle in f.read():
                        break
            except FileNotFoundError:
                break  # IPv6 is off here: nothing to wait for
            except OSError:
                return  # the sandbox is gone
            time.sleep(0.0005)


def _read_info(fd: int, timeout: float) -> dict | None:
    """bubblewrap's --info-fd JSON (child-pid and its namespaces), or None when it exited first."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise CellhopError("bubblewrap did not report its sandbox within "
                               f"{timeout:.0f} s; is the host overloaded?")
        chunk = os.read(fd, 4096)
        if not chunk:
            return None
        data += chunk
        try:
            return json.loads(data)
        except ValueError:
            continue


class SandboxNetwork:
    """One sandbox's start: the pipes bubblewrap is given (--info-fd always; with `isolated`, its own network
    namespace held by --block-fd), and slirp4netns once it runs."""

    def __init__(self, isolated: bool, slirp: str | None, userns: bool, uid: int = 0, gid: int = 0):
        self.isolated = isolated
        slirp = slirp if isolated else None
        self.slirp = slirp
        self.userns = userns  # bubblewrap makes a user namespace (rootless server): its ids are mapped here
        self.uid, self.gid = uid, gid
        self.process: subprocess.Popen | None = None
        self._exit_w: int | None = None
        self._info_r, self._info_w = os.pipe()
        self._block_r, self._block_w = os.pipe() if isolated else (None, None)
        self._userns_r, self._userns_w = os.pipe() if userns and slirp else (None, None)
        self._resolv_r = None
        override = resolv_conf_override() if slirp else None
        if override is not None:
            self._resolv_r, resolv_w = os.pipe()
            os.write(resolv_w, override)
            os.close(resolv_w)

    def bwrap_options(self) -> list[str]:
        argv = ["--info-fd", str(self._info_w)]
        if not self.isolated:
            return argv
        argv += ["--unshare-net", "--block-fd", str(self._block_r)]
        if self._userns_r is not None:
            argv += ["--userns-block-fd", str(self._userns_r)]
        if self._resolv_r is not None:
            argv += ["--ro-bind-data", str(self._resolv_r), "/etc/resolv.conf"]
        return argv

    def pass_fds(self) -> tuple[int, ...]:
        return tuple(fd for fd in (self._info_w, self._block_r, self._userns_r, self._resolv_r) if fd is not None)

    def _close_child_ends(self) -> None:
        for name in ("_info_w", "_block_r", "_userns_r", "_resolv_r"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    def start(self, timeout: float = 10.0, log_path: Path | None = None) -> int | None:
        """After bubblewrap was spawned: connect the namespace and let the sandbox go on.
        Returns the pid bubblewrap reported (its sandbox's init), None when it exited early.
        `log_path`: where slirp4netns's messages go (a file only the server reads)."""
        self._close_child_ends()
        try:
            info = _read_info(self._info_r, timeout)
            if info is None:
                return None
            pid = int(info["child-pid"])
            userns_fd = None
            if self._userns_w is not None:  # rootless: map the namespace's root to the server's ids ourselves
                Path(f"/proc/{pid}/setgroups").write_text("deny")
                Path(f"/proc/{pid}/uid_map").write_text(f"0 {self.uid} 1")
                Path(f"/proc/{pid}/gid_map").write_text(f"0 {self.gid} 1")
                userns_fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY)
                os.write(self._userns_w, b"1")
            if self.slirp:
                _wait_for_loopback(pid, timeout)
                try:
                    self._start_slirp(pid, userns_fd, timeout, log_path)
                finally:
                    if userns_fd is not None:
                        os.close(userns_fd)
            if self._block_w is not None:
                try:
                    os.write(self._block_w, b"1")
                except BrokenPipeError:  # bubblewrap is gone already: its exit and log say why
                    return None
            return pid
        finally:
            for name in ("_info_r", "_block_w", "_userns_w"):
                fd = getattr(self, name)
                if fd is not None:
                    os.close(fd)
                    setattr(self, name, None)

    def _start_slirp(self, pid: int, userns_fd: int | None, timeout: float, log_path: Path | None) -> None:
        ready_r, ready_w = os.pipe()
        exit_r, self._exit_w = os.pipe()
        argv = [self.slirp, "--configure", "--mtu=65520", "--disable-host-loopback", "--enable-sandbox",
                "--enable-seccomp", f"--ready-fd={ready_w}", f"--exit-fd={exit_r}"]
        fds = [ready_w, exit_r]
        if userns_fd is not None:
            argv.append(f"--userns-path=/proc/self/fd/{userns_fd}")
            fds.append(userns_fd)
        argv += [str(pid), TAP]
        log_fd = os.open(log_path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            self.process = subprocess.Popen(argv, pass_fds=fds, stdin=subprocess.DEVNULL, stdout=log_fd,
                                            stderr=log_fd, start_new_session=True)
        finally:
            os.close(log_fd)
            os.close(ready_w)
            os.close(exit_r)
        try:
            ready = select.select([ready_r], [], [], timeout)[0] and os.read(ready_r, 1)
        finally:
            os.close(ready_r)
        if not ready:
            error = ""
            if self.process.poll() is not None and log_path is not None:
                try:
                    error = log_path.read_text(errors="replace").strip()[-300:]
                except OSError:
                    pass
            self.close()
            raise CellhopError("slirp4netns could not connect the container's network namespace"
                               + (f": {error}" if error else f" within {timeout:.0f} s")
                               + "; set c.LocalRuntime.network = 'host' to share the host's network instead")

    def close(self) -> None:
        """Stop slirp4netns (it exits when its exit pipe closes) and close what is left."""
        self._close_child_ends()
        for name in ("_info_r", "_block_w", "_userns_w", "_exit_w"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
