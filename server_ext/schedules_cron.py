"""When a schedule fires: a five-field cron expression (minute hour day-of-month month day-of-week, in the
server's local time; `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b,c`; day-of-week 0-7 with
0 and 7 Sunday; as in cron, when both day fields are restricted either one matching is enough), or `every`
("90s", "15m", "2h", "1d", or a number of seconds).
"""

from __future__ import annotations

import datetime as dt
import math
import re

from ..errors import CellhopError

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_EVERY = 1.0


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        rng, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if rng == "*":
                start, end = low, high
            elif "-" in rng:
                a, b = rng.split("-", 1)
                start, end = int(a), int(b)
            else:
                start = int(rng)
                end = high if step_text else start
        except ValueError:
            raise CellhopError(f"cron {name} field {text!r}: use numbers, '*', ranges a-b, steps /n and lists a,b"
                               ) from None
        if step < 1 or not low <= start <= end <= high:
            raise CellhopError(f"cron {name} field {text!r}: values go from {low} to {high} (and a step is 1 or more)")
        values.update(range(start, end + 1, step))
    return frozenset(values)


class Cron:
    """A parsed cron expression; `next_after(t)` is the next firing time (epoch seconds) after t."""

    def __init__(self, expression: str):
        parts = str(expression).split()
        if len(parts) != 5:
            raise CellhopError(f"cron={expression!r}: give five fields, minute hour day-of-month month day-of-week "
                               "(e.g. '0 3 * * *': every day at 03:00)")
        self.expression = " ".join(parts)
        self.minute, self.hour, self.dom, self.month, dow = (
            _field(p, *spec) for p, spec in zip(parts, _FIELDS))
        self.dow = frozenset(d % 7 for d in dow)
        self.dom_any, self.dow_any = parts[2] == "*", parts[4] == "*"

    def _day_matches(self, day: dt.datetime) -> bool:
        dom = day.day in self.dom
        dow = (day.isoweekday() % 7) in self.dow
        if self.dom_any or self.dow_any:
            return dom and dow
        return dom or dow

    def next_after(self, t: float) -> float:
        moment = dt.datetime.fromtimestamp(t).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        limit = moment + dt.timedelta(days=5 * 366)
        while moment < limit:
            if moment.month not in self.month:
                moment = (moment.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
                continue
            if not self._day_matches(moment):
                moment = moment.replace(hour=0, minute=0) + dt.timedelta(days=1)
                continue
            if moment.hour not in self.hour:
                moment = moment.replace(minute=0) + dt.timedelta(hours=1)
                continue
            if moment.minute not in self.minute:
                moment += dt.timedelta(minutes=1)
                continue
            return moment.timestamp()
        raise CellhopError(f"cron={self.expression!r} never fires (check the day of month against the month)")


def parse_every(every) -> float:
    """Seconds between firings: "15m", "2s", "1h", "1d", or a number of seconds (at least 1)."""
    if isinstance(every, (int, float)) and not isinstance(every, bool):
        seconds = float(every)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(every))
        if not match:
            raise CellhopError(f"every={every!r}: give a duration like '90s', '15m', '2h', '1d' or seconds")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds) or seconds < MIN_EVERY:
        raise CellhopError(f"every={every!r}: give at least {MIN_EVERY:g} second")
    return seconds
