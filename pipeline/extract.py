"""Date windows -> verified, deduplicated pages of calls. Knows nothing of DuckDB.

Pages become Arrow tables straight from their bytes (``columns.read_listings``): the
first as it arrives (``first_page``, served before other pages: its meta says how
many follow), the rest READ_TOGETHER at a time. A window's pages are started lazily,
at most ``concurrency`` in flight, so neither memory nor tasks follow what the API claims.

A window is verified when every page reported the same ``meta.total`` and the
distinct ids fetched (valid or rejected) add up to it. Anything else means the
data moved while we paged (late-ingested calls shift offset pages), and the
window is fetched again, a bounded number of times.

The listing is not trusted blindly (``ImplausibleListingError``, the window fails at once):
- a one-day window whose meta.total needs more than ``max_pages`` pages;
- a page holding more records than its meta.per_page;
- a page all of whose calls were already on other pages of the same pass, more of
  them than the total grew by (drift shifts a page by as many calls as arrived);
- a second pass that finds no call the first had not, while still short of the total.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import islice
from typing import AsyncIterator, Sequence

import pyarrow as pa

from pipeline.client import CallTrackingClient, Rejected
from pipeline.errors import ImplausibleListingError, WindowNotConvergedError
from pipeline.columns import Listings, concat_listings, last_row_per_id, read_listings
from pipeline.throttle import first_in_line

log = logging.getLogger("callsync.extract")

# Pages of a window read into Arrow in one go. It bounds the bytes a dense window holds
# (~50 KB a page) while its pages arrive; one read of 1 page costs ~0.25 ms more than its rows.
# Each read blocks the event loop, and answers that arrive meanwhile wait: the wait grows
# with the square of a read's length, so a 20-page window is read in parts, about as
# long as the one-day windows' reads were.
READ_TOGETHER = 8


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
    max_pages: int = 1000  # [sync] max_pages_per_window: more pages a day than this cannot be true
    concurrency: int = 16  # pages of one window in flight at once
    requests: int = 0  # listing pages asked for (a retried page counts once)

    async def first_page(self, window: Window) -> Listings:
        """Page 1 of ``window``, ahead of other pages in the throttle; checked before use."""
        with first_in_line():
            body = await self._page(window, 1)
        first = read_listings([body])
        meta = first.metas[0]
        if meta.total < 0 or pages_for(meta.total, page_size(first)) > self.max_pages * window.days:
            raise ImplausibleListingError(
                f"window {window}: meta.total of {meta.total:,} calls cannot be true"
                f" (more than [sync] max_pages_per_window = {self.max_pages} pages of {page_size(first)} a day)"
            )
        self._check_page_sizes(window, first)
        return first

    async def fetch(self, window: Window, first: Listings | None = None) -> FetchedWindow:
        """The verified window; ``first`` is its page 1 when already fetched."""
        passes: list[Listings] = []
        found = 0
        for attempt in range(self.max_tries):
            listings = await self._fetch_pages(window, first)
            first = None
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
            union = calls.num_rows + len(rejected)
            if union == newest_total:
                return FetchedWindow(window, calls, rejected, newest_total, len(listings.metas), attempt + 1)
            if attempt and union == found:  # calls that moved would have shown up by now
                raise ImplausibleListingError(
                    f"window {window}: meta.total says {newest_total:,} calls, but paging it again"
                    f" found none beyond the {union:,} already listed"
                )
            found = union
            log.info("window moved while paging, fetching again", extra={"event": "window_drift", "window": str(window)})
        raise WindowNotConvergedError(f"window {window}: data kept moving while paging ({self.max_tries} tries)")

    async def _fetch_pages(self, window: Window, first: Listings | None) -> Listings:
        """Page 1 first (its meta says how many follow), then the others lazily, at most
        ``concurrency`` in flight; they are kept as bytes and read READ_TOGETHER at a time,
        as one read of many pages costs far less than many reads of one."""
        first = first or await self.first_page(window)
        pages = range(2, pages_for(first.metas[0].total, page_size(first)) + 1)
        parts = [first]
        listed = _ListedIds(first)
        bodies: list[bytes] = []
        async with aclosing(self._bodies(window, pages)) as arriving:
            async for body in arriving:
                bodies.append(body)
                if len(bodies) == READ_TOGETHER or listed.pages + len(bodies) == len(pages) + 1:
                    part = read_listings(bodies)
                    bodies = []
                    self._check_page_sizes(window, part)
                    listed.add(window, part)
                    parts.append(part)
        return concat_listings(parts)

    async def _bodies(self, window: Window, pages: range) -> AsyncIterator[bytes]:
        """The pages' bodies as they arrive, starting the next page as one comes in."""
        numbers = iter(pages)
        in_flight: set[asyncio.Task[bytes]] = set()
        done: set[asyncio.Task[bytes]] = set()
        try:
            while True:
                for page in islice(numbers, self.concurrency - len(in_flight)):
                    in_flight.add(asyncio.ensure_future(self._page(window, page)))
                if not in_flight:
                    return
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for body in [task.result() for task in done]:  # the first failure raises here
                    yield body
        finally:
            for task in in_flight:
                task.cancel()
            for task in in_flight | done:  # the others' failures, once the first is raised
                task.add_done_callback(_retrieve_failure)
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    def _check_page_sizes(self, window: Window, listings: Listings) -> None:
        for meta, records in zip(listings.metas, listings.page_records):
            if meta.per_page and records > meta.per_page:
                raise ImplausibleListingError(
                    f"window {window}: page {meta.page} holds {records:,} calls, more than its meta.per_page of {meta.per_page}"
                )

    async def _page(self, window: Window, page: int) -> bytes:
        # With an exclusive end_date the server would miss the window's last day.
        end = window.end if self.end_inclusive else window.end + timedelta(days=1)
        self.requests += 1
        return await self.client.calls_page(
            window.start,
            end,
            page=page,
            per_page=self.per_page,
            number_id=self.filters.number_id,
            campaign_id=self.filters.campaign_id,
            outcome=self.filters.outcome,
        )


class _ListedIds:
    """The ids one pass has listed so far, to catch pages that repeat earlier pages whole."""

    def __init__(self, first: Listings):
        self.pages = 1
        self.first_total = first.metas[0].total
        self.newest_total = self.first_total
        self.ids: set[str] | None = None
        self._first = first

    def add(self, window: Window, part: Listings) -> None:
        if self.ids is None:
            self.ids = set(self._first.calls.column("id").to_pylist())
        self.newest_total = max(self.newest_total, *(meta.total for meta in part.metas))
        grown = self.newest_total - self.first_total
        ids = part.calls.column("id").to_pylist()
        offset = 0
        for meta, rows in zip(part.metas, part.page_calls):
            page_ids = ids[offset : offset + rows]
            offset += rows
            if rows and rows > grown and self.ids.issuperset(page_ids):
                raise ImplausibleListingError(
                    f"window {window}: page {meta.page} repeats {rows:,} calls already listed on other pages"
                )
            self.ids.update(page_ids)
        self.pages += len(part.metas)


def page_size(listings: Listings) -> int:
    """Rows a page holds, as the API says (meta.per_page), else as the first page shows."""
    return listings.metas[0].per_page or listings.calls.num_rows + len(listings.rejected) or 1


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


def _retrieve_failure(task: asyncio.Task) -> None:
    """Mark a page task's failure as seen: the window already failed with the first one."""
    if not task.cancelled():
        task.exception()
