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


def split_skippable(
    windows: list[Window], committed_days: set[date], refetch_from: date | None = None
) -> tuple[list[Window], list[Window]]:
    """Windows to fetch, and windows whose every day is already committed, which may be
    skipped; windows ending on or after ``refetch_from`` are always fetched."""
    to_fetch, skipped = [], []
    for window in windows:
        days = {window.start + timedelta(days=offset) for offset in range(window.days)}
        settled = refetch_from is None or window.end < refetch_from
        (skipped if settled and days <= committed_days else to_fetch).append(window)
    return to_fetch, skipped


@dataclass
class WatermarkTracker:
    """Advances through the run's windows in date order as they commit, out of order.
    Used only from the writer thread."""

    windows: list[Window] = field(default_factory=list)
    done: set[Window] = field(default_factory=set)
    position: int = 0

    def plan(self, to_fetch: list[Window], skipped: list[Window]) -> None:
        self.windows = sorted(to_fetch + skipped, key=lambda window: window.start)
        self.done.update(skipped)

    def mark_done(self, window: Window) -> date | None:
        """Record a committed window; returns the new watermark if it moved."""
        self.done.add(window)
        moved = False
        while self.position < len(self.windows) and self.windows[self.position] in self.done:
            self.position += 1
            moved = True
        return self.windows[self.position - 1].end if moved else None
