"""GPU type names as users type them, and the mapping from NVML's device names.

Users write `H100`, `a100-80gb` or `A100`; NVML reports names such as
"NVIDIA H100 80GB HBM3". Both end up as one canonical type string from
`GPU_TYPES`. "A100" alone means the 40 GB card, as on other platforms.
"""

from __future__ import annotations

GPU_TYPES: tuple[str, ...] = (
    "B200",
    "H200",
    "H100",
    "GH200",
    "A100-40GB",
    "A100-80GB",
    "A10G",
    "A10",
    "A40",
    "A6000",
    "L40S",
    "L40",
    "L4",
    "T4",
    "V100",
    "RTX4090",
    "RTX3090",
    "RTX6000-ADA",
)

# Extra spellings a user may type, mapped to the canonical type.
_ALIASES: dict[str, str] = {
    "A100": "A100-40GB",
    "A100-40G": "A100-40GB",
    "A100-80G": "A100-80GB",
    "A100-40": "A100-40GB",
    "A100-80": "A100-80GB",
    "RTX-4090": "RTX4090",
    "RTX-3090": "RTX3090",
    "RTXA6000": "A6000",
    "RTX-A6000": "A6000",
    "RTX6000ADA": "RTX6000-ADA",
    "RTX-6000-ADA": "RTX6000-ADA",
}

_BY_UPPER = {t.upper(): t for t in GPU_TYPES} | {k.upper(): v for k, v in _ALIASES.items()}


def canonical_type(text: str) -> str | None:
    """The canonical type for what a user typed (case-insensitive), or None if unknown.

    Spaces and underscores may stand for dashes: "a100 80gb" is "A100-80GB".
    """
    key = text.strip().upper().replace("_", " ")
    return _BY_UPPER.get(key.replace(" ", "")) or _BY_UPPER.get("-".join(key.split()))


def type_from_nvml(nvml_name: str, memory_total: int) -> str:
    """The canonical type of a device from its NVML name and total memory (bytes).

    A name that matches no known type is kept, shortened ("NVIDIA " removed,
    spaces to dashes), so that a new card still gets a usable type. An A100's
    size comes from its name ("...-80GB") where it says, else from its memory.
    "NVIDIA GB200" counts as a B200 (its GPU), as a V100S counts as a V100.
    """
    name = nvml_name.upper().replace("NVIDIA", "").replace("TESLA", "").replace("GEFORCE", "")
    tokens = name.replace("-", " ").split()
    joined = "".join(tokens)
    gib = memory_total / 2**30
    if "A100" in tokens or joined.startswith("A100"):
        if "80GB" in tokens:
            return "A100-80GB"
        if "40GB" in tokens:
            return "A100-40GB"
        return "A100-80GB" if gib > 60 else "A100-40GB"
    if "GH200" in joined:
        return "GH200"
    for candidate in ("B200", "H200", "H100", "L40S", "A10G", "RTX4090", "RTX3090"):
        if candidate in joined:
            return candidate
    if "RTX" in tokens and "6000" in tokens and "ADA" in tokens:
        return "RTX6000-ADA"
    if "RTXA6000" in joined or ("RTX" in tokens and "A6000" in tokens):
        return "A6000"
    for candidate in ("L40", "L4", "A40", "A10", "T4", "V100"):
        if candidate in tokens:
            return candidate
    if "V100S" in tokens:
        return "V100"
    short = "-".join(tokens)
    return short or nvml_name.strip()
