"""Memory, process-count and CPU limits of a local container, enforced where the cell cannot lift them.

Each limit is a control group where the host gives one (cgroups.py: v2, or the
v1 controller's hierarchy), joined by the container's process between fork
and exec; its processes cannot leave it (they run without privileges). Where
no group can be had:

- memory: RLIMIT_DATA as a hard limit, per process: an allocation past it fails
  and the container kernel ends as the OOM killer would (OOM_EXIT_CODE). Not
  RLIMIT_AS, which counts address space that holds no memory: CUDA reserves
  huge PROT_NONE ranges and would not start under it.
- pids: RLIMIT_NPROC as a hard limit. The kernel counts it per host uid, so it
  is shared with every process of that uid (other containers of the same uid);
  root ignores it.
- cpu: an affinity mask of N CPUs, which the cell can widen again.

The thread-count variables (OMP_NUM_THREADS, ...) are set either way, so BLAS
and OpenMP size their pools to the CPUs given. `describe()` says per limit what
this host enforces; the container sees it in CELLHOP_LIMITS_ENFORCEMENT.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field

from .cgroups import ContainerGroups, Placement

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
FALLBACK = {"memory": "RLIMIT_DATA (per process)", "pids": "RLIMIT_NPROC (per host uid)",
            "cpu": "CPU affinity (the cell can widen it)"}


def enforcement(placement: Placement | None, controller: str, as_root: bool = False) -> str:
    """How `controller`'s limit is enforced on this host: its cgroup, or the fallback (none for root's nproc)."""
    found = placement.enforcement(controller) if placement is not None else None
    if found:
        return found
    if controller == "pids" and as_root:
        return "none (RLIMIT_NPROC does not bind root)"
    return FALLBACK[controller]


def describe_enforcement(placement: Placement | None, as_root: bool = False) -> str:
    """'memory: cgroup v1, pids: cgroup v1, cpu: cgroup v1' (one line, for describe() and the log)."""
    return ", ".join(f"{c}: {enforcement(placement, c, as_root)}" for c in ("memory", "pids", "cpu"))


@dataclass
class ResourceLimits:
    cpus: int | None = None
    memory: int | None = None
    pids: int | None = None
    placement: Placement | None = None  # where groups can be made (None: nowhere, rlimits only)
    as_root: bool = False  # the container's processes run as root (unsandboxed root server): no RLIMIT_NPROC
    groups: ContainerGroups | None = field(default=None, repr=False)  # set once the groups exist

    def _grouped(self, controller: str) -> bool:
        return self.groups is not None and controller in self.groups.paths

    def environment(self) -> dict[str, str]:
        env = {}
        if self.cpus:
            env.update({name: str(self.cpus) for name in THREAD_VARIABLES})
        if self.memory:
            env["CELLHOP_MEMORY_LIMIT"] = str(self.memory)
            env["CELLHOP_MEMORY_ENFORCEMENT"] = "cgroup" if self._grouped("memory") else "rlimit"
            if not self._grouped("memory"):
                # each thread's malloc arena is a private mapping too; two arenas keep an idle kernel small
                env["MALLOC_ARENA_MAX"] = "2"
        env["CELLHOP_LIMITS_ENFORCEMENT"] = self.describe()
        return env

    def describe(self) -> str:
        """Per limit that is set, how it is enforced for this container."""
        parts = []
        for controller, value in (("memory", self.memory), ("pids", self.pids), ("cpu", self.cpus)):
            if value:
                how = self.groups.placement.enforcement(controller) if self._grouped(controller) else None
                parts.append(f"{controller}: {how or enforcement(None, controller, self.as_root)}")
        return ", ".join(parts) or "none"

    def prepare(self, name: str) -> None:
        """Create the container's groups, where the host gives them, before the process starts."""
        if self.placement is None or not (self.memory or self.pids or self.cpus):
            return
        groups = ContainerGroups(name, self.placement)
        try:
            groups.create(memory=self.memory, pids=self.pids, cpus=self.cpus)
        except OSError:  # refused after all (e.g. a controller not delegated below this group): rlimits
            self.groups = None
            return
        self.groups = groups

    def preexec(self) -> None:
        """Runs in the child between fork and exec: the limits the child and its tree inherit."""
        if self.groups is not None:
            self.groups.join()
        if self.memory and not self._grouped("memory"):
            resource.setrlimit(resource.RLIMIT_DATA, (self.memory, self.memory))
        if self.pids and not self._grouped("pids") and not self.as_root:
            resource.setrlimit(resource.RLIMIT_NPROC, (self.pids, self.pids))
        if self.cpus and not self._grouped("cpu"):
            allowed = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, allowed[: self.cpus])

    def oom_killed(self) -> bool:
        return self.groups is not None and self.groups.oom_killed()

    def kill(self) -> None:
        if self.groups is not None:
            self.groups.kill()

    def remove(self, timeout: float = 5.0) -> bool:
        """Remove the groups (killing what is left in them); True once none is left."""
        if self.groups is None:
            return True
        return self.groups.remove(timeout)
