"""GPU use and cost in words: `%gpu --usage`, who holds a GPU in `%gpu`, a `%%remote` cell's cost."""

from __future__ import annotations

import time
from datetime import datetime


def money(amount: float) -> str:
    """A cost, in the prices' own unit: 2 decimals, 4 under 1, "< 0.0001" for less."""
    if amount >= 1 or amount == 0:
        return f"{amount:.2f}"
    return f"{amount:.4f}" if amount >= 0.0001 else "< 0.0001"


def _hours(hours: float) -> str:
    return f"{hours:.2f}" if hours >= 1 or hours == 0 else f"{hours:.4f}"


def _period(name: str, period: dict) -> str:
    types = ", ".join(f"{t} {_hours(v['gpu_hours'])}" for t, v in period["by_type"].items())
    text = f"  {name:<12} {_hours(period['gpu_hours'])} GPU-hours" + (f" ({types})" if types else "")
    if period["cost"] is not None:
        text += f", cost {money(period['cost'])}"
    else:
        missing = [t for t, v in period["by_type"].items() if v["cost"] is None]
        if missing:
            text += f", cost unknown: no price for {', '.join(missing)}"
    return text


def when(epoch: float) -> str:
    """HH:MM today, else YYYY-MM-DD HH:MM (local time)."""
    moment = datetime.fromtimestamp(epoch)
    return moment.strftime("%H:%M" if moment.date() == datetime.now().date() else "%Y-%m-%d %H:%M")


def usage_text(view: dict, month_name: str | None = None) -> str:
    """The view of GET cellhop/api/usage, as `%gpu --usage` prints it (`month_name`: the month is not this one;
    `held_now` None: not known, as `cellhop usage` reads files, not a server)."""
    today, month = view["today"], view["month"]
    lines = [f"GPU use of {view['user']}"]
    if not view["host_wide"]:
        lines.append(f"  ({view['host_note']})")
    lines += [_period("Today:", today), _period(f"{month_name}:" if month_name else "This month:", month)]
    if view["prices"]:
        prices = ", ".join(f"{t} {money(p)}" for t, p in sorted(view["prices"].items()))
        lines.append(f"  Prices per GPU-hour: {prices}")
    else:
        lines.append("  No GPU prices are set (c.Cellhop.gpu_prices, or the admin's settings), so no costs.")
    resets = datetime.fromtimestamp(month["resets"]).strftime("%Y-%m-%d %H:%M")
    budget = month["budget_hours"]
    if month_name:
        pass  # a past (or future) month: its budget and reset are not this month's
    elif budget:
        left = max(0.0, budget - month["gpu_hours"])
        lines.append(f"  Budget:       {_hours(month['gpu_hours'])} of {budget:g} GPU-hours used this month, "
                     f"{_hours(left)} left; it resets on {resets}")
    else:
        lines.append(f"  Budget:       none (monthly_gpu_hours); the month's count resets on {resets}")
    cap = view["max_gpus_per_user"]
    if view["held_now"] is not None:
        lines.append(f"  GPUs held now: {view['held_now']}" + (f" (at most {cap} at once: max_gpus_per_user)" if cap
                                                                else " (no per-user cap)"))
    for c in view["idle_holders"]:
        lines.append(f"  ⚠ idle GPU holder: container {c['id']} ({c.get('owner') or '?'}): {c['idle_holder']}")
    return "\n".join(lines)


def describe_holder(who: dict, flags: dict[str, str], now: float | None = None) -> str:
    """How `%gpu` says who holds a GPU: this user's own container (with its idle-holder flag, from `flags`:
    container id -> flag), or another user ("held by user bob since 14:02, idle for 25 min")."""
    if "container" in who:
        text = f"held by {who.get('owner', '?')} (container {who['container']})"
        flag = flags.get(who["container"])
        return text + (f" ⚠ idle holder: {flag}" if flag else "")
    now = time.time() if now is None else now
    text = f"held by {who.get('owner') or 'user ' + str(who.get('user', '?'))}"
    if who.get("since"):
        text += f" since {when(who['since'])}"
    idle = who.get("idle_since")
    return text + (f", idle for {max(0.0, now - idle) / 60:.0f} min" if idle else ", busy")


def cell_cost(container: dict, seconds: float, prices: dict[str, float]) -> float | None:
    """What a cell that ran `seconds` on `container` cost: seconds × GPUs × price / 3600; None when it held
    no GPU or a GPU type it held has no price."""
    gpus = container.get("gpus") or []
    if not gpus or any(g.get("type") not in prices for g in gpus):
        return None
    return seconds * sum(prices[g["type"]] for g in gpus) / 3600.0
