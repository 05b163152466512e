"""A container spec checked against this host before any GPU is queued for: its working directory
(where workdir_policy allows, and one this host can write or make), its image (built), its
interpreter (an executable file). Each failure is InvalidContainerSpec or ImageNotFound: the
user's error, a 4xx over the API, and nothing was held."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .container import ContainerSpec
from .errors import InvalidContainerSpec
from .workdir_policy import WorkdirPolicy


def check_on_host(spec: ContainerSpec, runtime, policy: WorkdirPolicy) -> None:
    """Check `spec` for `runtime`; `spec.workdir` becomes the folder the policy resolved (links followed)."""
    if spec.workdir is not None:
        spec.workdir = policy.check(spec.workdir)
    if spec.image:
        root = getattr(runtime, "images_root", None)
        if runtime.name == "local":
            from .images.runtime_env import image_view

            image_view(root, spec.image)
        elif root is not None:  # another runtime ships the image's spec (Ray: a runtime_env)
            from .images.store import ImageStore

            ImageStore(root).image(spec.image)
    if runtime.name != "local":  # only the local runtime uses this host's interpreter and folders
        return
    if spec.python:
        found = spec.python if os.path.isabs(spec.python) else shutil.which(spec.python)
        if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
            raise InvalidContainerSpec(
                f"container spec field 'python' is {spec.python!r}, which is not an executable file on "
                "this host; give the path of a Python interpreter that has cellhop and ipykernel "
                "installed, or leave it out to use the server's own")
    if spec.workdir is not None:
        check_usable(spec.workdir)


def check_usable(workdir: Path) -> None:
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
