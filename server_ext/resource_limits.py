"""CPU and memory limits of a local container.

Memory: a cgroup v2 child group with memory.max where the unified hierarchy
is writable (the kernel's OOM killer ends the container, memory.events says
so); elsewhere RLIMIT_AS, where an allocation past the limit fails and the
container kernel exits with OOM_EXIT_CODE. CPUs: an affinity mask of N CPUs
plus the usual thread-count variables, so BLAS and OpenMP size their pools.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def cgroup_v2_memory_available() -> bool:
    """True where this process may create a child cgroup with a memory controller."""
    try:
        controllers = (CGROUP_ROOT / "cgroup.controllers").read_text().split()
        return "memory" in controllers and os.access(CGROUP_ROOT, os.W_OK)
    except OSError:
        return False


@dataclass
class ResourceLimits:
    cpus: int | None = None
    memory: int | None = None
    cgroup: Path | None = None  # set once the cgroup exists

    def environment(self) -> dict[str, str]:
        env = {}
        if self.cpus:
            env.update({name: str(self.cpus) for name in THREAD_VARIABLES})
        if self.memory:
            env["CELLHOP_MEMORY_LIMIT"] = str(self.memory)
            env["CELLHOP_MEMORY_ENFORCEMENT"] = "cgroup" if self.cgroup else "rlimit"
            if self.cgroup is None:
                # RLIMIT_AS counts address space, and glibc reserves 64 MiB of it per thread's
                # malloc arena: an idle kernel's ~11 threads would reserve ~700 MiB and a small
                # limit (512M) would stop it from starting. Two arenas keep it near 230 MiB.
                env["MALLOC_ARENA_MAX"] = "2"
        return env

    def prepare(self, name: str) -> None:
        """Create the cgroup, where one can be had, before the process starts."""
        if not self.memory or not cgroup_v2_memory_available():
            return
        path = CGROUP_ROOT / f"cellhop-{name}"
        try:
            path.mkdir(exist_ok=True)
            (path / "memory.max").write_text(str(self.memory))
            (path / "memory.swap.max").write_text("0")
            self.cgroup = path
        except OSError:  # e.g. the parent group does not delegate the memory controller
            try:
                path.rmdir()
            except OSError:
                pass
            self.cgroup = None

    def preexec(self) -> None:
        """Runs in the child between fork and exec: the limits the child and its tree inherit."""
        if self.cgroup is not None:
            (self.cgroup / "cgroup.procs").write_text(str(os.getpid()))
        elif self.memory:
            resource.setrlimit(resource.RLIMIT_AS, (self.memory, self.memory))
        if self.cpus:
            allowed = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, allowed[: self.cpus])

    def oom_killed(self) -> bool:
        if self.cgroup is None:
            return False
        try:
            for line in (self.cgroup / "memory.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        except OSError:
            pass
        return False

    def remove(self) -> None:
        if self.cgroup is not None:
            try:
                self.cgroup.rmdir()
            except OSError:
                pass
