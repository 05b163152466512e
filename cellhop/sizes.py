"""Sizes as users type them ('8G', '512MiB', 1024) and as cellhop shows them ('1.5 KiB')."""

from __future__ import annotations

import re

from .errors import CellhopError

CHUNK = 1 << 20  # volume files travel a MiB at a time (uploads, downloads)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}


def _bytes(text) -> int | None:
    """'8G' -> bytes; None when `text` is not a size."""
    m = _SIZE.match(str(text))
    return int(float(m.group(1)) * _SCALE[m.group(2).lower()]) if m else None


def parse_memory(text: str | int | None) -> int | None:
    """'8G', '512M', '2GiB', 1024 -> bytes; None or '' -> no limit."""
    if text is None or text == "":
        return None
    if isinstance(text, int):
        return text
    value = _bytes(text)
    if value is None:
        raise CellhopError(f"memory {text!r} is not a size; write e.g. '512M' or '8G'")
    if value < 64 * 2**20:
        raise CellhopError(f"memory {text!r} is too small for a Python kernel; give at least 64M")
    return value


def parse_size(text: str | int | None) -> int | None:
    """'100G', '512MiB', 1024 -> bytes; None, '' or 0 -> no limit."""
    if text is None or text == "" or text == 0:
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise CellhopError(f"size {text} is negative")
        return text
    value = _bytes(text)
    if value is None:
        raise CellhopError(f"size {text!r} is not a size; write e.g. '500M' or '100G'")
    return value


def format_size(n: int | None) -> str:
    """1536 -> '1.5 KiB'; None -> 'no limit'."""
    if n is None:
        return "no limit"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
