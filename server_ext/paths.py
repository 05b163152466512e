"""Where cellhop keeps files: runtime files (owner-only) and persistent state."""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) with owner-only permissions and return it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def runtime_dir() -> Path:
    """`jupyter_runtime_dir()/cellhop`: connection files, sockets, GPU leases, queue tickets."""
    from jupyter_core.paths import jupyter_runtime_dir

    return private_dir(Path(jupyter_runtime_dir()) / "cellhop")


def state_dir() -> Path:
    """`jupyter_data_dir()/cellhop`: what must survive restarts."""
    from jupyter_core.paths import jupyter_data_dir

    return private_dir(Path(jupyter_data_dir()) / "cellhop")
