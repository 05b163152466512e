"""What the usage log adds up to: GPU-hours and their cost, today and this month, per user and per GPU type.

Pure functions over usage_log.LeaseUse records (the REST route api/usage.py,
`%gpu --usage` through it, and `cellhop usage` use them). A lease still held
counts up to now. Cost is GPU-hours times the price per GPU-hour of the GPU's
type; where a type that was used has no price, its cost (and the total's) is
None, never 0: the views say "no price for ..." instead of a wrong sum.

Prices: the admin's (the host folder's settings.json, `gpu_prices`) win, type
by type, over this user's own `c.Cellhop.gpu_prices`; none by default.
"""

from __future__ import annotations

import time
from datetime import datetime

from .host_dir import check_prices
from .scheduler import month_start, next_month_start
from .usage_log import LeaseUse

RECENT_LEASES = 50  # how many of the latest leases a report lists


def day_start(now: float) -> float:
    """Local midnight of the day `now` is in."""
    return datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def effective_prices(host_prices: dict | None, own_prices: dict | None) -> dict[str, float]:
    """{GPU type: price per GPU-hour}: the user's own, with the admin's winning type by type.
    ValueError (naming the bad entry) when either is not a map of types to numbers >= 0."""
    return {**check_prices(own_prices or {}), **check_prices(host_prices or {})}


def cost_of(hours: float, gpu_type: str, prices: dict[str, float]) -> float | None:
    """The cost of `hours` GPU-hours of `gpu_type`, None when that type has no price."""
    price = prices.get(gpu_type)
    return None if price is None else hours * price


def totals(uses: list[LeaseUse], prices: dict[str, float], since: float = 0.0, until: float | None = None,
           now: float | None = None) -> dict:
    """{"gpu_hours", "cost", "by_type": {type: {"gpu_hours", "cost"}}} of `uses` between `since` and `until`
    (now). `cost` is None when any type used in that time has no price."""
    now = time.time() if now is None else now
    by_type: dict[str, float] = {}
    for use in uses:
        hours = use.hours(now, since, until)
        if hours > 0:
            by_type[use.gpu_type] = by_type.get(use.gpu_type, 0.0) + hours
    types = {t: {"gpu_hours": h, "cost": cost_of(h, t, prices)} for t, h in sorted(by_type.items())}
    costs = [v["cost"] for v in types.values()]
    total_cost = None if not prices or None in costs else sum(costs, 0.0)
    return {"gpu_hours": sum(by_type.values(), 0.0), "cost": total_cost, "by_type": types}


def mean_busy(uses: list[LeaseUse], since: float = 0.0, now: float | None = None) -> float | None:
    """The busy fraction of `uses` since `since`, weighted by their GPU-hours; None where no lease measured it."""
    now = time.time() if now is None else now
    weighted = hours_known = 0.0
    for use in uses:
        hours = use.hours(now, since)
        if use.busy is not None and hours > 0:
            weighted += use.busy * hours
            hours_known += hours
    return weighted / hours_known if hours_known else None


def unpriced(period: dict) -> list[str]:
    """The GPU types of a `totals` result that have no price (so its cost is unknown)."""
    return [t for t, v in period["by_type"].items() if v["cost"] is None]


def period_report(uses: list[LeaseUse], prices: dict[str, float], now: float | None = None,
                  month_of: float | None = None) -> dict:
    """{"today": totals since local midnight, "month": totals of the month `month_of` (default: now's) with
    "resets" (when that month ends)}."""
    now = time.time() if now is None else now
    start = month_start(now if month_of is None else month_of)
    end = next_month_start(start)
    return {"today": totals(uses, prices, day_start(now), now=now),
            "month": {**totals(uses, prices, start, end, now=now), "resets": end}}


def per_user(uses: list[LeaseUse], prices: dict[str, float], since: float, until: float | None = None,
             now: float | None = None) -> dict[str, dict]:
    """user -> its totals (plus "busy", the mean busy fraction, and "leases", how many leases it had)
    between `since` and `until`: the admin's view of everyone's use."""
    now = time.time() if now is None else now
    grouped: dict[str, list[LeaseUse]] = {}
    for use in uses:
        if use.hours(now, since, until) > 0:
            grouped.setdefault(use.user, []).append(use)
    return {user: {**totals(own, prices, since, until, now), "busy": mean_busy(own, since, now),
                   "leases": len(own)} for user, own in sorted(grouped.items())}


def recent(uses: list[LeaseUse], count: int = RECENT_LEASES) -> list[dict]:
    """The latest `count` leases, newest first, as dicts."""
    return [u.to_dict() for u in sorted(uses, key=lambda u: u.start, reverse=True)[:count]]
