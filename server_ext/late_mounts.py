"""A claimed standby container's working folder: the notebook's folder, attached at the claim.

A standby container (standby_pool.py) starts before anyone knows which
notebook will claim it, so it cannot be started with the notebook's folder
bound. Where the host can (the server runs as root), the process that
starts its bubblewrap (between fork and exec: `share_in_child`) makes a
mount namespace of its own, in which a server-only folder,
`<container folder>/late`, is a bind mount of itself made *shared*; the
sandbox binds it at the same path, and bubblewrap makes the sandbox's copy
a slave of it, so a mount later made there in that launcher namespace
appears inside the sandbox. The host's own mount namespace never holds any
of these mounts: nothing is left on the host when a container or its server
dies, and removing a container's folder never walks into a notebook's.

At the claim (`attach`), the server makes a detached copy of the notebook's
folder (idmapped to the containers' user, as other folders bound into
containers are: container_user.IdMapper; read-only for `--workdir ro`;
nosuid, nodev), and a short-lived helper process enters the launcher
namespace (through the bubblewrap process that lives in it) and moves the
copy onto the late folder: it propagates into the sandbox. The kernel is
then told to chdir there (standby_pool.claim_for). The launcher namespace,
and the copy with it, end with the sandbox.

Where the host cannot (not root), `prepare` answers None and a request with
a working folder starts a fresh container.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

from .container_user import (_AT_EMPTY_PATH, _AT_RECURSIVE, _MOVE_MOUNT_F_EMPTY_PATH, _OPEN_TREE_CLOEXEC,
                             _OPEN_TREE_CLONE, _SYS_MOUNT_SETATTR, _SYS_MOVE_MOUNT, _SYS_OPEN_TREE, _MountAttr,
                             _syscall)

FOLDER = "late"  # <container folder>/late
_MS_BIND, _MS_REC, _MS_SLAVE, _MS_SHARED = 0x1000, 0x4000, 0x80000, 0x100000
_CLONE_NEWNS = 0x20000
_TRUE = "/bin/true"
_SYS_OPENAT2, _RESOLVE_NO_SYMLINKS = 437, 0x04
_MOUNT_ATTR_IDMAP = 0x100000


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def prepare(directory: Path, mapper=None) -> Path | None:
    """At a standby's launch: `<directory>/late`, the (empty, server-only) folder its claim attaches the
    notebook's folder at, or None where the host cannot (not root). `mapper`: the IdMapper the claim will
    use; its user namespace is made now, not while a notebook waits."""
    if os.geteuid() != 0:
        return None
    if mapper is not None and mapper.user.switch:
        mapper._namespace()  # once per server: a short-lived `unshare --user` process
    folder = directory / FOLDER
    folder.mkdir(mode=0o755, exist_ok=True)
    return folder


def share_in_child(folder: Path, libc, own_namespace: bool) -> None:
    """Between fork and exec of a standby's bubblewrap: `folder` a shared bind mount of itself, in a mount
    namespace of this process's own (made here unless `own_namespace`: the idmapped trees made one).
    Raises (so the child never runs) if a step fails. `libc`: loaded before the fork."""
    path = os.fsencode(str(folder))
    if not own_namespace:
        if libc.unshare(_CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS) failed")
        if libc.mount(b"none", b"/", None, _MS_REC | _MS_SLAVE, None) != 0:  # nothing goes back to the host
            raise OSError(ctypes.get_errno(), "making the mount namespace a slave failed")
    if libc.mount(path, path, None, _MS_BIND, None) != 0:
        raise OSError(ctypes.get_errno(), "binding the late folder failed")
    if libc.mount(None, path, None, _MS_SHARED, None) != 0:
        raise OSError(ctypes.get_errno(), "sharing the late folder failed")


def attach(folder: Path, source: Path, read_only: bool, launcher_pid: int, mapper=None) -> None:
    """At the claim: `source` (the notebook's folder, already checked by the workdir policy) appears at
    `folder` inside the standby's sandbox, whose bubblewrap is `launcher_pid` (it lives in the launcher
    namespace). `mapper`: the sandbox's IdMapper (the copy is idmapped to the containers' user where the host
    allows; elsewhere the files keep their host owners). Raises OSError where it fails, a link on the way
    to `source` included."""
    libc = _libc()
    # the folder as the policy resolved it: a link on the way now (planted since) is refused, not followed
    how = _OpenHow(os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0, _RESOLVE_NO_SYMLINKS)
    where = _syscall(libc, _SYS_OPENAT2, -100, os.fsencode(str(source)), ctypes.byref(how), ctypes.sizeof(how))
    try:
        tree = _syscall(libc, _SYS_OPEN_TREE, where, b"",
                        _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC | _AT_RECURSIVE | _AT_EMPTY_PATH)
    finally:
        os.close(where)
    userns = mapper._namespace() if mapper is not None and mapper.user.switch else None
    namespace = None
    try:
        flags = _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV | (_MOUNT_ATTR_RDONLY if read_only else 0)
        if userns is not None:  # shown to the containers' user as its own, as other bound folders are
            idmapped = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, userns)
            _syscall(libc, _SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH | _AT_RECURSIVE, ctypes.byref(idmapped),
                     ctypes.sizeof(idmapped))
        attr = _MountAttr(flags, 0, 0, 0)
        _syscall(libc, _SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH | _AT_RECURSIVE, ctypes.byref(attr),
                 ctypes.sizeof(attr))
        namespace = os.open(f"/proc/{launcher_pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        target = os.fsencode(str(folder))

        def enter_and_move():  # in the helper, between fork and exec: no Python objects made here
            if libc.setns(namespace, _CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "entering the standby's launcher namespace failed")
            if libc.syscall(_SYS_MOVE_MOUNT, tree, b"", -100, target, _MOVE_MOUNT_F_EMPTY_PATH) != 0:
                raise OSError(ctypes.get_errno(), "moving the folder onto the late folder failed")

        done = subprocess.run([_TRUE], preexec_fn=enter_and_move, pass_fds=(tree, namespace),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              close_fds=True, timeout=10)
        if done.returncode != 0:
            raise OSError(f"the helper attaching {source} ended with status {done.returncode}")
    except subprocess.SubprocessError as exc:  # the preexec step failed (its errno is not carried over)
        raise OSError(f"attaching {source} to the standby failed: {exc}") from None
    finally:
        os.close(tree)
        if namespace is not None:
            os.close(namespace)
