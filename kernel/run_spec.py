"""What to run: the one typed value behind `%gpu`, `%%remote` options and `cellhop.remote(...)`.

A RunSpec says which container a cell or a call needs (GPU request, CPUs,
memory, image, volumes, secrets) and how long it may idle or run. It takes
what users write (`"H100"`, `"8G"`, `"datasets:/data:ro"`, `{"/data": vol}`,
`cellhop.Secret`) and holds it parsed, so every later step sees one shape.
The container pool keys warm containers by `key()`; `container_spec()` is
the one place it becomes the control plane's ContainerSpec.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import NamedTuple

from ..container import ContainerSpec, parse_memory
from ..gpu_request import GpuRequest


WORKDIR_MODES = ("none", "ro", "rw")


class Mount(NamedTuple):
    """A volume mounted in the container: `--volume NAME:/path[:ro]`."""

    name: str
    path: str
    read_only: bool = False

    def __str__(self) -> str:
        return f"{self.name}:{self.path}" + (":ro" if self.read_only else "")


def _mounts(volumes) -> tuple[Mount, ...]:
    if not volumes:
        return ()
    if isinstance(volumes, tuple) and all(isinstance(m, Mount) for m in volumes):
        return volumes
    from .volume import mounts_of

    if isinstance(volumes, (list, tuple)):
        volumes = [m._asdict() if isinstance(m, Mount) else m for m in volumes]
    return tuple(Mount(m["name"], m["path"], m["read_only"]) for m in mounts_of(volumes))


def _secrets(secrets) -> tuple[str, ...]:
    if not secrets:
        return ()
    if isinstance(secrets, tuple) and all(isinstance(s, str) for s in secrets):
        return tuple(dict.fromkeys(secrets))
    from .secret import secret_names

    return tuple(dict.fromkeys(secret_names(secrets)))


@dataclass(frozen=True)
class RunSpec:
    """Which container to run in, and the limits of the work run there."""

    gpu: GpuRequest = field(default_factory=GpuRequest)
    cpus: int | None = None
    memory: int | None = None  # bytes
    image: object = None  # a cellhop.Image (`--image NAME`, `image=`); None: the notebook's own environment
    image_key: str | None = None  # the built image's key, set when the work is about to use it
    volumes: tuple[Mount, ...] = ()
    secrets: tuple[str, ...] = ()  # secret names
    idle_timeout: float | None = None  # None: the control plane's default
    timeout: float | None = None  # seconds one cell or call may run
    keep_warm: int = 0  # containers kept started and holding their GPUs while idle (never scaled down)
    workdir: str = "none"  # the notebook's folder as the working folder: "none", "ro" or "rw" (WORKDIR_MODES)
    # True: `workdir` is the notebook's default, not what the user asked for; where the control plane cannot
    # bind the folder the work runs without one (remote_cells.py) instead of failing. Not part of key().
    workdir_fallback: bool = False

    def __post_init__(self):
        # What users type, parsed once: "H100", "8G", "name:/path", Volume and Secret objects.
        if not isinstance(self.gpu, GpuRequest):
            object.__setattr__(self, "gpu", GpuRequest.parse(self.gpu))
        object.__setattr__(self, "memory", parse_memory(self.memory))
        object.__setattr__(self, "volumes", _mounts(self.volumes))
        object.__setattr__(self, "secrets", _secrets(self.secrets))
        if not isinstance(self.keep_warm, int) or isinstance(self.keep_warm, bool) or not 0 <= self.keep_warm <= 64:
            raise ValueError(f"keep-warm must be a whole number from 0 to 64, not {self.keep_warm!r}")
        if self.workdir not in WORKDIR_MODES:
            raise ValueError(f"workdir must be one of {', '.join(WORKDIR_MODES)} (the notebook's folder not bound, "
                             f"bound read-only, bound read-write), not {self.workdir!r}")

    def with_(self, **changes) -> RunSpec:
        """This spec with `changes` (same names as the fields, in any form users write)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"RunSpec has no field(s) {', '.join(sorted(unknown))}")
        if "workdir" in changes and "workdir_fallback" not in changes:
            changes["workdir_fallback"] = False  # asked for by name: it fails clearly where it cannot be bound
        return replace(self, **changes)

    def key(self) -> tuple:
        """What makes two containers interchangeable: warm containers are reused by this key."""
        return (str(self.gpu), self.cpus, self.memory, self.image_key, self.volumes, self.secrets,
                self.workdir, self.workdir_folder())

    def workdir_folder(self) -> str | None:
        """The folder bound as the working folder: the notebook's (this kernel's working folder, where
        Jupyter starts a notebook's kernel), or None for "none"."""
        return None if self.workdir == "none" else os.getcwd()

    def container_spec(self, owner: str, label: str, queue_timeout: float | None = None) -> ContainerSpec:
        """The control plane's ContainerSpec for this run."""
        return ContainerSpec(gpu=self.gpu, owner=owner, cpus=self.cpus, memory=self.memory,
                             idle_timeout=0 if self.keep_warm else self.idle_timeout,  # 0: never idle-stopped
                             queue_timeout=queue_timeout, label=label,
                             image=self.image_key, volumes=[m._asdict() for m in self.volumes],
                             secrets=list(self.secrets), workdir=self.workdir_folder(),
                             workdir_read_only=self.workdir == "ro")
