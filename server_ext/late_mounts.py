"""A claimed standby container's working folder: the notebook's folder, attached at the claim.

A standby container (standby_pool.py) starts before anyone knows which
notebook will claim it, so it cannot be started with the notebook's folder
bound. Where the host can (the server runs as root), its sandbox gets a
bind of a server-only folder, `<container folder>/late`, at the same path
inside; on the host that folder is a bind mount of itself made *shared*
before bubblewrap starts, and bubblewrap makes the sandbox's copy a slave
of it, so a mount the host later makes there appears inside the sandbox.

At the claim (`attach`), the server makes a detached copy of the notebook's
folder (idmapped to the containers' user, as other folders bound into
containers are: container_user.IdMapper; read-only for `--workdir ro`;
nosuid, nodev) and moves it onto the late folder: the copy propagates into
the sandbox. The server then makes its own late folder private and unmounts
it there at once, so the host never keeps a mount of the notebook's folder
under the runtime folder (where removing an exited container's folder
would otherwise walk into it); the sandbox keeps its copy until it ends.
The kernel is then told to chdir there (standby_pool.claim_for).

Where the host cannot (not root: no mounts; a standby whose bubblewrap runs
in a mount namespace of its own, for idmapped image folders), `prepare`
answers None and a request with a working folder starts a fresh container.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

from .container_user import (_AT_EMPTY_PATH, _AT_RECURSIVE, _MOVE_MOUNT_F_EMPTY_PATH, _OPEN_TREE_CLOEXEC,
                             _OPEN_TREE_CLONE, _SYS_MOUNT_SETATTR, _SYS_MOVE_MOUNT, _SYS_OPEN_TREE, _MountAttr,
                             _syscall)

FOLDER = "late"  # <container folder>/late
_MS_BIND, _MS_PRIVATE, _MS_SHARED = 0x1000, 0x40000, 0x100000
_MNT_DETACH = 2
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def prepare(directory: Path, mapper=None) -> Path | None:
    """At a standby's launch: `<directory>/late`, a shared bind mount of itself for the sandbox to bind,
    or None where the host cannot attach folders later (not root, or it refuses the mounts). `mapper`: the
    IdMapper the claim will use; its user namespace is made now, not while a notebook waits."""
    if os.geteuid() != 0:
        return None
    if mapper is not None and mapper.user.switch:
        mapper._namespace()  # once per server: a short-lived `unshare --user` process
    folder = directory / FOLDER
    folder.mkdir(mode=0o755, exist_ok=True)
    libc, path = _libc(), os.fsencode(str(folder))
    try:
        _check(libc.mount(path, path, None, _MS_BIND, None), f"binding {folder}")
    except OSError:
        return None
    try:
        _check(libc.mount(None, path, None, _MS_SHARED, None), f"sharing {folder}")
    except OSError:
        release(folder)
        return None
    return folder


def attach(folder: Path, source: Path, read_only: bool, mapper=None) -> None:
    """At the claim: `source` (the notebook's folder, already checked by the workdir policy) appears at
    `folder` inside the standby's sandbox; the host keeps no mount of it. `mapper`: the sandbox's IdMapper
    (its copy is idmapped to the containers' user where the host allows)."""
    libc = _libc()
    tree = mapper.tree(Path(source), read_only) if mapper is not None and mapper.user.switch else None
    if tree is None:  # no id map here: a plain copy, the files keeping their host owners
        tree = _syscall(libc, _SYS_OPEN_TREE, -100, os.fsencode(str(source)),
                        _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC | _AT_RECURSIVE)
    late = None
    try:
        flags = _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV | (_MOUNT_ATTR_RDONLY if read_only else 0)
        attr = _MountAttr(flags, 0, 0, 0)
        _syscall(libc, _SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH | _AT_RECURSIVE, ctypes.byref(attr),
                 ctypes.sizeof(attr))
        late = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)  # the shared bind
        _syscall(libc, _SYS_MOVE_MOUNT, tree, b"", late, b"", _MOVE_MOUNT_F_EMPTY_PATH | 0x40)  # T_EMPTY_PATH
        # the late bind itself (not what now lies on it) private: unmounting here no longer reaches the sandbox
        private = _MountAttr(0, 0, _MS_PRIVATE, 0)
        _syscall(libc, _SYS_MOUNT_SETATTR, late, b"", _AT_EMPTY_PATH, ctypes.byref(private),
                 ctypes.sizeof(private))
    finally:
        os.close(tree)
        if late is not None:
            os.close(late)
    release(folder)


def release(folder: Path | None) -> None:
    """Unmount whatever the host holds at `folder` (the late bind, what was attached on it). Before the
    container's folder is removed; a folder that holds no mount is left as it is."""
    if folder is None:
        return
    libc, path = _libc(), os.fsencode(str(folder))
    for _ in range(8):
        if libc.umount2(path, _MNT_DETACH | 0x8) != 0:  # UMOUNT_NOFOLLOW
            err = ctypes.get_errno()
            if err in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more)
                return
            raise OSError(err, f"unmounting {folder}: {os.strerror(err)}")
