"""What a GPU scheduler is to the control plane: the interface, and the allocation it hands out.

Two implement it: `scheduler.Scheduler` (one host: flock leases and a queue of ticket files
shared by every process) and `runtimes.ray_scheduler.RayScheduler` (a Ray cluster: placement
groups, Ray's own queue). The container manager drives either without knowing which; a runtime
says which one it needs (`ContainerRuntime.make_scheduler`).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from ..gpu_request import GpuRequest
from ..inventory import Gpu, Inventory
from .leases import Lease


@dataclass
class Allocation:
    """The GPUs granted to one container, held until `release()`."""

    request: GpuRequest
    leases: list[Lease] = field(default_factory=list)
    waited: float = 0.0  # seconds spent queued

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        return tuple(lease.gpu for lease in self.leases)

    @property
    def gpu_type(self) -> str | None:
        return self.leases[0].gpu.type if self.leases else None

    busy_sum: float = 0.0  # GPU utilization samples (0..1) taken while held, summed
    samples: int = 0

    def sample(self, busy: float) -> None:
        """One metric sample of how busy the GPUs were (0..1)."""
        self.busy_sum += min(max(busy, 0.0), 1.0)
        self.samples += 1

    def busy_fraction(self) -> float | None:
        """The mean of the samples; None when none were taken (no metrics)."""
        return self.busy_sum / self.samples if self.samples else None

    def release(self) -> None:
        for lease in self.leases:
            lease.release()


class GpuScheduler(ABC):
    """Who gets which GPU of `inventory`. Thread-safe; `acquire` blocks while it queues."""

    inventory: Inventory

    @abstractmethod
    def acquire(self, request: GpuRequest, holder: dict, timeout: float | None = None,
                on_position: Callable[[int], None] | None = None,
                cancelled: threading.Event | None = None) -> Allocation:
        """Take GPUs for `request`, queueing up to `timeout` seconds (None: forever).

        `holder` says who asks ({"owner", "container"}), for `holders()`. `on_position(n)` is
        called whenever the number of requests ahead changes (0: next in line). `cancelled`
        (anything with `is_set()`) calls the wait off. Raises GpuRequestError at once for a
        request that can never fit, QueueTimeout when it waited too long, QueueCancelled (or
        QueueTimeout) when it was called off."""

    @abstractmethod
    def release(self, allocation: Allocation) -> None:
        """Give the GPUs of `allocation` back (waiters may take them now)."""

    def wake(self) -> None:
        """Make this process's waiters look again now (a wait was called off). Nothing to do for a
        scheduler whose waiters look often enough on their own."""

    @abstractmethod
    def queued_types(self) -> set[str]:
        """The GPU types that live queued requests wait for."""

    @abstractmethod
    def holders(self) -> dict[str, dict | None]:
        """GPU uuid -> who holds it (None when free), for `%gpu` and the API."""
