"""Where a run starts and what it may skip: the run lock, the sync watermark, windows.

- The lock is a file next to the database (``<db>.lock``) held with flock: the
  kernel releases it when the process dies, even on kill -9, so a crashed run
  never leaves a stale lock behind.
- The watermark is the last day through which every window of the sync range is
  committed. ``sync`` restarts lookback_days before it, so late changes to recent
  calls are picked up.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Iterable

from pipeline.errors import DiskError, LockHeldError
from pipeline.extract import Window

WATERMARK_KEY = "watermark"


class RunLock:
    def __init__(self, database_path: Path):
        self.path = Path(str(database_path) + ".lock")
        self._handle = None

    def __enter__(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = self.path.open("a+")
        except OSError as exc:
            raise DiskError(f"{self.path}: cannot create lock file: {exc.strerror}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise LockHeldError(f"another callsync run holds {self.path} (pid {holder}); exiting") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def sync_range(today: date, start_date: date | None, lookback_days: int, watermark: date | None) -> tuple[date, date]:
    """From (watermark - lookback_days), or start_date on the first run, through today."""
    if watermark is not None:
        start = watermark - timedelta(days=lookback_days)
        if start_date is not None:
            start = max(start, start_date) if watermark >= start_date else start_date
    else:
        start = start_date if start_date is not None else today - timedelta(days=lookback_days)
    return min(start, today), today


def covered_days(committed: Iterable[tuple[date, date]]) -> set[date]:
    days: set[date] = set()
    for start, end in committed:
        days.update(start + timedelta(days=offset) for offset in range((end - start).days + 1))
    return days


def split_committed(
    start: date, end: date, committed_days: set[date], refetch_from: date | None = None
) -> tuple[list[Window], list[Window]]:
    """The days of [start, end] as runs of consecutive days to fetch, and runs that may be
    skipped: days some committed window already covers, whatever its size, except days on
    or after ``refetch_from``, which are always fetched. A committed window only partly
    in the range, or crossing ``refetch_from``, is skipped for its covered days before it
    and fetched again from there."""
    to_fetch: list[Window] = []
    skipped: list[Window] = []
    day = start
    while day <= end:
        skip = day in committed_days and (refetch_from is None or day < refetch_from)
        runs = skipped if skip else to_fetch
        if runs and runs[-1].end == day - timedelta(days=1):  # the day before was of the same kind
            runs[-1] = Window(runs[-1].start, day)
        else:
            runs.append(Window(day, day))
        day += timedelta(days=1)
    return to_fetch, skipped


def days_of(window: Window) -> list[date]:
    return [window.start + timedelta(days=offset) for offset in range(window.days)]


def skipped_windows(committed: Iterable[tuple[date, date]], skipped: list[Window]) -> int:
    """How many committed windows lie wholly within the skipped days."""
    days = {day for window in skipped for day in days_of(window)}
    return sum(1 for first, last in committed if days.issuperset(covered_days([(first, last)])))


@dataclass
class WatermarkTracker:
    """Advances through the run's days in date order as windows commit, out of order.
    Works on days, as windows are sized while the run goes. Used only from the writer thread."""

    days: list[date] = field(default_factory=list)
    done: set[date] = field(default_factory=set)
    position: int = 0

    def plan(self, to_fetch: list[Window], skipped: list[Window]) -> None:
        self.days = sorted(day for window in to_fetch + skipped for day in days_of(window))
        self.done.update(day for window in skipped for day in days_of(window))

    def mark_done(self, window: Window) -> date | None:
        """Record a committed window; returns the new watermark if it moved."""
        self.done.update(days_of(window))
        moved = False
        while self.position < len(self.days) and self.days[self.position] in self.done:
            self.position += 1
            moved = True
        return self.days[self.position - 1] if moved else None
