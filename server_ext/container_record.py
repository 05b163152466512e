"""A container as the control plane tracks it: its spec, phase, GPUs, the runtime's handle, its files.

The values that cross boundaries (its spec, phases, exit status) are cellhop/container.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..container import ContainerSpec, ExitStatus, Phase
from .scheduling import Allocation


@dataclass
class Container:
    """A container as the control plane tracks it."""

    id: str
    spec: ContainerSpec
    phase: Phase = Phase.QUEUED
    allocation: Allocation | None = None
    connection_info: dict | None = None
    exit_status: ExitStatus | None = None
    queue_position: int | None = None
    phases: list[tuple[str, float]] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    last_activity: float = field(default_factory=time.monotonic)
    directory: Path | None = None  # runtime files: connection file, log
    handle: object = None  # the runtime's own handle (a Popen, a Ray actor)
    sandboxed: bool = False
    node: str | None = None  # where it runs: the Ray node's IP (None: this host)
    mounts: list[tuple[Path, str, bool]] = field(default_factory=list)  # (host folder, path inside, read-only)
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)  # never shown, never in to_dict
    standby: bool = False  # a standby of the warm pool (standby_pool.py): holds no GPU, claimed by a request
    claimed_from: str | None = None  # the standby whose kernel this container took over (None: started afresh)
    idle_holder: str | None = None  # why it is flagged as holding GPUs it hardly uses (usage_sampler.py)

    def __post_init__(self):
        self.phases.append((self.phase.value, self.created))

    def adopt(self, launched) -> None:
        """Take what the runtime's `launch()` returned (runtimes/base.py, Launched): where the kernel listens,
        the runtime's handle on it, whether it is sandboxed and where it runs."""
        self.connection_info = launched.connection_info
        self.handle = launched.handle
        self.sandboxed = launched.sandboxed
        self.node = launched.node

    def adopt_from(self, standby: Container) -> None:
        """Take over a claimed standby's running kernel: its process, connection and files."""
        self.connection_info = standby.connection_info
        self.handle = standby.handle
        self.sandboxed = standby.sandboxed
        self.node = standby.node
        self.directory = standby.directory

    def set_phase(self, phase: Phase) -> None:
        self.phase = phase
        self.phases.append((phase.value, time.time()))

    def phase_time(self, phase: Phase) -> float | None:
        return next((t for p, t in self.phases if p == phase.value), None)

    @property
    def gpus(self):
        return self.allocation.gpus if self.allocation else ()

    @property
    def log_path(self) -> Path | None:
        return self.directory / "container.log" if self.directory else None

    def to_dict(self) -> dict:
        """The public view (no HMAC key)."""
        return {
            "id": self.id,
            "owner": self.spec.owner,
            "label": self.spec.label,
            "phase": self.phase.value,
            "gpu_request": str(self.spec.gpu),
            "gpus": [{"index": g.index, "uuid": g.uuid, "type": g.type, "simulated": g.simulated, "node": g.node}
                     for g in self.gpus],
            "node": self.node,
            "queue_position": self.queue_position,
            "queued_seconds": self.allocation.waited if self.allocation else None,
            "phases": [{"phase": p, "time": t} for p, t in self.phases],
            "created": self.created,
            "cpus": self.spec.cpus,
            "memory": self.spec.memory,
            "sandboxed": self.sandboxed,
            "volumes": self.spec.volumes,
            "secrets": self.spec.secrets,  # names only
            "image": self.spec.image,
            "exit": self.exit_status.to_dict() if self.exit_status else None,
            "standby": self.standby,
            "claimed_from": self.claimed_from,
            "gpu_busy": self.allocation.busy_fraction() if self.allocation else None,
            "idle_holder": self.idle_holder,
        }
