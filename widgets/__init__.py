"""cellhop's notebook widgets, imported on first use (importing this package loads none of them).

`GpuMonitor`: the host's GPUs, live.
`VolumeBrowser`: a volume's folders, with upload, download, delete and usage.
"""

from __future__ import annotations

import importlib

# name -> the module (in this package) that defines it
_LAZY = {
    "GpuMonitor": ".gpu_monitor",
    "VolumeBrowser": ".volume_browser",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
