"""GPUs as values: `Gpu`, `Inventory` (the GPUs a control plane schedules), simulated GPUs.

An inventory is read from NVML or made from a configured simulated spec by the
control plane (server_ext/gpu_inventory.py, `load_inventory`); a host without
NVML gets an empty inventory that carries the reason. A simulated inventory is
used only when configured (`c.Cellhop.simulated_gpus` or
`CELLHOP_SIMULATED_GPUS="H100:2,A10G:1"`) and every GPU in it says so.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

from .errors import SimulatedInventoryError
from .gpu_types import GPU_TYPES, canonical_type

SIMULATED_ENV = "CELLHOP_SIMULATED_GPUS"

# The sentence every "no GPUs" message ends with: how to get a simulated inventory (containers real, GPUs not).
SIMULATED_HINT = (f'To try cellhop without a GPU, use a simulated inventory: set {SIMULATED_ENV}="H100:2,A10G:1" '
                  "where the control plane runs (the Jupyter server's environment, or the kernel's before "
                  '%load_ext cellhop) or c.Cellhop.simulated_gpus = "H100:2,A10G:1" in its config; '
                  "`cellhop demo` and the demo notebook do so on their own")

# Memory of simulated cards, in GiB, for what `%gpu` shows.
_SIMULATED_MEMORY_GIB = {
    "B200": 180, "H200": 141, "H100": 80, "GH200": 96, "A100-40GB": 40, "A100-80GB": 80,
    "A10G": 24, "A10": 24, "A40": 48, "A6000": 48, "L40S": 48, "L40": 48, "L4": 24,
    "T4": 16, "V100": 16, "RTX4090": 24, "RTX3090": 24, "RTX6000-ADA": 48,
}


@dataclass(frozen=True)
class Gpu:
    """One GPU of the host."""

    index: int
    uuid: str
    name: str  # the device name NVML reports (or "simulated H100")
    type: str  # canonical type, as users type it
    memory_total: int  # bytes
    mig_mode: bool | None = None  # None where NVML does not say
    simulated: bool = False
    node: str | None = None  # the Ray node (its IP) holding it; None on a single host
    minor: int | None = None  # NVML's minor number: its device file is /dev/nvidia<minor>; None where unknown

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Inventory:
    """The GPUs a control plane schedules, with why it is empty when it is."""

    gpus: tuple[Gpu, ...] = ()
    simulated: bool = False
    reason: str | None = None  # why there are no GPUs, in plain words
    driver_version: str | None = None

    def counts(self) -> dict[str, int]:
        """GPU type -> how many this host has, in index order of first appearance."""
        return dict(Counter(g.type for g in self.gpus))

    def of_type(self, gpu_type: str) -> list[Gpu]:
        return [g for g in self.gpus if g.type == gpu_type]

    def by_uuid(self, uuid: str) -> Gpu | None:
        return next((g for g in self.gpus if g.uuid == uuid), None)

    def describe(self) -> str:
        """One line for error messages: what this host has."""
        if not self.gpus:
            return f"no GPUs ({self.reason})" if self.reason else "no GPUs"
        parts = [f"{t} ×{n}" if n > 1 else t for t, n in self.counts().items()]
        return ", ".join(parts) + (" (simulated)" if self.simulated else "")

    @classmethod
    def from_dict(cls, data: dict) -> Inventory:
        """The inverse of `to_dict` (extra keys, such as a GPU's holder, are ignored)."""
        names = set(Gpu.__dataclass_fields__)
        gpus = tuple(Gpu(**{k: v for k, v in g.items() if k in names}) for g in data.get("gpus", ()))
        return cls(gpus=gpus, simulated=bool(data.get("simulated")), reason=data.get("reason"),
                   driver_version=data.get("driver_version"))

    def to_dict(self) -> dict:
        return {
            "gpus": [g.to_dict() for g in self.gpus],
            "simulated": self.simulated,
            "reason": self.reason,
            "driver_version": self.driver_version,
        }


def parse_simulated_spec(spec: str) -> tuple[Gpu, ...]:
    """Parse "H100:2,A10G:1" into simulated GPUs (index order follows the spec)."""
    gpus: list[Gpu] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        type_text, _, count_text = item.partition(":")
        gpu_type = canonical_type(type_text)
        if gpu_type is None:
            raise SimulatedInventoryError(
                f"simulated GPU type {type_text.strip()!r} is unknown; "
                f"use one of: {', '.join(GPU_TYPES)} (e.g. {SIMULATED_ENV}=\"H100:2,A10G:1\")"
            )
        try:
            count = int(count_text) if count_text.strip() else 1
        except ValueError:
            count = -1
        if count < 1:
            raise SimulatedInventoryError(
                f"simulated GPU count in {item!r} must be a whole number of at least 1 "
                f"(e.g. {SIMULATED_ENV}=\"H100:2,A10G:1\")"
            )
        for _ in range(count):
            ordinal = sum(1 for g in gpus if g.type == gpu_type)
            gpus.append(simulated_gpu(gpu_type, len(gpus), f"GPU-simulated-{gpu_type.lower()}-{ordinal}"))
    if not gpus:
        raise SimulatedInventoryError(
            f"the simulated inventory {spec!r} names no GPU (e.g. {SIMULATED_ENV}=\"H100:2,A10G:1\")"
        )
    return tuple(gpus)


def simulated_gpu(gpu_type: str, index: int, uuid: str, name: str | None = None, node: str | None = None) -> Gpu:
    """A simulated card of `gpu_type` (the memory of the real one), marked simulated."""
    return Gpu(index=index, uuid=uuid, name=name or f"simulated {gpu_type}", type=gpu_type,
               memory_total=_SIMULATED_MEMORY_GIB.get(gpu_type, 16) * 2**30, mig_mode=False, simulated=True,
               node=node)


def assigned_gpu(gpu_id: str, gpu_type: str | None, ordinal: int = 0, **fields) -> Gpu:
    """A GPU known only by the id a placer gave it (Ray's GPU ids: an NVML index or a UUID): its
    index is the id when that is a number, else `ordinal`; `fields` (uuid, name, node, ...) override."""
    values = {"index": int(gpu_id) if gpu_id.isdigit() else ordinal, "uuid": gpu_id,
              "name": f"{gpu_type or 'GPU'} {gpu_id}", "type": gpu_type or "", "memory_total": 0}
    return Gpu(**{**values, **fields})
