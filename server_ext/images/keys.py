"""Cache keys: a step's key is its spec, its parent's key and the content of the local files it adds."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

FORMAT = 1  # bump when the layout of a layer changes: every key changes with it
_SKIPPED_DIRS = {"__pycache__", ".git", ".ipynb_checkpoints", ".mypy_cache", ".pytest_cache"}
_NOT_IN_KEY = ("force_build",)  # how to build, not what


def digest(data) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def tree_files(path: Path):
    """(relative path, absolute path) of every file under `path` (a file gives itself), sorted, caches skipped."""
    path = Path(path)
    if path.is_file():
        yield path.name, path
        return
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS)
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")):
                continue
            full = Path(dirpath) / name
            yield str(full.relative_to(path)), full


def tree_digest(path: Path) -> str:
    """A digest of a file or folder's names, modes and contents."""
    h = hashlib.sha256()
    for rel, full in tree_files(path):
        try:
            st = full.stat()
        except OSError:
            continue
        h.update(f"{rel}\0{st.st_mode & 0o111}\0{st.st_size}\0".encode())
        with open(full, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def content_of(step: dict) -> str | None:
    """The digest of the local files a step adds (None for steps that add none)."""
    op = step.get("op")
    if op == "requirements":
        return tree_digest(Path(step["path"]))
    if op == "add_local_dir":
        return tree_digest(Path(step["src"]))
    if op == "add_local_python_source":
        return digest([tree_digest(Path(s["path"])) for s in step.get("sources", [])])
    return None


def step_key(step: dict, parent: str | None, extra: dict | None = None) -> str:
    """The content address of the layer `step` makes on top of `parent`."""
    spec = {k: v for k, v in step.items() if k not in _NOT_IN_KEY}
    return digest({"format": FORMAT, "parent": parent, "step": spec, "content": content_of(step),
                   "extra": extra or {}})
