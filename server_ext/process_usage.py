"""CPU and memory of a process tree, read from /proc (Linux). Used for simulated GPU metrics."""

from __future__ import annotations

import os
import time
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
            except OSError:
                continue
    except OSError:
        pass
    return found


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants that are alive now."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo += _children(p)
    return seen


def _cpu_ticks_and_rss(pid: int) -> tuple[int, int]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0, 0
    fields = stat[stat.rfind(")") + 2:].split()
    # fields[11], fields[12]: utime, stime; fields[21]: rss pages (field numbers 14, 15, 24 of proc(5))
    return int(fields[11]) + int(fields[12]), int(fields[21]) * _PAGE


class ProcessTreeUsage:
    """CPU use (percent of one core, between two samples) and resident memory of a process tree."""

    def __init__(self, pid: int):
        self.pid = pid
        self._last: tuple[float, int] | None = None

    def sample(self) -> tuple[float | None, int]:
        ticks = rss = 0
        for p in process_tree(self.pid):
            t, r = _cpu_ticks_and_rss(p)
            ticks += t
            rss += r
        now = time.monotonic()
        percent = None
        if self._last is not None and now > self._last[0]:
            percent = max(0.0, (ticks - self._last[1]) / _TICKS / (now - self._last[0]) * 100.0)
        self._last = (now, ticks)
        return percent, rss
