"""The container runtime interface: one small class whose methods are the lifecycle.

The control plane (`ContainerManager`) owns queueing, phases, readiness,
idle timeouts and events; a runtime only knows how to run a container
kernel somewhere. `local` and `ray` are two short subclasses of this.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from ...container import ExitStatus
from ..container_record import Container


class ContainerRuntime(ABC):
    """Starts and stops container kernels for the control plane."""

    name: str = "base"

    def load_inventory(self):
        """The GPUs this runtime's containers can get, or None for this host's (NVML or simulated)."""
        return None

    def make_scheduler(self, inventory, root: Path):
        """Who gets which GPU: this host's flock scheduler, unless the runtime places GPUs itself (Ray)."""
        from ..scheduler import Scheduler

        return Scheduler(inventory, root)

    def read_log(self, container: Container) -> str:
        """The container's log so far (the runtime may keep it elsewhere than this host)."""
        return container.log_path.read_text(errors="replace")

    def describe(self) -> str:
        """One line about how containers are isolated here, for `%gpu` and the API."""
        return self.name

    @abstractmethod
    def launch(self, container: Container) -> None:
        """Start the container kernel for `container` (its GPUs are already allocated).

        Called in the STARTING phase. Must set `container.connection_info`
        (the kernel's ports or sockets and HMAC key) and `container.handle`.
        Returns as soon as the process is started; readiness is the
        manager's business (it sends kernel_info_request).
        """

    @abstractmethod
    def poll(self, container: Container) -> ExitStatus | None:
        """None while the container runs, else how it ended. Cheap; called often."""

    @abstractmethod
    def interrupt(self, container: Container) -> None:
        """Interrupt the running cell (SIGINT to the kernel itself, never to the sandbox's init)."""

    @abstractmethod
    def terminate(self, container: Container) -> None:
        """Ask the container to stop (SIGTERM); the manager kills it after a grace period."""

    @abstractmethod
    def kill(self, container: Container) -> None:
        """Stop the container now, with everything it started."""

    def cleanup(self, container: Container) -> None:
        """Remove what the runtime made for `container` once it has exited."""

    def close(self) -> None:
        """Release what the runtime holds (called when the control plane stops)."""
