"""`cellhop usage [--all] [--month YYYY-MM] [--json]`: GPU-hours and their cost, read from the host folder.

No server is needed: it reads the usage log and the leases where this user's
server keeps them (host_dir.locate with the same Jupyter config: the host
folder, else this user's runtime folder). Plain `cellhop usage` is this
user's own use, today and in the month; `--all` is the admin's view (as
root: each user's usage file is that user's own, mode 0600): totals per user
and the idle holders, live leases whose holder says it has been idle for
longer than c.Cellhop.idle_holder_after.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

from ..errors import CellhopError


def _host(config):
    from .host_dir import locate
    from .paths import private_dir, runtime_dir

    root = private_dir(Path(config.runtime_root)) if config.runtime_root else runtime_dir()
    return locate(config.host_dir, root)


def _month_of(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m").timestamp()
    except ValueError:
        raise CellhopError(f"--month {text!r} is not a month; give it as YYYY-MM, e.g. --month 2026-11") from None


def idle_leases(leases_dir: Path, open_types: dict[str, str], idle_after: float, now: float) -> list[dict]:
    """Every live lease (any user's) whose holder wrote that it has been idle for more than `idle_after` s,
    or that it held its GPU at low use that long (flagged): {"user", "uid", "gpu", "gpu_type", "since",
    "idle_since", "idle_minutes", "low_gpu_use"} (leases.PUBLIC fields)."""
    from .host_files import listing, read_live
    from .leases import user_name

    found = []
    for name in listing(leases_dir, "lock"):
        live = read_live(leases_dir / name)
        if live is None:
            continue
        shared, public = live
        idle_since = public.get("idle_since")
        if isinstance(idle_since, bool) or not isinstance(idle_since, (int, float)):
            idle_since = None
        flagged = public.get("idle_holder") is True  # busy under idle_holder_busy for idle_holder_after
        if not flagged and (idle_since is None or now - idle_since <= idle_after):
            continue
        since = public.get("since")
        found.append({"user": user_name(shared.uid), "uid": shared.uid, "gpu": shared.subject,
                      "gpu_type": open_types.get(name, "?"),
                      "since": since if isinstance(since, (int, float)) and not isinstance(since, bool) else None,
                      "idle_since": None if idle_since is None else float(idle_since),
                      "idle_minutes": 0.0 if idle_since is None else (now - idle_since) / 60,
                      "low_gpu_use": flagged})
    return found


def _own(config, host, prices, month_of, now) -> dict:
    from .host_dir import stricter
    from .leases import user_name
    from .usage_log import UsageLog
    from .usage_report import period_report, recent

    user = user_name()
    uses = UsageLog(host.folder("usage")).leases()
    report = period_report(uses, prices, now, month_of)
    budget = stricter(host.settings.for_user(user, "monthly_gpu_hours"), config.monthly_gpu_hours or None)
    return {"user": user, "host_wide": host.shared, "host_note": host.note, "prices": prices,
            "month_of": datetime.fromtimestamp(report["month"]["resets"] - 1).strftime("%Y-%m"),
            "today": report["today"], "month": {**report["month"], "budget_hours": float(budget) if budget else None},
            "leases": recent(uses)}


def _everyone(config, host, prices, month_of, now) -> dict:
    from .scheduler import month_start, next_month_start
    from .usage_log import UsageLog
    from .usage_report import per_user, totals

    uses = UsageLog(host.folder("usage")).leases(everyone=True)
    start = month_start(now if month_of is None else month_of)
    end = next_month_start(start)
    open_types = {u.lease: u.gpu_type for u in uses if u.end is None}
    return {"host_wide": host.shared, "host_note": host.note, "prices": prices,
            "month_of": datetime.fromtimestamp(start).strftime("%Y-%m"), "start": start, "end": end,
            "users": per_user(uses, prices, start, end, now), "total": totals(uses, prices, start, end, now),
            "idle_after": config.idle_holder_after, "idle_busy": config.idle_holder_busy,
            "idle_holders": idle_leases(host.folder("leases"), open_types, config.idle_holder_after, now)}


def _cost(period: dict) -> str:
    from ..usage_text import money
    from .usage_report import unpriced

    if period["cost"] is not None:
        return money(period["cost"])
    missing = unpriced(period)
    return f"unknown (no price for {', '.join(missing)})" if missing else "-"


def _print_everyone(report: dict) -> None:
    from ..usage_text import when

    print(f"GPU use in {report['month_of']} ({report['host_note']})")
    print(f"  {'user':<16} {'GPU-hours':>10} {'busy':>6} {'leases':>7}  cost")
    for user, t in report["users"].items():
        busy = f"{t['busy'] * 100:.0f}%" if t["busy"] is not None else "?"
        print(f"  {user:<16} {t['gpu_hours']:>10.4f} {busy:>6} {t['leases']:>7}  {_cost(t)}")
    total = report["total"]
    print(f"  {'all users':<16} {total['gpu_hours']:>10.4f} {'':>6} {'':>7}  {_cost(total)}")
    idle = report["idle_holders"]
    if not idle:
        print(f"Idle holders: none (no live lease idle for more than {report['idle_after'] / 60:.0f} min)")
    for lease in idle:
        why = [f"idle for {lease['idle_minutes']:.0f} min"] if lease["idle_since"] is not None else []
        if lease.get("low_gpu_use"):
            why.append(f"GPU under {report.get('idle_busy', 0.05) * 100:.0f}% busy for "
                       f"{report['idle_after'] / 60:.0f} min")
        print(f"Idle holder: {lease['user']} holds {lease['gpu_type']} {lease['gpu']} since "
              f"{when(lease['since']) if lease['since'] else '?'}, {', '.join(why)}")


def _usage(args) -> int:
    from ..usage_text import usage_text
    from .cli_storage import server_config
    from .config import Cellhop
    from .usage_report import effective_prices

    if args.all and os.geteuid() != 0:
        raise CellhopError("`cellhop usage --all` reads every user's usage file, and each is its user's own "
                           "(mode 0600): only root may read them all. Run it as root (sudo cellhop usage --all), "
                           "or plain `cellhop usage` for your own use.")
    try:
        config = Cellhop(config=server_config())
    except Exception as exc:  # a bad c.Cellhop value (gpu_prices...) says which
        raise CellhopError(f"the Jupyter config is not usable: {exc}") from None
    host = _host(config)
    prices = effective_prices(host.settings.gpu_prices, config.gpu_prices)
    now = time.time()
    month_of = _month_of(args.month)
    if args.all:
        report = _everyone(config, host, prices, month_of, now)
    else:
        report = _own(config, host, prices, month_of, now)
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.all:
        _print_everyone(report)
    else:
        print(usage_text({**report, "max_gpus_per_user": None, "held_now": None, "idle_holders": []},
                         month_name=report["month_of"] if args.month else None))
    if host.settings.problem:
        print(f"cellhop: the admin's settings: {host.settings.problem}", file=sys.stderr)
    return 0


def add_commands(sub) -> None:
    from .cli_endpoint import _run

    p = sub.add_parser("usage", help="GPU-hours and their cost (c.Cellhop.gpu_prices), today and this month")
    p.add_argument("--all", action="store_true",
                   help="every user's totals and the idle GPU holders (as root: the usage files are each user's)")
    p.add_argument("--month", default=None, metavar="YYYY-MM", help="that month instead of this one")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run(_usage))
