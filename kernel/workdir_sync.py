"""The notebook's folder copied to a container on another node (the Ray runtime), before each cell.

On the local runtime the notebook's folder is bound into the container
(`--workdir rw|ro`); a container on another node cannot bind it, so before
each cell that asked for it the notebook sends the files that changed since
it last sent them (size and modification time differ, or new) to the
container, which writes them into its working folder. One way: what the
cell writes stays on the node. Hidden files and folders (`.git`, `.env`,
`.ipynb_checkpoints`) and what the folder's own `.gitignore` lists are
skipped; a folder holding more than `c.Cellhop.sync_limit` bytes (100 MiB by
default) to copy is refused before the cell runs, saying what to do.

The files travel as one apply request (`write_files`, called in the
container by reference: cellhop is installed there).
"""

from __future__ import annotations

import fnmatch
import os
import stat
from pathlib import Path

from ..errors import CellhopError

DEFAULT_LIMIT = 100 * 2**20
_sent: dict[str, dict] = {}  # container id -> {relative path: (size, mtime_ns)} of what it was sent


def needs_copy(container: dict) -> bool:
    """Whether a container cannot have the notebook's folder bound: it runs on another node (Ray)."""
    return container.get("node") is not None


def configured_limit(config) -> int:
    """c.Cellhop.sync_limit of a kernel's traitlets config, in bytes."""
    section = (config.get("Cellhop") or {}) if config is not None else {}
    value = section.get("sync_limit", DEFAULT_LIMIT) if hasattr(section, "get") else DEFAULT_LIMIT
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"c.Cellhop.sync_limit must be a number of bytes, not {value!r}")
    return value


def _ignored_patterns(root: Path) -> list[str]:
    """The root .gitignore's patterns (negations and comments left out)."""
    try:
        lines = (root / ".gitignore").read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith(("#", "!"))]


def _matches(rel: str, name: str, is_dir: bool, patterns: list[str]) -> bool:
    for pattern in patterns:
        if pattern.endswith("/"):
            if not is_dir:
                continue
            pattern = pattern.rstrip("/")
        if "/" in pattern:
            if fnmatch.fnmatch(rel, pattern.lstrip("/")):
                return True
        elif fnmatch.fnmatch(name, pattern):
            return True
    return False


def folder_files(root: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of the regular files to copy (hidden and .gitignore'd left out;
    links are not followed)."""
    patterns = _ignored_patterns(root)
    found = {}
    for folder, dirs, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root)
        rel_folder = "" if rel_folder == "." else rel_folder + "/"
        dirs[:] = [d for d in dirs if not d.startswith(".")
                   and not os.path.islink(os.path.join(folder, d))
                   and not _matches(rel_folder + d, d, True, patterns)]
        for name in files:
            rel = rel_folder + name
            if name.startswith(".") or _matches(rel, name, False, patterns):
                continue
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found[rel] = (st.st_size, st.st_mtime_ns)
    return found


def push(session, parent: dict, root: Path | str, limit: int = DEFAULT_LIMIT) -> list[str]:
    """Send the files of `root` that changed since the last push to `session`'s container; returns their
    relative paths. Raises CellhopError (nothing sent) when the folder holds more than `limit` bytes."""
    root = Path(root)
    current = folder_files(root)
    total = sum(size for size, _ in current.values())
    if total > limit:
        raise CellhopError(
            f"the notebook's folder {root} holds {total / 2**20:.1f} MiB to copy to the container's node, more "
            f"than c.Cellhop.sync_limit ({limit / 2**20:.1f} MiB); list large files or folders in its "
            ".gitignore, put data in a cellhop.Volume, raise c.Cellhop.sync_limit, or use --workdir none")
    before = _sent.get(session.id, {})
    changed = sorted(rel for rel, seen in current.items() if before.get(rel) != seen)
    if not changed:
        return []
    files = []
    for rel in changed:
        try:
            files.append((rel, (root / rel).read_bytes()))
        except OSError:
            current.pop(rel, None)  # gone since: sent next time if it comes back
    (ok, value), = session.apply(write_files, [((files,), {})], parent)
    if not ok:
        raise CellhopError(f"copying the notebook's folder to the container failed: {value}")
    _sent[session.id] = current
    return [rel for rel, _ in files]


def write_files(files: list) -> int:
    """In the container: write each (relative path, bytes) under the working folder; returns how many."""
    base = os.path.realpath(os.getcwd())
    for rel, data in files:
        target = os.path.realpath(os.path.join(base, rel))
        if os.path.isabs(rel) or not target.startswith(base + os.sep):
            raise ValueError(f"{rel!r} is not a path inside the working folder")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as out:
            out.write(data)
    return len(files)
