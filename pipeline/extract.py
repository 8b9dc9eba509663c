"""Date windows -> verified, deduplicated pages of calls. Knows nothing of DuckDB.

Pages become Arrow tables straight from their bytes (``columns.read_listings``): the
first as it arrives, the rest of a window together once all are in.

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
from typing import Sequence

import pyarrow as pa

from pipeline.client import CallTrackingClient, Rejected
from pipeline.errors import WindowNotConvergedError
from pipeline.columns import Listings, concat_listings, last_row_per_id, read_listings

log = logging.getLogger("callsync.extract")

# Pages of a window read into Arrow in one go. It bounds the bytes a dense window holds
# (~50 KB a page) while its pages arrive; one read of 1 page costs ~0.25 ms more than its rows.
READ_TOGETHER = 32


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
        passes: list[Listings] = []
        for attempt in range(self.max_tries):
            listings = await self._fetch_pages(window)
            passes.append(listings)
            totals = {meta.total for meta in listings.metas}
            calls, rejected = deduplicate([listings])
            if len(totals) == 1 and calls.num_rows + len(rejected) == listings.metas[0].total:
                return FetchedWindow(window, calls, rejected, listings.metas[0].total, len(listings.metas), attempt)
            # Late-ingested calls only shift pages forward: what one pass skipped at a page
            # boundary another pass finds. Once the union of all passes holds as many ids
            # as the newest total, the window is complete.
            calls, rejected = deduplicate(passes)
            newest_total = max(totals)
            if calls.num_rows + len(rejected) == newest_total:
                return FetchedWindow(window, calls, rejected, newest_total, len(listings.metas), attempt + 1)
            log.info("window moved while paging, fetching again", extra={"event": "window_drift", "window": str(window)})
        raise WindowNotConvergedError(f"window {window}: data kept moving while paging ({self.max_tries} tries)")

    async def _fetch_pages(self, window: Window) -> Listings:
        """The first page is read as it arrives: its meta says how many follow. The others
        are kept as bytes and read READ_TOGETHER at a time once those are in, as one read
        of many pages costs far less than many reads of one."""
        first = read_listings([await self._page(window, 1)])
        meta = first.metas[0]
        pages = range(2, pages_for(meta.total, meta.per_page or first.calls.num_rows) + 1)
        parts = [pages[start : start + READ_TOGETHER] for start in range(0, len(pages), READ_TOGETHER)]
        return concat_listings([first, *await asyncio.gather(*(self._read_pages(window, part) for part in parts))])

    async def _read_pages(self, window: Window, pages: range) -> Listings:
        return read_listings(await asyncio.gather(*(self._page(window, page) for page in pages)))

    async def _page(self, window: Window, page: int) -> bytes:
        # With an exclusive end_date the server would miss the window's last day.
        end = window.end if self.end_inclusive else window.end + timedelta(days=1)
        return await self.client.calls_page(
            window.start,
            end,
            page=page,
            per_page=self.per_page,
            number_id=self.filters.number_id,
            campaign_id=self.filters.campaign_id,
            outcome=self.filters.outcome,
        )


def pages_for(total: int, per_page: int) -> int:
    return max(1, -(-total // max(1, per_page)))


def deduplicate(passes: Sequence[Listings]) -> tuple[pa.Table, list[Rejected]]:
    """Order is not promised and pages may overlap: keep one record per id (the last seen)."""
    listings = concat_listings(passes)
    calls = last_row_per_id(listings.calls)
    rejected: dict[str, Rejected] = {}
    for record in listings.rejected:
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
