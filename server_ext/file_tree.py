"""Walking and removing folder trees that a container may have made: any depth, no recursion, a bounded
number of open descriptors, no symbolic link ever followed.

A container can make a chain of folders thousands deep (the path limit binds
a single path string, not a tree), fill a folder with millions of names, or
swap a folder for a link or a FIFO while the server looks at it. Recursive
walkers (os.fwalk, shutil.rmtree) then hit Python's recursion limit or run out
of descriptors, and `ignore_errors` quietly leaves the data on disk. Here:

- `walk(root_fd)` yields every entry below a folder, depth first, from an
  explicit stack; folders are opened relative to their parent's descriptor
  (O_NOFOLLOW | O_DIRECTORY | O_NONBLOCK), and at most `MAX_OPEN` descriptors
  are held: a folder whose parent's descriptor was let go is reached again
  from the nearest ancestor still open.
- `usage(root_fd)`: the bytes and number of regular files below a folder.
- `remove_tree(dir_fd, name)` (`remove_path(path)`): deletes `name` in `dir_fd` whatever it holds,
  by flattening: the subfolders of a folder being emptied are moved up into
  the top folder of the tree (renamed to fresh names) and emptied in turn,
  so no walk goes deeper than one level. Failures raise, naming what is left.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

MAX_OPEN = 64  # descriptors one walk holds at most (the root's is the caller's)
MAX_PASSES = 1000  # times one folder is emptied again while something keeps filling it
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES, errno.EPERM)  # changed or unreadable: skip


class _Node:
    """A folder below the walk's root: its parent node (None: the root) and its name there."""

    __slots__ = ("parent", "name")

    def __init__(self, parent: _Node | None, name: str):
        self.parent, self.name = parent, name


class _Folders:
    """Descriptors of the folders of one walk, at most MAX_OPEN open (least recently used let go first)."""

    def __init__(self, root_fd: int):
        self.root = root_fd
        self.open_fds: OrderedDict[_Node, int] = OrderedDict()

    def fd(self, node: _Node | None) -> int | None:
        """The folder's descriptor (opened from its nearest open ancestor), or None when it is gone,
        was replaced by something else than a folder, or cannot be read."""
        if node is None:
            return self.root
        chain = []
        while node is not None and node not in self.open_fds:
            chain.append(node)
            node = node.parent
        fd = self.root
        if node is not None:
            self.open_fds.move_to_end(node)
            fd = self.open_fds[node]
        for child in reversed(chain):
            try:
                fd = os.open(child.name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in _GONE:
                    return None
                raise
            self.open_fds[child] = fd
            while len(self.open_fds) > MAX_OPEN:
                os.close(self.open_fds.popitem(last=False)[1])
        return fd

    def close(self) -> None:
        for fd in self.open_fds.values():
            os.close(fd)
        self.open_fds.clear()


def walk(root_fd: int) -> Iterator[tuple[int, os.DirEntry]]:
    """(descriptor of its folder, entry) for every entry below folder `root_fd`, folders included, at any
    depth. The descriptor stays valid until the next item is asked for. Entries that vanish or change
    kind meanwhile are skipped; links are reported as links, never followed."""
    folders = _Folders(root_fd)
    stack: list[_Node | None] = [None]
    try:
        while stack:
            node = stack.pop()
            fd = folders.fd(node)
            if fd is None:
                continue
            subfolders = []
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        yield fd, entry
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                subfolders.append(_Node(node, entry.name))
                        except OSError:
                            continue
            except OSError as exc:
                if exc.errno not in _GONE:
                    raise
            stack.extend(reversed(subfolders))
    finally:
        folders.close()


def usage(root_fd: int) -> tuple[int, int]:
    """(bytes, files): the apparent sizes and the number of the regular files below folder `root_fd`."""
    total = files = 0
    for _, entry in walk(root_fd):
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            total += st.st_size
            files += 1
    return total, files


def remove_tree(dir_fd: int, name: str) -> None:
    """Delete `name` in folder `dir_fd`: a file, a link, or a folder with everything in it, at any depth.

    Each pass over the top folder unlinks its files and empties its subfolders one level deep: their
    files are unlinked and their own subfolders moved up into the top (fresh names), for the next pass.
    Meant for a tree nothing else writes any more (moved to a trash folder, or a stopped container's):
    one still being filled is retried, then OSError. Folders the server may not read or write (a
    container's chmod 000) are given back to it first."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    prefix = f".cellhop-rm-{secrets.token_hex(4)}-"
    moved = refilled = 0
    while True:
        top = _open_own(dir_fd, name)
        if top is None:
            return
        try:
            while subfolders := _empty_files(top):
                for sub in subfolders:
                    fd = _open_own(top, sub)
                    if fd is None:
                        continue
                    try:
                        for inner in _empty_files(fd):
                            _rename(fd, inner, top, f"{prefix}{moved}")
                            moved += 1
                    finally:
                        os.close(fd)
                    if not _rmdir(top, sub):
                        refilled += 1  # seen again on the next pass
                if refilled > MAX_PASSES:
                    raise OSError(errno.ENOTEMPTY, f"{name!r} kept being filled while it was deleted")
        finally:
            os.close(top)
        if _rmdir(dir_fd, name):
            return
        refilled += 1
        if refilled > MAX_PASSES:
            raise OSError(errno.ENOTEMPTY, f"{name!r} kept being filled while it was deleted")


def remove_path(path: Path | str, ignore_errors: bool = False) -> None:
    """Delete the file, link or folder tree at `path` (see remove_tree); its parent is reached without
    following a link in its last step. With `ignore_errors`, failures are swallowed (what is left stays)."""
    path = Path(path)
    try:
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError:
        if ignore_errors:
            return
        raise
    try:
        remove_tree(parent, path.name)
    except OSError:
        if not ignore_errors:
            raise
    finally:
        os.close(parent)


def _empty_files(fd: int) -> list[str]:
    """Unlink everything but folders in folder `fd`; the names of its subfolders."""
    subfolders = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subfolders.append(entry.name)
            else:
                _unlink(fd, entry.name)
    return subfolders


def _open_own(dir_fd: int, name: str) -> int | None:
    """A folder's descriptor, giving the server read, write and search rights on it if it lacks them."""
    for attempt in range(2):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except PermissionError:
            if attempt:
                raise
            os.chmod(name, stat.S_IRWXU, dir_fd=dir_fd)  # a folder (lstat above) in a tree no one else writes
    return None


def _grant(dir_fd: int) -> None:
    os.fchmod(dir_fd, stat.S_IRWXU)


def _unlink(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except PermissionError:
        _grant(dir_fd)
        os.unlink(name, dir_fd=dir_fd)


def _rename(src_fd: int, name: str, dst_fd: int, new: str) -> None:
    try:
        os.rename(name, new, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    except PermissionError:
        _grant(src_fd)
        os.rename(name, new, src_dir_fd=src_fd, dst_dir_fd=dst_fd)


def _rmdir(dir_fd: int, name: str) -> bool:
    """Remove an empty folder; False when it is not empty (something was added meanwhile)."""
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True
