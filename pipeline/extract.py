"""Date windows -> verified, deduplicated pages of calls. Knows nothing of DuckDB.

Each page becomes an Arrow table as it arrives (see ``columns``): a window in
flight holds its calls in a third of the memory the parsed dicts took, which keeps
a backfill's peak memory flat when days hold thousands of calls.

A window is verified when every page reported the same ``meta.total`` and the
distinct ids fetched (valid or rejected) add up to it. Anything else means the
data moved while we paged (late-ingested calls shift offset pages), and the
window is fetched again, a bounded number of times.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Iterable

import pyarrow as pa

from pipeline.client import CallTrackingClient, Rejected
from pipeline.errors import WindowNotConvergedError
from pipeline.columns import CALL_SCHEMA, calls_to_arrow, last_row_per_id

log = logging.getLogger("callsync.extract")


@dataclass(frozen=True)
class Window:
    start: date
    end: date  # inclusive

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def __str__(self) -> str:
        return self.start.isoformat() if self.start == self.end else f"{self.start}..{self.end}"


@dataclass(frozen=True)
class CallFilters:
    number_id: str | None = None
    campaign_id: str | None = None
    outcome: str | None = None

    @property
    def scope(self) -> str:
        """'' for an unfiltered window; else the filters, e.g. 'outcome=qualified'."""
        return "&".join(f"{name}={value}" for name, value in self.__dict__.items() if value)


@dataclass(frozen=True)
class Page:
    calls: pa.Table
    rejected: list[Rejected]
    total: int
    per_page: int | None


@dataclass
class FetchedWindow:
    window: Window
    calls: pa.Table  # one row per id
    rejected: list[Rejected]
    total: int
    pages: int
    refetches: int = 0


@dataclass
class WindowFetcher:
    client: CallTrackingClient
    per_page: int = 100
    max_tries: int = 5
    filters: CallFilters = field(default_factory=CallFilters)
    end_inclusive: bool = True

    async def fetch(self, window: Window) -> FetchedWindow:
        seen: list[Page] = []
        for attempt in range(self.max_tries):
            pages = await self._fetch_pages(window)
            seen.extend(pages)
            totals = {page.total for page in pages}
            calls, rejected = deduplicate(pages)
            if len(totals) == 1 and calls.num_rows + len(rejected) == pages[0].total:
                return FetchedWindow(window, calls, rejected, pages[0].total, len(pages), attempt)
            # Late-ingested calls only shift pages forward: what one pass skipped at a page
            # boundary another pass finds. Once the union of all passes holds as many ids
            # as the newest total, the window is complete.
            calls, rejected = deduplicate(seen)
            newest_total = max(totals)
            if calls.num_rows + len(rejected) == newest_total:
                return FetchedWindow(window, calls, rejected, newest_total, len(pages), attempt + 1)
            log.info("window moved while paging, fetching again", extra={"event": "window_drift", "window": str(window)})
        raise WindowNotConvergedError(f"window {window}: data kept moving while paging ({self.max_tries} tries)")

    async def _fetch_pages(self, window: Window) -> list[Page]:
        first = await self._page(window, 1)
        page_count = pages_for(first.total, first.per_page or first.calls.num_rows)
        rest = await asyncio.gather(*(self._page(window, page) for page in range(2, page_count + 1)))
        return [first, *rest]

    async def _page(self, window: Window, page: int) -> Page:
        # With an exclusive end_date the server would miss the window's last day.
        end = window.end if self.end_inclusive else window.end + timedelta(days=1)
        listing = await self.client.list_calls(
            window.start,
            end,
            page=page,
            per_page=self.per_page,
            number_id=self.filters.number_id,
            campaign_id=self.filters.campaign_id,
            outcome=self.filters.outcome,
        )
        return Page(calls_to_arrow(listing.calls), listing.rejected, listing.meta.total, listing.meta.per_page)


def pages_for(total: int, per_page: int) -> int:
    return max(1, -(-total // max(1, per_page)))


def deduplicate(pages: Iterable[Page]) -> tuple[pa.Table, list[Rejected]]:
    """Order is not promised and pages may overlap: keep one record per id (the last seen)."""
    pages = list(pages)
    calls = last_row_per_id(pa.concat_tables([page.calls for page in pages]) if pages else CALL_SCHEMA.empty_table())
    rejected: dict[str, Rejected] = {}
    for page in pages:
        for record in page.rejected:
            rejected[record.record_id or record.raw_json] = record
    if rejected:  # a record valid on one page wins over its rejected copy on another
        for call_id in rejected.keys() & set(calls.column("id").to_pylist()):
            del rejected[call_id]
    return calls, list(rejected.values())


def split_windows(start: date, end: date, days: int) -> list[Window]:
    windows = []
    cursor = start
    while cursor <= end:
        window_end = min(end, cursor + timedelta(days=days - 1))
        windows.append(Window(cursor, window_end))
        cursor = window_end + timedelta(days=1)
    return windows
