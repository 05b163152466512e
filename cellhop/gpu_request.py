"""GPU requests in the syntax users type: `H100`, `H100:2`, `H100,A100-80GB`, `any`, `none`.

A request is parsed once, at the edge, into a `GpuRequest`: an ordered list of
alternatives, each a GPU type (or any type) and a count. `validate` checks a
request against an inventory and says what the host has when it cannot fit.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from .errors import GpuRequestError
from .gpu_types import GPU_TYPES, canonical_type
from .inventory import SIMULATED_HINT, Inventory

ANY = "any"


@dataclass(frozen=True)
class GpuChoice:
    """One alternative of a request: `count` GPUs of `type` (or of any one type when `type` is ANY)."""

    type: str
    count: int = 1

    def __str__(self) -> str:
        return self.type if self.count == 1 else f"{self.type}:{self.count}"


@dataclass(frozen=True)
class GpuRequest:
    """An ordered fallback list of choices; empty means CPU only (`none`)."""

    choices: tuple[GpuChoice, ...] = ()

    @property
    def cpu_only(self) -> bool:
        return not self.choices

    def __str__(self) -> str:
        return ",".join(str(c) for c in self.choices) if self.choices else "none"

    def types(self, inventory: Inventory) -> set[str]:
        """Every GPU type this request could be served by on `inventory`."""
        out: set[str] = set()
        for choice in self.choices:
            out |= set(inventory.counts()) if choice.type == ANY else {choice.type}
        return out

    @classmethod
    def parse(cls, text: str | None) -> GpuRequest:
        """Parse what a user typed; raise GpuRequestError naming the bad part."""
        text = (text or "").strip()
        if text.lower() in ("", "none", "cpu"):
            return cls(())
        choices = []
        for raw in text.split(","):
            item = raw.strip()
            if not item:
                raise GpuRequestError(f"empty choice in GPU request {text!r}; write e.g. 'H100,A100-80GB'")
            type_text, sep, count_text = item.partition(":")
            count = _parse_count(item, count_text) if sep else 1
            if type_text.strip().lower() == ANY:
                choices.append(GpuChoice(ANY, count))
                continue
            gpu_type = canonical_type(type_text)
            if gpu_type is None:
                close = difflib.get_close_matches(type_text.strip().upper(), GPU_TYPES, n=2)
                hint = f" Did you mean {' or '.join(close)}?" if close else ""
                raise GpuRequestError(
                    f"unknown GPU type {type_text.strip()!r}.{hint} Known types: {', '.join(GPU_TYPES)}."
                )
            choices.append(GpuChoice(gpu_type, count))
        return cls(tuple(choices))


def _parse_count(item: str, count_text: str) -> int:
    try:
        count = int(count_text)
    except ValueError:
        raise GpuRequestError(f"GPU count in {item!r} must be a whole number, e.g. 'H100:2'") from None
    if count < 1:
        raise GpuRequestError(f"GPU count in {item!r} must be at least 1; use 'none' for a CPU-only container")
    return count


def largest_per_node(inventory: Inventory) -> dict[str, int]:
    """GPU type -> the most GPUs of it on any one node (one container's GPUs are all on one node).

    On a single host (GPUs without a node) that is the host's count; on a Ray cluster, two nodes with
    one H100 each give {"H100": 1}: an `H100:2` container could never be placed there.
    """
    per_node: dict[tuple[str | None, str], int] = {}
    for g in inventory.gpus:
        per_node[(g.node, g.type)] = per_node.get((g.node, g.type), 0) + 1
    out: dict[str, int] = {}
    for gpu_type in inventory.counts():  # the inventory's order of types
        out[gpu_type] = max(n for (_, t), n in per_node.items() if t == gpu_type)
    return out


def feasible_choices(request: GpuRequest, inventory: Inventory) -> list[GpuChoice]:
    """The choices this host (or cluster) could ever satisfy, in order; raise when there is none.

    In a fallback list a type this host lacks is skipped (the list is meant to
    travel between hosts); a request none of whose choices fits is an error
    that lists what the host has. On a cluster a choice must fit on one node:
    the cluster's total of a type does not count, its largest node's does.
    """
    if request.cpu_only:
        return []
    counts = largest_per_node(inventory)
    clustered = any(g.node for g in inventory.gpus)  # a Ray cluster: GPUs say their node
    feasible, problems = [], []
    for choice in request.choices:
        have = max(counts.values(), default=0) if choice.type == ANY else counts.get(choice.type, 0)
        if have == 0:
            problems.append(f"{choice.type}: this {'cluster' if clustered else 'host'} has none")
        elif choice.count > have:
            if clustered:
                kind = "GPUs of one type" if choice.type == ANY else choice.type
                total = len(inventory.gpus) if choice.type == ANY else inventory.counts().get(choice.type, 0)
                problems.append(f"{choice}: a container's GPUs must all be on one node, and no node has more "
                                f"than {have} {kind} (the cluster has {total} in all)")
            else:
                problems.append(f"{choice}: this host has only {have}")
        else:
            feasible.append(choice)
    if not feasible:
        raise GpuRequestError(
            f"cannot satisfy GPU request {str(request)!r} ({'; '.join(problems)}). "
            f"This {'cluster' if clustered else 'host'} has: {inventory.describe()}"
            + (f"; the most on one node: {_per_node_text(counts)}" if clustered else "") + "."
            + ("" if inventory.gpus or clustered else f" {SIMULATED_HINT}.")
        )
    return feasible


def _per_node_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{t} ×{n}" for t, n in counts.items())
