"""The GPU prices a kernel's status lines use: asked of the control plane once per kernel, then kept.

No request per cell: the first cell that held a GPU asks (`usage()`, which carries the prices in
force); every later one reuses the answer. A control plane that cannot say (an older server) means no
costs are shown, never a failed cell.
"""

from __future__ import annotations

import logging
import threading

from ..errors import CellhopError
from ..usage_text import cell_cost

log = logging.getLogger("cellhop")


class KernelPrices:
    def __init__(self, control):
        self.control = control
        self._prices: dict[str, float] | None = None
        self._lock = threading.Lock()

    def prices(self) -> dict[str, float]:
        with self._lock:
            if self._prices is None:
                try:
                    self._prices = dict(self.control.usage().get("prices") or {})
                except (CellhopError, OSError, NotImplementedError) as exc:
                    log.debug("cellhop: no GPU prices from the control plane: %s", exc)
                    self._prices = {}
            return self._prices

    def cost(self, container: dict, seconds: float) -> float | None:
        """What `seconds` on `container` cost at the prices in force (None: no GPU, or no price)."""
        if not container.get("gpus"):
            return None  # CPU only: never worth a request
        return cell_cost(container, seconds, self.prices())
