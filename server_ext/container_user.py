"""Who a sandboxed container runs as on the host: never root, never with a capability.

A server run by an ordinary user: bubblewrap's own user namespace maps the
container to the server's uid; bubblewrap drops every capability and sets
no_new_privs. A server run by root: a user namespace would map the container to
host uid 0 (root-owned sockets would take it for root), and dropping the uid
before bubblewrap leaves it unable to bind folders under /root. So bubblewrap
runs as root, keeps only CAP_SETUID, CAP_SETGID and CAP_SETPCAP, and the
command inside starts with util-linux's `setpriv`, which switches to
`c.LocalRuntime.container_uid` (default 65534, nobody) with no supplementary groups,
an empty bounding set, no inheritable capabilities and no_new_privs before the
kernel's interpreter starts.

Host folders bound into such a container (the notebook's folder, volumes, an
image's layers) keep their owners on disk; an idmapped mount (IdMapper) shows
their root-owned files to the container's uid as its own, and what it writes
lands as root-owned again, so a root server's notebook folder stays writable.
Where the file system refuses idmapped mounts they are bound as they are and
the container may write only where its uid may (said once).
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import CellhopError

log = logging.getLogger("cellhop")

DEFAULT_UID = 65534  # nobody
KEPT_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")  # what setpriv needs to switch uid and drop the rest


@dataclass(frozen=True)
class ContainerUser:
    uid: int
    gid: int
    switch: bool  # True: the server is root and setpriv switches to uid/gid inside the sandbox
    setpriv: str | None = None

    @classmethod
    def for_this_server(cls, uid: int = DEFAULT_UID) -> ContainerUser:
        if os.geteuid() != 0:
            return cls(os.getuid(), os.getgid(), switch=False)
        if uid == 0:
            raise CellhopError("c.LocalRuntime.container_uid is 0: containers must not run as root; give an "
                               f"unprivileged uid (the default is {DEFAULT_UID}, nobody)")
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise CellhopError("this server runs as root and containers must not: cellhop drops to "
                               "c.LocalRuntime.container_uid with util-linux's setpriv, which is not installed; "
                               "install util-linux (apt-get install util-linux) or run the server as "
                               "an ordinary user")
        return cls(uid, uid, switch=True, setpriv=setpriv)

    def bwrap_options(self) -> list[str]:
        """bubblewrap's options for this user: its capabilities (and, rootless, its user namespace)."""
        if not self.switch:  # bubblewrap's user namespace: every capability dropped, no_new_privs set
            return ["--unshare-user", "--cap-drop", "ALL"]
        argv = ["--cap-drop", "ALL"]
        for cap in KEPT_CAPS:
            argv += ["--cap-add", cap]
        return argv

    def command_prefix(self, workdir: Path | None = None) -> list[str]:
        """What runs the container's command as this user, with nothing to regain privileges by, in `workdir`
        (entered as this user: bubblewrap, root without capabilities, may not enter a folder of the user's)."""
        if not self.switch:
            return []
        argv = [self.setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        if workdir is not None:
            argv += [shutil.which("env") or "/usr/bin/env", f"--chdir={workdir}", "--"]
        return argv

    def give(self, path: Path, mode: int = 0o700) -> None:
        """Make `path` (made by the server for the container) the container user's own; a link there is
        refused (ELOOP), never followed."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            if self.switch:
                os.fchown(fd, self.uid, self.gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    def describe(self) -> str:
        return (f"uid {self.uid} (setpriv, no capabilities)" if self.switch
                else f"uid {self.uid} (a user namespace, no capabilities)")


# -- idmapped mounts ----------------------------------------------------------------------
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442  # the same on every architecture
_OPEN_TREE_CLONE, _OPEN_TREE_CLOEXEC = 1, 0o2000000
_AT_EMPTY_PATH, _AT_RECURSIVE = 0x1000, 0x8000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_IDMAP = 0x1, 0x100000
_CLONE_NEWNS = 0x20000
_MS_REC, _MS_PRIVATE = 0x4000, 0x40000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _id_map(uid: int) -> str:
    """Host id 0 shown as `uid` and `uid` as 0, every other id as itself."""
    top = 4294967295  # ids 0 .. 2**32-2
    lines = [(0, uid, 1), (1, 1, uid - 1), (uid, 0, 1), (uid + 1, uid + 1, top - uid - 1)]
    return "".join(f"{inside} {outside} {count}\n" for inside, outside, count in lines if count > 0)


class IdMapper:
    """Idmapped copies of host folders, for a sandbox's bubblewrap to bind from.

    `tree()` makes a detached idmapped copy of a folder (a descriptor); `attach_trees()`, called in the
    child between fork and exec, gives that child a private mount namespace and attaches each copy at an
    empty staging folder there. bubblewrap, started in that namespace, binds from the staging folders;
    the host's own mount namespace never holds these mounts, so nothing on the host can walk into them,
    and they end with the sandbox's processes.
    """

    def __init__(self, user: ContainerUser):
        self.user = user
        self._userns: int | None = None
        self._broken: str | None = None if user.switch else "not needed (a user namespace maps the server's uid)"
        self._libc = ctypes.CDLL(None, use_errno=True)

    def _namespace(self) -> int | None:
        """A user namespace holding the id map (made once; its process is gone, the fd keeps it)."""
        if self._userns is not None or self._broken:
            return self._userns
        unshare = shutil.which("unshare")
        if unshare is None:
            self._broken = "util-linux's unshare is not installed"
            return None
        proc = subprocess.Popen([unshare, "--user", "--", "cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            mine = os.readlink("/proc/self/ns/user")
            deadline = time.monotonic() + 5
            while os.readlink(f"/proc/{proc.pid}/ns/user") == mine:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise OSError("unshare --user did not start")
                time.sleep(0.001)
            Path(f"/proc/{proc.pid}/uid_map").write_text(_id_map(self.user.uid))
            Path(f"/proc/{proc.pid}/setgroups").write_text("deny")
            Path(f"/proc/{proc.pid}/gid_map").write_text(_id_map(self.user.gid))
            self._userns = os.open(f"/proc/{proc.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self._broken = f"a user namespace for the id map could not be made ({exc})"
        finally:
            proc.stdin.close()
            proc.wait()
        return self._userns

    def tree(self, source: Path, read_only: bool = False) -> int | None:
        """A detached idmapped copy of `source` (with the mounts under it), or None where the host refuses."""
        userns = self._namespace()
        if userns is None:
            return None
        tree = None
        try:
            tree = _syscall(self._libc, _SYS_OPEN_TREE, -100, os.fsencode(str(source)),
                            _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC | _AT_RECURSIVE)
            attr = _MountAttr(_MOUNT_ATTR_IDMAP | (_MOUNT_ATTR_RDONLY if read_only else 0), 0, 0, userns)
            _syscall(self._libc, _SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH | _AT_RECURSIVE, ctypes.byref(attr),
                     ctypes.sizeof(attr))
            return tree
        except OSError as exc:
            if tree is not None:
                os.close(tree)
            if self._broken is None:
                self._broken = f"the host refused an idmapped mount of {source} ({exc.strerror})"
                log.warning("cellhop: %s; folders bound into containers keep their host owners, so a container "
                            "(uid %d) may write only where that uid may", self._broken, self.user.uid)
            return None

    def attach_in_child(self, trees: list[tuple[int, Path]]) -> None:
        attach_trees(trees, self._libc)

    def describe(self) -> str | None:
        """None while idmapped mounts work (or are not needed), else why not."""
        return self._broken if self.user.switch else None

    def close(self) -> None:
        if self._userns is not None:
            os.close(self._userns)
            self._userns = None


def _syscall(libc, number: int, *args) -> int:
    result = libc.syscall(number, *args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def attach_trees(trees: list[tuple[int, Path]], libc) -> None:
    """In a child between fork and exec: a private mount namespace, with each detached tree attached at its
    staging folder. Raises (so the child never runs) if any step fails. `libc`: loaded before the fork."""
    if not trees:
        return
    if libc.unshare(_CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS) failed")
    if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "making the mount namespace private failed")
    for fd, target in trees:
        _syscall(libc, _SYS_MOVE_MOUNT, fd, b"", -100, os.fsencode(str(target)), _MOVE_MOUNT_F_EMPTY_PATH)
