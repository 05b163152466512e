"""A user at max_gpus_per_user gets room from its own idle containers first."""

from __future__ import annotations

from ..container import MIN_IDLE, Phase

REASON = "its user was at max_gpus_per_user and a new request needed the GPU (idle containers yield first)"


def yield_idle_gpus(manager, count: int) -> int:
    """Stop `manager`'s idle GPU holders, least recently active first, until `count` GPUs are free (a
    container at work is never stopped); how many GPUs were freed."""
    idle = []
    for c in manager.list():
        if c.phase == Phase.READY and c.gpus and not c.standby:
            idle_for = manager.activity.idle_for(c.id, c.last_activity)
            if idle_for is not None and idle_for >= MIN_IDLE:
                idle.append((idle_for, c))
    freed = 0
    for _, container in sorted(idle, key=lambda pair: -pair[0]):
        if freed >= count:
            break
        manager.stop(container.id, reason=REASON)
        freed += len(container.gpus)
    return freed
