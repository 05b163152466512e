"""The event stream (`cellhop/api/events`, `ControlPlaneClient.subscribe`): how often metrics may come.

Events are JSON objects with a `type`: `hello` (the GPUs and containers when a listener joins),
`container` (a phase, a queue position), `image` (build progress), `volume`, `metrics` (one GPU
sample every `interval` seconds while a listener wants them); docs/api.md has their fields.
"""

from __future__ import annotations

MIN_INTERVAL = 0.1
MAX_INTERVAL = 60.0


def check_interval(seconds) -> float:
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        raise ValueError(f"metrics interval {seconds!r} is not a number of seconds") from None
    if not MIN_INTERVAL <= value <= MAX_INTERVAL:
        raise ValueError(f"metrics interval {value:g} s is out of range; give {MIN_INTERVAL:g} to {MAX_INTERVAL:g} s")
    return value
