"""Errors a user of the control plane can cause; each says what to do next."""

from __future__ import annotations


class CellhopError(Exception):
    """Base class of every error cellhop raises on purpose."""


class GpuRequestError(CellhopError, ValueError):
    """A GPU request that this host can never satisfy (unknown type, bad count)."""


class SimulatedInventoryError(CellhopError, ValueError):
    """A malformed simulated inventory (CELLHOP_SIMULATED_GPUS or c.Cellhop.simulated_gpus)."""


class QueueTimeout(CellhopError, TimeoutError):
    """No GPU freed up for a request before its timeout."""


class QueueCancelled(CellhopError):
    """A request queued for GPUs was called off before it got them (its requester went away, or its
    container was stopped)."""


class ContainerStartError(CellhopError, RuntimeError):
    """A container did not reach the ready phase (an internal failure: the process died, timed out)."""


class ContainerDied(ContainerStartError):
    """A container's process ended while it was starting: what the spec asked for cannot run (an
    interpreter that is not a Python with cellhop, a crash at import). The log's end says why."""

    http_status = 422


class ContainerStopped(CellhopError):
    """A container was stopped (or deleted) before it became ready: while queued for a GPU, or starting."""


class InvalidContainerSpec(CellhopError, ValueError):
    """A container spec naming something this host cannot use (an interpreter, a working directory)."""


class ContainerNotFound(CellhopError, KeyError):
    """No container with that id is known to this control plane."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "container not found"
