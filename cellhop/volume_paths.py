r"""The one place that decides what a path inside a volume may be, and opens it without leaving the volume.

Every interface (Python, CLI, REST, widgets) passes user paths through here:

- `volume_name(text)`: a volume or secret name (`datasets`, `llama-3.1_weights`); the rule is
  names.simple_name's.
- `parse_path(text)`: a relative path inside a volume, as a tuple of file names.
  Absolute paths, `..`, `.`, empty names (`a//b`), NUL and raw control
  characters and over-long names are refused with a message that says what
  was wrong. A backslash starts an escape: `\xNN` is the byte NN, so any
  name a container can make (a newline, a backslash, bytes that are not
  UTF-8) can be named: `show(parts)` writes names in that form (what
  listings give), and `parse_path(show(parts)) == parts`.
- `open_dir(root_fd, parts)`: walks the folders of a path one `openat` at a
  time with O_NOFOLLOW, so no symbolic link is ever followed on the host side:
  a link found on the way is refused (naming where it points when that is
  outside the volume). Containers see links as they are; the control plane
  never follows them. `open_file(dir_fd, name)` opens a regular file for
  reading without following a link and without blocking on a FIFO or device
  a container swapped in; anything but a regular file is refused.
- `mount_path(text)`: where a volume appears inside a container.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from pathlib import PurePosixPath

from .errors import VolumePathError
from .names import is_odd, simple_name

MAX_NAME_BYTES = 255  # a file name on Linux
MAX_PATH_BYTES = 4096
MAX_TYPED_CHARS = 4 * MAX_PATH_BYTES  # a path as typed, escapes (4 characters a byte) included
_ODD = re.compile(r"[\x00-\x1f\x7f\\]")
_RAW_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ESCAPE = re.compile(r"x[0-9A-Fa-f]{2}")
# Folders a volume may never be mounted over inside a container.
_RESERVED_MOUNTS = ("/", "/proc", "/dev", "/sys", "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/tmp")


def volume_name(text, what: str = "volume") -> str:
    """A volume (or secret) name: letters, digits, '.', '_', '-'; starts with a letter or digit; up to 63."""
    return simple_name(text, what, error=VolumePathError)


class NotARegularFile(VolumePathError):
    """A FIFO, socket or device where a file is wanted (a container can make them in a volume)."""

    http_status = 409


def parse_path(text, allow_root: bool = False) -> tuple[str, ...]:
    """A path inside a volume as its file names: 'a/b/c.txt' -> ('a', 'b', 'c.txt').

    The root is '' (or '.'), accepted only where `allow_root` (listing, usage).
    A trailing '/' is allowed ('models/'). `\\xNN` in a name is the byte NN (see `show`);
    a name that is not UTF-8 comes back with surrogate escapes, as os.listdir gives it.
    Everything else odd is refused.
    """
    if not isinstance(text, str):
        raise VolumePathError(f"a path inside a volume must be a string, not {type(text).__name__}")
    shown = text if len(text) < 200 else text[:200] + "..."
    if "\x00" in text:
        raise VolumePathError(f"path {shown!r} contains a NUL byte; give a plain relative path like 'data/train.csv'")
    if len(text) > MAX_TYPED_CHARS:
        raise VolumePathError(f"path {shown!r} is longer than {MAX_PATH_BYTES} bytes")
    if text in ("", ".", "./"):
        if allow_root:
            return ()
        raise VolumePathError("a file path is needed here, not the volume's root; give e.g. 'data/train.csv'")
    if text.startswith("/"):
        raise VolumePathError(f"path {shown!r} is absolute; paths inside a volume are relative to its root "
                              f"(write {text.lstrip('/')!r})")
    parts = text[:-1].split("/") if text.endswith("/") else text.split("/")
    names = tuple(_file_name(part, shown) for part in parts)
    if sum(len(os.fsencode(n)) + 1 for n in names) - 1 > MAX_PATH_BYTES:
        raise VolumePathError(f"path {shown!r} is longer than {MAX_PATH_BYTES} bytes")
    return names


def _file_name(part: str, shown: str) -> str:
    """One name of a path as typed -> the file name (escapes decoded), or VolumePathError."""
    if part == "..":
        raise VolumePathError(f"path {shown!r} contains '..'; a path may not leave its volume")
    if part in ("", "."):
        raise VolumePathError(f"path {shown!r} has an empty or '.' component; write it without '//' or '/./'")
    if _RAW_CONTROL.search(part):
        raise VolumePathError(f"path {shown!r} contains a control character; write it as an escape \\xNN "
                              "(a newline is \\x0a) or rename the file with plain characters")
    first, *escaped = part.split("\\")
    raw = bytearray(_utf8(first, shown))
    for piece in escaped:  # each piece follows a backslash: it must start with an escape xNN
        if not _ESCAPE.match(piece):
            raise VolumePathError(f"path {shown!r} contains a backslash that does not start an escape \\xNN "
                                  "(the byte NN in hex); a backslash in a name is written \\x5c")
        raw.append(int(piece[1:3], 16))
        raw += _utf8(piece[3:], shown)
    if 0 in raw or ord("/") in raw:
        raise VolumePathError(f"path {shown!r} escapes a NUL or '/' byte, which no file name can hold")
    if bytes(raw) in (b".", b".."):
        raise VolumePathError(f"path {shown!r} names '.' or '..' through escapes; a path may not leave its volume")
    if len(raw) > MAX_NAME_BYTES:
        raise VolumePathError(f"a name in path {shown!r} is longer than {MAX_NAME_BYTES} bytes")
    return os.fsdecode(bytes(raw))


def _utf8(text: str, shown: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")  # lone surrogates dc80-dcff: bytes os.listdir kept
    except UnicodeEncodeError:
        raise VolumePathError(f"path {shown!r} is not valid UTF-8 text") from None


def show_name(name: str) -> str:
    """A file name as listings give it: itself when plain; else with each control or format character,
    backslash and byte that is not UTF-8 written `\\xNN` (per byte). `parse_path` reads it back."""
    if name.isascii() and name.isprintable() and "\\" not in name:
        return name
    out = []
    for char in name:
        if "\udc80" <= char <= "\udcff":  # a byte that is not UTF-8 (surrogateescape)
            out.append(f"\\x{ord(char) - 0xdc00:02x}")
        elif char == "\\" or is_odd(char):
            out.extend(f"\\x{b:02x}" for b in char.encode("utf-8", "surrogatepass"))
        else:
            out.append(char)
    return "".join(out)


def show(parts: tuple[str, ...]) -> str:
    """A path as listings give it (see `show_name`)."""
    return "/".join(show_name(p) for p in parts)


def entry_of(parts: tuple[str, ...], st: os.stat_result) -> dict:
    """A listing's entry for the file `parts` (name and path as `show` writes them): its type is
    dir, file, link or other (a FIFO, socket or device a container made)."""
    kind = ("dir" if stat.S_ISDIR(st.st_mode) else "link" if stat.S_ISLNK(st.st_mode)
            else "file" if stat.S_ISREG(st.st_mode) else "other")
    return {"name": show_name(parts[-1]) if parts else "", "path": show(parts), "type": kind,
            "size": st.st_size if kind == "file" else 0, "modified": st.st_mtime}


def mount_path(text) -> str:
    """Where a volume is mounted inside a container: an absolute, normalized path such as '/data'."""
    if not isinstance(text, str) or not text.startswith("/") or "\x00" in text or _ODD.search(text):
        raise VolumePathError(f"mount path {text!r} must be an absolute folder inside the container, like '/data'")
    parts = [p for p in text.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise VolumePathError(f"mount path {text!r} may not contain '.' or '..'")
    path = "/" + "/".join(parts)
    if path in _RESERVED_MOUNTS or (path.startswith("/proc/") or path.startswith("/dev/") or path.startswith("/sys/")):
        raise VolumePathError(f"cannot mount a volume at {path}: the container needs that folder; "
                              "pick another, like /data or /models")
    return path


def mount_point_problem(path: str, writable_roots: tuple[str, ...] = ("/tmp",)) -> str | None:
    """Why a mount point cannot be made inside the sandbox, or None.

    The container's root is the host's, read-only, so a mount point must be an
    existing host folder, a new top-level folder (made in the sandbox's own
    root), or lie under a folder that is writable there (its /tmp).
    """
    p = PurePosixPath(path)
    if len(p.parts) == 2 or any(p.is_relative_to(r) for r in writable_roots):
        return None
    if os.path.isdir(path) and not os.path.islink(path):
        return None
    return (f"cannot mount at {path}: {p.parent} has no folder {p.name!r} on this host and the container's root "
            "is read-only; mount at a new top-level folder (like /data) or under an existing folder")


def _refuse_link(root_fd: int, parts: tuple[str, ...], depth: int) -> VolumePathError:
    """The error for a symbolic link at parts[:depth+1], saying where it points when that leaves the volume."""
    where = show(parts[:depth + 1])
    try:
        dir_fd = open_dir(root_fd, parts[:depth]) if depth else os.dup(root_fd)
        try:
            target = os.readlink(parts[depth], dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
    except (OSError, VolumePathError):
        target = "?"
    outside = target.startswith("/") or ".." in PurePosixPath(target).parts
    if outside:
        return VolumePathError(f"{where!r} is a symbolic link pointing outside the volume ({show_name(target)}); "
                               "cellhop does not follow it")
    return VolumePathError(f"{where!r} is a symbolic link; cellhop's volume operations do not follow links "
                           "(use the path it points to)")


def open_dir(root_fd: int, parts: tuple[str, ...], create: bool = False) -> int:
    """An fd of the folder `parts` under `root_fd`, never following a link; `create` makes missing folders."""
    fd = os.dup(root_fd)
    try:
        for depth, name in enumerate(parts):
            try:
                nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise FileNotFoundError(errno.ENOENT, f"no folder {show(parts[:depth + 1])!r} in the volume")
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode):
                        raise _refuse_link(root_fd, parts, depth) from None
                    raise NotADirectoryError(errno.ENOTDIR, f"{show(parts[:depth + 1])!r} is a file, not a folder")
                raise
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_parent(root_fd: int, parts: tuple[str, ...], create: bool = False) -> int:
    """An fd of the folder holding the last name of `parts` (see `open_dir`)."""
    return open_dir(root_fd, parts[:-1], create=create)


def lstat_in(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def refuse_if_link(root_fd: int, parts: tuple[str, ...], st: os.stat_result | None) -> None:
    """Raise when the last name of `parts` is a symbolic link."""
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise _refuse_link(root_fd, parts, len(parts) - 1)


def open_file(dir_fd: int, name: str, shown: str = "") -> int:
    """An fd for reading the regular file `name` in folder `dir_fd`. Never follows a link, and never
    blocks: a FIFO or device a container swapped in is opened non-blocking, seen on the descriptor
    itself (fstat) and refused (NotARegularFile), so no server thread waits on it."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise VolumePathError(f"{shown or show_name(name)!r} is a symbolic link; cellhop's volume operations "
                                  "do not follow links") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO, socket or device, not a regular file"
            raise NotARegularFile(f"{shown or show_name(name)!r} is {kind}; only regular files can be read")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def parse_mount(item) -> dict:
    """A volume mount as `{"name", "path", "read_only"}` from 'NAME:/path[:ro]', a dict, or a Volume."""
    if isinstance(item, str):
        fields = item.split(":")
        if len(fields) not in (2, 3) or (len(fields) == 3 and fields[2] not in ("ro", "rw")):
            raise VolumePathError(f"volume mount {item!r} is not NAME:/path or NAME:/path:ro "
                                  "(e.g. datasets:/data or weights:/models:ro)")
        item = {"name": fields[0], "path": fields[1], "read_only": len(fields) == 3 and fields[2] == "ro"}
    elif hasattr(item, "name") and hasattr(item, "mount_path") and not isinstance(item, dict):
        item = {"name": item.name, "path": item.mount_path, "read_only": bool(getattr(item, "read_only", False))}
    if not isinstance(item, dict):
        raise VolumePathError(f"a volume mount must be 'NAME:/path[:ro]' or an object, not {type(item).__name__}")
    unknown = set(item) - {"name", "path", "read_only"}
    if unknown:
        raise VolumePathError(f"unknown field(s) in a volume mount: {', '.join(sorted(unknown))}; "
                              "known: name, path, read_only")
    read_only = item.get("read_only", False)
    if not isinstance(read_only, bool):
        raise VolumePathError("a volume mount's read_only must be true or false")
    return {"name": volume_name(item.get("name")), "path": mount_path(item.get("path")), "read_only": read_only}


def parse_mounts(items) -> list[dict]:
    """Mounts from a list (or one 'NAME:/path' string); two volumes at one path are refused."""
    if items is None:
        return []
    if isinstance(items, (str, dict)):
        items = [items]
    mounts = [parse_mount(i) for i in items]
    paths = [m["path"] for m in mounts]
    for path in paths:
        if paths.count(path) > 1:
            raise VolumePathError(f"two volumes are mounted at {path}; give each its own path")
    return mounts
