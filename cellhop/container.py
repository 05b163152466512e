"""What a container is: its spec, its phases, how it ended. Small values that cross boundaries.

The control plane's own record of a container (its allocation, handle, mounts) is
server_ext/container_record.py."""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import CellhopError
from .gpu_request import GpuRequest
from .sizes import format_size  # noqa: F401  (shown with specs)
from .spec_rules import (check_cpus, check_env, check_pid, check_seconds, check_text, check_workdir,
                         parse_memory)
from .volume_paths import parse_mounts, volume_name

__all__ = ["ContainerSpec", "ExitStatus", "Phase", "format_size", "parse_memory"]

OOM_EXIT_CODE = 86  # the container kernel exits with this when memory ran out (RLIMIT_AS mode)


MIN_IDLE = 1.0  # seconds a container must have been idle before it is stopped to make room for other work

class Phase(str, enum.Enum):
    QUEUED = "queued"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    EXITED = "exited"


_SERVER_SIDE = {"caller"}  # ContainerSpec fields the server sets, never part of the API's JSON


@dataclass
class ContainerSpec:
    """What to start. Parsed and validated before anything runs."""

    gpu: GpuRequest = field(default_factory=GpuRequest)
    owner: str = "unknown"  # who asked: a notebook path or kernel id, for `%gpu` and the API
    cpus: int | None = None
    memory: int | None = None  # bytes
    env: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None  # host folder bound read-write as the working directory
    workdir_read_only: bool = False  # ... bound read-only instead (%%remote --workdir ro)
    idle_timeout: float | None = None  # None: the control plane's default
    queue_timeout: float | None = None  # None: the control plane's default
    python: str | None = None  # interpreter inside the container; None: this one
    label: str = ""
    owner_pid: int | None = None  # the notebook kernel's pid: when it exits, the container stops
    owner_host: str | None = None  # ... if it runs on the control plane's host
    volumes: list[dict] = field(default_factory=list)  # [{"name", "path", "read_only"}], see volume_paths
    secrets: list[str] = field(default_factory=list)  # secret names; their values are resolved at launch
    image: str | None = None  # key of a built image (cellhop.Image); None: the notebook's own environment
    # Who started it, as the server authenticated the request (kernel_tokens.Caller; None: this process).
    # Set by the API handler, never read from a request: session secrets are checked against it.
    caller: object = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        # Accept what users type ("H100", "8G") as well as parsed values; refuse what no host can use
        # (spec_rules.py): however a spec is made, these hold.
        if not isinstance(self.gpu, GpuRequest):
            self.gpu = GpuRequest.parse(self.gpu)
        self.memory = parse_memory(self.memory)
        self.cpus = check_cpus(self.cpus)
        self.env = check_env(self.env)
        self.idle_timeout = check_seconds(self.idle_timeout, "idle_timeout")
        self.queue_timeout = check_seconds(self.queue_timeout, "queue_timeout")
        self.python = check_text(self.python, "python")
        self.owner_pid = check_pid(self.owner_pid)
        if self.workdir is not None:
            self.workdir = Path(check_workdir(self.workdir))
        self.volumes = parse_mounts(self.volumes)
        self.secrets = [volume_name(getattr(s, "name", s), "secret") for s in (self.secrets or [])]

    def to_json(self) -> dict:
        """What crosses the API (`POST containers`); `from_json` reads it back."""
        out = {}
        for f in fields(self):
            if f.name in _SERVER_SIDE:
                continue
            value = getattr(self, f.name)
            if isinstance(value, (GpuRequest, Path)):
                value = str(value)
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: dict) -> ContainerSpec:
        """A spec from the API; unknown fields and wrong types are a CellhopError naming them."""
        if not isinstance(data, dict):
            raise CellhopError("the container spec must be a JSON object")
        known = {f.name for f in fields(cls)} - _SERVER_SIDE
        unknown = sorted(set(data) - known)
        if unknown:
            raise CellhopError(f"unknown field(s) in the container spec: {', '.join(unknown)}; "
                               f"known: {', '.join(sorted(known))}")
        checks = {"owner": str, "label": str, "python": str, "owner_host": str,
                  "cpus": int, "owner_pid": int, "idle_timeout": (int, float), "queue_timeout": (int, float),
                  "env": dict, "workdir": str, "gpu": str, "memory": (str, int), "volumes": list, "secrets": list,
                  "image": str}
        for name, kind in checks.items():
            value = data.get(name)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise CellhopError(f"container spec field {name!r} has the wrong type ({type(value).__name__})")
        if not isinstance(data.get("workdir_read_only", False), bool):
            raise CellhopError("container spec field 'workdir_read_only' must be true or false")
        return cls(**{k: v for k, v in data.items() if v is not None})


@dataclass(frozen=True)
class ExitStatus:
    """How a container ended."""

    code: int | None = None
    signal: int | None = None
    oom: bool = False
    stopped: bool = False  # stopped on purpose (stop, idle timeout, owner gone)
    reason: str = ""

    def describe(self) -> str:
        if self.oom:
            return "out of memory (the container exceeded its memory limit and was killed)"
        if self.stopped:
            return self.reason or "stopped"
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}" + (f" ({self.reason})" if self.reason else "")
        if self.code == 0:
            return "exited normally (exit code 0)"
        return f"crashed with exit code {self.code}" + (f" ({self.reason})" if self.reason else "")

    def to_dict(self) -> dict:
        return {"code": self.code, "signal": self.signal, "oom": self.oom,
                "stopped": self.stopped, "description": self.describe()}
