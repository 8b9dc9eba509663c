"""Windows sized by the data, against the real sandbox: planning, skipping, lookback, drift,
and the throttle serving first pages first."""

from __future__ import annotations

import asyncio
import math
from datetime import date, datetime, timedelta, timezone

import pytest

from pipeline import sync
from pipeline.sandbox import Faults, SandboxData, run_sandbox
from pipeline.throttle import Throttle, first_in_line
from tests.dbcheck import assert_same_calls, scalar, scalar_rows

PER_PAGE = 20
WINDOW_PAGES = 5  # a window of several days holds at most 100 calls here
# Both clocks, the sandbox's and callsync's: how much of today is served (and so the windows
# and their requests) would otherwise depend on the hour the tests run at.
NOW = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch):
    monkeypatch.setenv("CALLSYNC_NOW", NOW.isoformat())


def small_windows(**sync_settings) -> dict:
    return {"sync": {"per_page": PER_PAGE, "window_pages": WINDOW_PAGES, **sync_settings}}


def committed(path) -> list[tuple[date, date, int]]:
    return scalar_rows(path, "SELECT window_start, window_end, row_count FROM sync_windows ORDER BY window_start")


def listing_days(requests) -> set[date]:
    """Every day some calls listing request of the log asked for."""
    days = set()
    for record in requests:
        if record.path.endswith("/calls"):
            start, end = (date.fromisoformat(record.query[key]) for key in ("start_date", "end_date"))
            days.update(start + timedelta(days=offset) for offset in range((end - start).days + 1))
    return days


def sparse() -> SandboxData:
    return SandboxData.generate(seed=21, calls=300, days=30, now=NOW)


def dense() -> SandboxData:
    return SandboxData.generate(seed=22, calls=900, days=4, now=NOW)


def mixed() -> SandboxData:
    data = SandboxData.generate(seed=23, calls=300, days=30, now=NOW)
    data.add_calls(400, data.today - timedelta(days=12))
    return data


@pytest.mark.parametrize("shape", [sparse, dense, mixed])
async def test_windows_follow_the_density_of_the_data(shape, make_settings):
    data = shape()
    async with run_sandbox(data=data, faults=Faults()) as sandbox:
        settings = make_settings(sandbox.base_url, **small_windows())
        summary = await sync.backfill(settings, data.first_day, data.today, with_media=False)
        listing = [r for r in sandbox.requests if r.path.endswith("/calls")]
    assert summary.status == "ok", summary.failures
    assert_same_calls(settings.database.path, data)
    windows = committed(settings.database.path)
    # The windows hold every day of the range once, through yesterday (today is never recorded
    # as settled), and what they hold is what was stored.
    days = [start + timedelta(days=offset) for start, end, _ in windows for offset in range((end - start).days + 1)]
    assert sorted(days) == [data.first_day + timedelta(days=n) for n in range((data.today - data.first_day).days)]
    settled_calls = len(data.calls_between(None, data.today - timedelta(days=1)))
    assert settled_calls <= sum(rows for *_, rows in windows) <= data.calls_total
    for start, end, rows in windows:
        assert start == end or math.ceil(rows / PER_PAGE) <= WINDOW_PAGES, (start, end, rows)
    minimum = math.ceil(data.calls_total / PER_PAGE)
    assert summary.listing_requests == len(listing)
    if shape is sparse:  # ~10 calls a day: windows of about 8 days, each nearly 5 full pages
        assert all((end - start).days >= 4 for start, end, _ in windows[:-1])
        assert len(listing) <= 1.25 * minimum
    if shape is dense:  # ~225 calls a day: a window a day, as before
        assert all(start == end for start, end, _ in windows)
    if shape is mixed:  # the busy day gets a window of its own, its quiet neighbours wider ones
        busy = data.today - timedelta(days=12)
        assert (busy, busy) in {(start, end) for start, end, _ in windows}
        assert sum(1 for start, end, _ in windows if (end - start).days >= 2) >= 5
        # The range's first probe cut it by a density the busy day inflated: its quiet parts
        # came out smaller than they could be (the price of probing them all at once).
        assert len(listing) <= 1.3 * minimum


async def test_window_days_caps_the_span_and_1_pages_day_by_day(make_settings):
    data = sparse()
    async with run_sandbox(data=data, faults=Faults()) as sandbox:
        settings = make_settings(sandbox.base_url, **small_windows(window_days=3))
        await sync.backfill(settings, data.first_day, data.today, with_media=False)
        assert max((end - start).days + 1 for start, end, _ in committed(settings.database.path)) <= 3
        settings = make_settings(sandbox.base_url, **small_windows(window_days=1))
        await sync.backfill(settings, data.first_day, data.today, with_media=False, force=True)
        one_a_day = [r for r in sandbox.requests if r.path.endswith("/calls")][-30:]
    assert all(r.query["start_date"] == r.query["end_date"] for r in one_a_day)
    assert_same_calls(settings.database.path, data)


async def test_a_rerun_skips_committed_windows_of_any_size_and_fetches_only_the_days_around_them(make_settings):
    data = sparse()
    inner_start, inner_end = data.first_day + timedelta(days=10), data.first_day + timedelta(days=19)
    async with run_sandbox(data=data, faults=Faults()) as sandbox:
        settings = make_settings(sandbox.base_url, **small_windows())
        inner = await sync.backfill(settings, inner_start, inner_end, with_media=False)
        assert inner.status == "ok" and inner.windows_done >= 1
        assert any(start < end for start, end, _ in committed(settings.database.path))

        again = await sync.backfill(settings, inner_start, inner_end, with_media=False)
        assert (again.windows_done, again.windows_skipped, again.listing_requests) == (0, inner.windows_done, 0)

        # A wider range: the committed windows' days are skipped, the days around them fetched.
        seen = len(sandbox.requests)
        wider = await sync.backfill(settings, data.first_day, data.today, with_media=False)
        fetched = listing_days(sandbox.requests[seen:])
    assert wider.status == "ok" and wider.windows_skipped == inner.windows_done
    assert fetched and not fetched & {inner_start + timedelta(days=n) for n in range(10)}
    assert_same_calls(settings.database.path, data)


async def test_lookback_refetches_from_its_first_day_even_inside_a_committed_window(make_settings):
    # A backfill commits wide windows; the first sync's lookback starts inside one of them.
    # Its days before the lookback are skipped, its days from there on are fetched again.
    data = sparse()
    lookback = 4
    async with run_sandbox(data=data, faults=Faults()) as sandbox:
        settings = make_settings(
            sandbox.base_url, **small_windows(start_date=data.first_day.isoformat(), lookback_days=lookback)
        )
        await sync.backfill(settings, data.first_day, data.today, with_media=False)
        boundary = data.today - timedelta(days=lookback)
        assert any(start < boundary <= end for start, end, _ in committed(settings.database.path))

        changed = set(data.mutate_calls(5, within_days=lookback))
        seen = len(sandbox.requests)
        first_sync = await sync.sync(settings, today=data.today, with_media=False)
        fetched = listing_days(sandbox.requests[seen:])
        assert fetched == {boundary + timedelta(days=n) for n in range(lookback + 1)}
        assert first_sync.calls_updated == len(changed)
        yesterday = data.today - timedelta(days=1)
        assert scalar(settings.database.path, "SELECT value FROM sync_state WHERE key = 'watermark'") == yesterday.isoformat()

        # The next sync reads the lookback days before the watermark again, through today.
        data.add_calls(3)
        seen = len(sandbox.requests)
        later = await sync.sync(settings, today=data.today, with_media=False)
        assert listing_days(sandbox.requests[seen:]) == {yesterday - timedelta(days=n) for n in range(-1, lookback + 1)}
    assert later.calls_new == 3
    assert_same_calls(settings.database.path, data)


async def test_drift_over_variable_windows_loses_nothing_and_costs_a_bounded_refetch(make_settings):
    data = SandboxData.generate(seed=24, calls=600, days=12, now=NOW)
    async with run_sandbox(data=data, faults=Faults(drift_rate=0.1)) as sandbox:
        settings = make_settings(sandbox.base_url, **small_windows(max_window_tries=10))
        summary = await sync.backfill(settings, data.first_day, data.today, with_media=False)
        sandbox.faults.drift_rate = 0
        # The same backfill of the same calls (the late ones too) with nothing drifting.
        steady = make_settings(sandbox.base_url, database={"path": "steady.duckdb"}, **small_windows())
        without_drift = await sync.backfill(steady, data.first_day, data.today, with_media=False)
    assert summary.status == "ok" and summary.refetches > 0
    assert_same_calls(settings.database.path, data)
    windows = committed(settings.database.path)
    assert sum(rows for *_, rows in windows) <= data.calls_total
    # A refetch pages its window again: at most the window's own pages, not the range's.
    biggest = max(math.ceil(rows / PER_PAGE) for *_, rows in windows)
    assert summary.listing_requests <= without_drift.listing_requests + summary.refetches * biggest


async def test_the_throttle_serves_first_pages_before_pages_waiting_longer():
    throttle = Throttle(max_concurrency=1)
    served: list[str] = []
    release = asyncio.Event()

    async def request(name: str, first: bool = False) -> None:
        async def take() -> None:
            async with throttle.slot():
                served.append(name)
                if name == "holder":
                    await release.wait()

        if first:
            with first_in_line():
                await take()
        else:
            await take()

    holder = asyncio.create_task(request("holder"))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(request(f"bulk {n}")) for n in range(3)]
    waiting.append(asyncio.create_task(request("first page", first=True)))
    waiting.append(asyncio.create_task(request("bulk 3")))
    for _ in range(3):
        await asyncio.sleep(0)  # every waiter is queued
    release.set()
    await asyncio.gather(holder, *waiting)
    assert served == ["holder", "first page", "bulk 0", "bulk 1", "bulk 2", "bulk 3"]


async def test_a_slot_handed_to_a_cancelled_waiter_passes_on():
    throttle = Throttle(max_concurrency=1)
    release, served = asyncio.Event(), []
    waiters: list[asyncio.Task] = []

    async def hold() -> None:
        async with throttle.slot():
            await release.wait()
        waiters[0].cancel()  # handed the slot a moment ago, cancelled before it runs

    async def wait_for_slot(name: str) -> None:
        async with throttle.slot():
            served.append(name)

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiters.extend(asyncio.create_task(wait_for_slot(name)) for name in ("doomed", "next"))
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(waiters[1], timeout=10)
    assert served == ["next"] and waiters[0].cancelled()
    await holder
