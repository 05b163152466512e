"""Sizes as users type them ('8G', '512MiB', 1024) and as cellhop shows them ('1.5 KiB')."""

from __future__ import annotations

import math
import re

from .errors import CellhopError

CHUNK = 1 << 20  # volume files travel a MiB at a time (uploads, downloads)
_SIZE = re.compile(r"\s*(\d{1,20}(?:\.\d{1,20})?)\s*([kmgtp]?)(i?b?)\s*", re.IGNORECASE)
MAX_SIZE = 2**60  # 1 EiB: a quota beyond it is a typo, not a disk
_SCALE = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}


def size_in_bytes(text, units: str = "kmgtp") -> int | None:
    """'8G', '512MiB', 1024 -> bytes (K, M, G, T, P: powers of 1024, the suffix one of `units`); None when
    `text` is not such a size (a bool, a non-finite number, other text)."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        return None
    if isinstance(text, int):
        return text
    m = _SIZE.fullmatch(str(text)) if not isinstance(text, float) or math.isfinite(text) else None
    if not m or (m.group(2) and m.group(2).lower() not in units):
        return None
    return int(float(m.group(1)) * _SCALE[m.group(2).lower()])


def parse_size(text: str | int | None) -> int | None:
    """'100G', '512MiB', 1024 -> bytes; None, '' or 0 -> no limit. At most MAX_SIZE."""
    if text is None or text == "" or text == 0:
        return None
    value = size_in_bytes(text)
    if value is None:
        shown = text if len(str(text)) <= 40 else f"{str(text)[:40]}..."
        raise CellhopError(f"size {shown!r} is not a size; write e.g. '500M' or '100G'")
    if value < 0:
        raise CellhopError(f"size {text} is negative")
    if value > MAX_SIZE:
        raise CellhopError(f"size {str(text)[:40]!r} is more than 1 EiB; give a size this host could hold, "
                           "e.g. '500G'")
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
