"""Running a container in a built image: its interpreter, environment and folders."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ...errors import CellhopError, ImageNotFound, UnknownImage
from .store import ImageStore

_KEY = re.compile(r"^[0-9a-f]{8,64}$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


def image_view(root: Path | None, key: str) -> dict:
    """The runtime view of image `key` (or of the image last built under that name, e.g. from a
    kernelspec's provisioner config) in the store at `root`; UnknownImage (a user's error: a container
    spec names it) when it is not built, or not an image's key or name."""
    if root is None:
        raise CellhopError("this runtime has no image store; images need c.Cellhop.state_dir or the default one")
    store = ImageStore(root)
    try:
        if not _KEY.match(key or ""):
            if not _NAME.match(key or ""):
                raise UnknownImage(f"container spec field 'image' must be a built image's key or name, not {key!r}")
            key = store.image(key)["key"]
        return store.runtime_view(key)
    except ImageNotFound as exc:
        raise UnknownImage(str(exc)) from None


def apply_image(env: dict, view: dict, workdir: Path, spec_env: dict) -> list[tuple[Path, str, bool]]:
    """Put the image's environment into `env` (variables the container spec sets itself win);
    returns its folders as (host folder, path inside, read-only) mounts."""
    for name, value in view["env"].items():
        if name not in spec_env:
            env[name] = value
    env["VIRTUAL_ENV"] = view["venv"]
    env["PATH"] = os.pathsep.join(view["path_prepend"] + [env.get("PATH", "")]).rstrip(os.pathsep)
    if view["ld_library_path"]:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(view["ld_library_path"] + [env.get("LD_LIBRARY_PATH", "")]
                                                 ).rstrip(os.pathsep)
    if view["pythonpath"]:
        env["PYTHONPATH"] = os.pathsep.join(view["pythonpath"] + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["CELLHOP_IMAGE"] = view["key"]
    mounts = []
    for src, dest in view["mounts"]:
        inside = dest if dest.startswith("/") else str(Path(workdir) / dest)
        mounts.append((Path(src), inside, True))
    return mounts


def link_mounts(mounts: list[tuple[Path, str, bool]]) -> None:
    """Without a sandbox there is no mount: the image's folders appear as symbolic links instead."""
    for src, inside, _ in mounts:
        target = Path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or not target.exists():
            target.unlink(missing_ok=True)
            target.symlink_to(src, target_is_directory=True)
