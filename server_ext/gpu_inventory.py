"""The inventory a control plane schedules on this host: the configured simulated one, or NVML's.

Nothing here runs at import: `load_inventory` is called once by the control plane.
There is never a silent fallback from one source to another.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..inventory import SIMULATED_ENV, Inventory, parse_simulated_spec


def load_inventory(simulated: str | None = None, environ: Mapping[str, str] | None = None) -> Inventory:
    """The inventory this process should schedule.

    `simulated` is the configured spec (the `c.Cellhop.simulated_gpus` traitlet);
    when it is empty, `CELLHOP_SIMULATED_GPUS` is consulted; when both are
    empty, NVML is read. There is never a silent fallback from one to another.
    """
    environ = os.environ if environ is None else environ
    spec = (simulated or "").strip() or environ.get(SIMULATED_ENV, "").strip()
    if spec:
        return Inventory(gpus=parse_simulated_spec(spec), simulated=True)
    from .nvml import read_nvml_inventory  # NVML is touched only when asked

    return read_nvml_inventory()
