"""This server's user's GPU use as a view (GET cellhop/api/usage, `%gpu --usage`, the panel).

    {"user", "host_wide", "host_note", "prices": {type: price per GPU-hour},
     "today": {"gpu_hours", "cost", "by_type": {type: {"gpu_hours", "cost"}}},
     "month": {... the same, "budget_hours", "resets"},
     "max_gpus_per_user", "held_now", "leases": [the latest 50, newest first], "idle_holders": [containers]}

`cost` is null where a type used has no price (usage_report.py).
"""

from __future__ import annotations

import time

from .usage_report import effective_prices, period_report, recent


def prices_of(control_plane) -> dict[str, float]:
    """The prices in force for this control plane: the admin's, else c.Cellhop.gpu_prices."""
    host = getattr(control_plane.manager.scheduler, "host", None)
    host_prices = host.settings.gpu_prices if host is not None and host.settings is not None else {}
    return effective_prices(host_prices, control_plane.config.gpu_prices)


def usage_view(control_plane, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    scheduler = control_plane.manager.scheduler
    prices = prices_of(control_plane)
    usage_log = getattr(scheduler, "usage", None)
    host = getattr(scheduler, "host", None)
    uses = usage_log.leases() if usage_log is not None else []
    periods = period_report(uses, prices, now)
    leases = getattr(scheduler, "leases", None)
    from .leases import user_name

    return {
        "user": getattr(scheduler, "user", None) or user_name(),
        "host_wide": bool(host is not None and host.shared),
        "host_note": host.note if host is not None else
        f"{control_plane.manager.runtime.describe()} places GPUs itself: no usage log is kept here",
        "prices": prices,
        "today": periods["today"],
        "month": {**periods["month"], "budget_hours": _or_none(getattr(scheduler, "monthly_hours", None), float)},
        "max_gpus_per_user": _or_none(getattr(scheduler, "max_gpus", None), int),
        "held_now": leases.held_by().get(scheduler.uid, 0) if leases is not None else 0,
        "leases": recent(uses),
        "idle_holders": [c for c in control_plane.containers_view() if c.get("idle_holder")],
    }


def _or_none(value, kind):
    return kind(value) if value else None  # 0 and None: no limit
