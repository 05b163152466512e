"""One line of `cellhop doctor`: what was checked, whether it is there, what to do when it is not."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Finding:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    essential: bool = False  # without it cellhop cannot sandbox containers: `cellhop doctor` exits 1
