"""`callsync verify`: compare the database with the API over a range, at the lowest cost, and mend.

1. The days are grouped into windows by the calls held for them (free: a local count):
   consecutive days that together hold at most FILL x per_page calls make one window, a
   denser day is a window of its own (at most ``[sync] window_days`` days a window).
2. Page 1 of every window (one request each). It carries the window's total, and when the
   window fits on one page (as most do, by 1.) it is the whole listing, compared id by id
   and field by field. A window whose total differs from the calls held for its days is
   listed in full; one whose total matches and that does not fit on a page is taken as
   matching (reading its ids would be a full listing), except with ``--full``, which
   lists every window.
3. Every complete listing got (from page 1 or in full) is committed like a sync's window:
   missing calls are added, changed ones updated, calls no longer listed moved to
   ``deleted_calls``, calls listed again restored (see pipeline.erasure). With
   ``--dry-run`` the same commit is rolled back, so the counts say what it would change.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial

import duckdb
from pipeline import clock, columns, erasure, load, sync
from pipeline.client import CallTrackingClient
from pipeline.config import Settings
from pipeline.errors import ApiError, AuthError, BudgetExhausted, UsageError, WindowNotConvergedError
from pipeline.extract import FetchedWindow, Window, WindowFetcher, deduplicate
from pipeline.load import WindowBatch, Writer

log = logging.getLogger("callsync.verify")

# A window of several days holds at most this share of a page, so that page 1 is likely
# the whole window even if a few calls came in upstream.
FILL = 0.8


@dataclass
class VerifyReport:
    """Beside the run summary: how each window was checked, and what differed."""

    windows: int = 0
    whole_on_first_page: int = 0
    listed_in_full: int = 0
    matching_totals: int = 0
    missing: int = 0
    changed: int = 0
    deleted: int = 0
    restored: int = 0
    dry_run: bool = False

    def line(self) -> str:
        verb = "would be" if self.dry_run else "were"
        return (
            f"verify: {self.windows} windows checked by their first page ({self.whole_on_first_page} whole on it),"
            f" {self.listed_in_full} listed in full,"
            f" {self.matching_totals} matched by their totals; {self.missing} missing, {self.changed} changed,"
            f" {self.deleted} deleted upstream, {self.restored} restored {verb} mended"
            + (" (dry run: nothing changed)" if self.dry_run else "")
        )


def verify_range(settings: Settings, start: date | None, end: date | None, committed_from: date | None) -> tuple[date, date]:
    """The days asked for, through today at most, and none older than [sync] keep_days keeps
    (the run's tidy would remove them again): then start may come after end, nothing to do."""
    today = sync.utc_today()
    end = min(end or today, today)
    start = start or settings.sync.start_date or committed_from
    if start is None:
        raise UsageError("nothing to verify yet: give --start, or set [sync] start_date, or run a sync first")
    if end < start:
        raise UsageError(f"--end {end} is before --start {start}")
    if settings.sync.keep_days is not None:
        start = max(start, erasure.first_kept_day(settings.sync.keep_days))
    return start, end


async def verify(
    settings: Settings, start: date | None = None, end: date | None = None, *, dry_run: bool = False,
    full: bool = False, progress: sync.Progress = sync.NO_PROGRESS,
) -> tuple[sync.RunSummary, VerifyReport]:
    """``full``: list every window in full, never taking a window as matching by its total
    (a call missing here and another extra, or one deleted upstream and one arrived while a
    window was paged, leave the counts equal)."""
    report = VerifyReport(dry_run=dry_run)

    async def work(client: CallTrackingClient, writer: Writer, summary: sync.RunSummary) -> None:
        listed_on = clock.today()
        first, last = verify_range(settings, start, end, await writer.run(_first_committed_day))
        held = await writer.run(partial(_held_per_day, start=first, end=last))
        windows = verify_windows(first, last, held, settings.sync.per_page, settings.sync.window_days)
        report.windows = len(windows)
        progress.plan(len(windows))
        fetcher = WindowFetcher(
            client,
            per_page=settings.sync.per_page,
            max_tries=settings.sync.max_window_tries,
            end_inclusive=settings.sync.end_date_inclusive,
            max_pages=settings.sync.max_pages_per_window,
            concurrency=client.options.max_concurrency,
        )
        listings = await _complete_listings(fetcher, windows, held if not full else None, summary, report)
        summary.windows_skipped = report.matching_totals
        await _mend(writer, listings, listed_on, summary, report, dry_run=dry_run)
        for listing in listings:
            progress.window_done(listing.window)

    command = "verify --dry-run" if dry_run else "verify"
    args = {"start": start, "end": end, "dry_run": dry_run, "full": full}
    summary = await sync._recorded_run(settings, command, args, work, tidy_data=not dry_run)
    return summary, report


def _first_committed_day(conn: duckdb.DuckDBPyConnection) -> date | None:
    days = [window_start for window_start, _ in load.committed_windows(conn, [""])]
    return min(days) if days else None


def _held_per_day(conn: duckdb.DuckDBPyConnection, start: date, end: date) -> dict[date, int]:
    low, _ = erasure.listed_range(start, start)
    _, high = erasure.listed_range(end, end)
    return dict(load.run_sql(conn, "held_per_day", low=low, high=high).fetchall())


def verify_windows(start: date, end: date, held: dict[date, int], per_page: int, max_days: int) -> list[Window]:
    """[start, end] as windows of consecutive days holding at most FILL x per_page calls
    together (a denser day alone), at most max_days days each."""
    windows = []
    day = start
    while day <= end:
        first, calls = day, held.get(day, 0)
        day += timedelta(days=1)
        while day <= end and (day - first).days < max_days and calls + held.get(day, 0) <= FILL * per_page:
            calls += held.get(day, 0)
            day += timedelta(days=1)
        windows.append(Window(first, day - timedelta(days=1)))
    return windows


async def _complete_listings(
    fetcher: WindowFetcher, windows: list[Window], held: dict[date, int] | None, summary: sync.RunSummary,
    report: VerifyReport,
) -> list[FetchedWindow]:
    """Page 1 of each window; then the full listing of the windows whose totals differ from
    ``held`` (of every window that page 1 does not hold whole, with ``held`` None).
    Bounded by the client's concurrency, as the sync's windows are."""
    listings: list[FetchedWindow] = []
    queue = list(reversed(windows))

    async def check_one(window: Window) -> None:
        first = await fetcher.first_page(window)
        total = first.metas[0].total
        calls, rejected = deduplicate([first])
        if calls.num_rows + len(rejected) == total:
            listings.append(FetchedWindow(window, calls, rejected, total, 1))
            report.whole_on_first_page += 1
        elif held is None or total != _held_in(window, held):
            listings.append(await fetcher.fetch(window, first))
            report.listed_in_full += 1
        else:
            report.matching_totals += 1

    async def worker() -> None:
        while queue:
            window = queue.pop()
            try:
                await check_one(window)
            except (AuthError, BudgetExhausted):
                raise
            except (ApiError, WindowNotConvergedError) as exc:
                summary.windows_failed += 1
                summary.failures.append(f"window {window}: {exc}")
                log.error("window %s failed: %s", window, exc, extra={"event": "window_failed", "window": str(window)})

    async with asyncio.TaskGroup() as group:
        for _ in range(min(fetcher.client.options.max_concurrency, len(windows))):
            group.create_task(worker())
    return sorted(listings, key=lambda listing: listing.window.start)


def _held_in(window: Window, held: dict[date, int]) -> int:
    return sum(held.get(window.start + timedelta(days=offset), 0) for offset in range(window.days))


async def _mend(
    writer: Writer, listings: list[FetchedWindow], listed_on: date, summary: sync.RunSummary, report: VerifyReport,
    *, dry_run: bool,
) -> None:
    batches = [
        WindowBatch(
            "", listing.window.start, listing.window.end, listing.calls, columns.rejected_to_arrow(listing.rejected),
            listed_on,
        )
        for listing in listings
    ]
    if not batches:  # every window matched by its total, or failed
        counts = []
    elif dry_run:
        counts = await writer.run(partial(load.preview_windows, batches=batches, run_id=summary.run_id))
    else:
        futures = [await writer.submit_window(batch) for batch in batches]
        writer.flush()
        counts = await asyncio.gather(*futures)
    for each in counts:
        summary.add_counts(each)
    summary.windows_done = len(batches)
    report.missing = summary.calls_new
    report.changed = summary.calls_updated
    report.deleted = summary.calls_deleted
    report.restored = summary.calls_restored
