"""Runtimes by name: `c.Cellhop.runtime` names an entry point of the group `cellhop.runtimes`.

As jupyter_client finds kernel provisioners, so cellhop finds its runtimes:
cellhop's own pyproject.toml registers `local` and `ray`; another package adds
one with an entry point of its own (base.py says how).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

from ...errors import CellhopError
from .base import ContainerRuntime

GROUP = "cellhop.runtimes"
# cellhop's own, for an installation whose metadata predates the group (an editable install not
# reinstalled since): the same classes its pyproject.toml registers
_OWN = {"local": "cellhop.server_ext.runtimes.local:LocalRuntime",
        "ray": "cellhop.server_ext.runtimes.ray:RayRuntime"}


def _entry_points() -> dict:
    found = {ep.name.lower(): ep for ep in entry_points(group=GROUP)}
    for name, value in _OWN.items():
        if name not in found:
            from importlib.metadata import EntryPoint

            found[name] = EntryPoint(name, value, GROUP)
    return found


def runtime_names() -> list[str]:
    """The names `c.Cellhop.runtime` may take."""
    return sorted(_entry_points())


def runtime_class(name: str) -> type[ContainerRuntime]:
    """The runtime class registered under `name` (case-insensitive)."""
    found = _entry_points()
    entry = found.get((name or "").strip().lower())
    if entry is None:
        raise CellhopError(f"c.Cellhop.runtime = {name!r} is not an installed cellhop runtime; installed: "
                           f"{', '.join(sorted(found))} (the entry points of group {GROUP!r})")
    try:
        cls = entry.load()
    except ImportError as exc:
        raise CellhopError(f"cellhop runtime {entry.name!r} ({entry.value}) cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, ContainerRuntime)):
        raise CellhopError(f"cellhop runtime {entry.name!r} ({entry.value}) is not a ContainerRuntime subclass")
    return cls


def make_runtime(config, root: Path) -> ContainerRuntime:
    """The runtime `config` (a Cellhop) names, for a control plane whose runtime files are under `root`."""
    return runtime_class(config.runtime).from_config(config, root)
