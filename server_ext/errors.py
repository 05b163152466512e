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


class ContainerStartError(CellhopError, RuntimeError):
    """A container did not reach the ready phase."""


class ContainerNotFound(CellhopError, KeyError):
    """No container with that id is known to this control plane."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "container not found"
