"""What a container spec asks of this host, checked before any queueing (for the local runtime,
whose containers use this host's interpreter and folders)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ...errors import InvalidContainerSpec


def check_python(python: str) -> None:
    """The interpreter must be an executable file of this host."""
    found = python if os.path.isabs(python) else shutil.which(python)
    if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise InvalidContainerSpec(
            f"container spec field 'python' is {python!r}, which is not an executable file on "
            "this host; give the path of a Python interpreter that has cellhop and ipykernel "
            "installed, or leave it out to use the server's own")


def check_workdir(workdir: Path) -> None:
    """The working directory must be a folder this host can write, or one it can make."""
    if workdir.exists():
        if not workdir.is_dir():
            raise InvalidContainerSpec(f"container spec field 'workdir' is {str(workdir)!r}, which is not a "
                                       "folder; give the folder the kernel should run in")
        if not os.access(workdir, os.W_OK | os.X_OK):
            raise InvalidContainerSpec(f"container spec field 'workdir' is {str(workdir)!r}, which this server "
                                       "cannot write; give a folder it can write (it is bound read-write)")
        return
    parent = workdir.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidContainerSpec(
            f"container spec field 'workdir' is {str(workdir)!r}, which does not exist and cannot be made "
            f"({str(parent)!r} is {'not a folder' if not parent.is_dir() else 'not writable'}); give a "
            "folder this server can write")
