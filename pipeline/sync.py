"""The main flow, top to bottom: lock, migrate, refresh dimensions, windows of calls, media.

``sync`` is incremental (for cron); ``backfill`` is a one-off over a date range
that skips windows a previous attempt already committed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import partial
from typing import Any, Awaitable, Callable, Iterator

import duckdb

from pipeline import clock, columns, erasure, load, state
from pipeline.bodies import MB
from pipeline.client import CallTrackingClient, ClientOptions
from pipeline.config import ApiSettings, Settings
from pipeline.errors import (
    ApiError,
    AuthError,
    BodyTooLargeError,
    BudgetExhausted,
    CallsyncError,
    ImplausibleListingError,
    MalformedListingError,
    RunInterrupted,
    RunStopped,
    WindowNotConvergedError,
)
from pipeline.interrupt import StopSignals
from pipeline.extract import CallFilters, FetchedWindow, Window, WindowFetcher, page_size
from pipeline.load import WindowBatch, Writer
from pipeline.store import Store
from pipeline.windowing import WindowPlanner

log = logging.getLogger("callsync.sync")

class Progress:
    """What a run tells whoever watches it (the CLI's progress bar). Does nothing by default."""

    def watch(self, summary: RunSummary, stats: Any) -> None:
        """The run's counts (a RunSummary, filled in as it goes) and its request stats."""

    def plan(self, days: int) -> None:
        """The run will fetch this many days (windows are sized as it goes)."""

    def window_done(self, window: Window) -> None:
        """A window (``window.days`` days) is committed."""

    def media_job_done(self) -> None:
        """A recording or transcript job was attempted (done, not ready, or failed)."""

    def media_jobs_due(self, jobs: int) -> None:
        """The media part of the run will attempt this many jobs."""


NO_PROGRESS = Progress()


@dataclass(slots=True)  # slots: a misspelt or unknown field fails loudly, never vanishes from the record
class RunSummary:
    run_id: str
    command: str
    status: str = "running"
    windows_done: int = 0
    windows_skipped: int = 0
    windows_failed: int = 0
    calls_new: int = 0
    calls_updated: int = 0
    calls_unchanged: int = 0
    rejected: int = 0
    refetches: int = 0
    requests: int = 0
    listing_requests: int = 0  # pages of the calls listing asked for
    retries: int = 0
    rate_limited: int = 0
    elapsed_s: float = 0.0
    media: dict[str, Any] = field(default_factory=dict)
    calls_deleted: int = 0  # no longer listed upstream (see pipeline.erasure)
    calls_restored: int = 0
    removed: dict[str, int] = field(default_factory=dict)  # by retention and deletions: rows and files
    failures: list[str] = field(default_factory=list)
    error: str | None = None
    error_exit_code: int | None = None  # of the error that aborted the run

    @property
    def exit_code(self) -> int:
        if self.status in ("aborted", "interrupted") and self.error_exit_code is not None:
            return self.error_exit_code
        return 1 if self.status == "failed" else 0

    @property
    def listing_requests_per_100_calls(self) -> float | None:
        listed = self.calls_new + self.calls_updated + self.calls_unchanged + self.rejected
        return 100 * self.listing_requests / listed if listed else None

    def add_counts(self, counts: load.CallCounts) -> None:
        self.calls_new += counts.new
        self.calls_updated += counts.updated
        self.calls_unchanged += counts.unchanged
        self.rejected += counts.rejected
        self.calls_deleted += counts.deleted
        self.calls_restored += counts.restored

    @property
    def outcome(self) -> str:
        return "paused: request budget" if self.status == "paused" else self.status

    def line(self) -> str:
        if self.command == "media":
            text = f"media {self.outcome}: {self.requests} requests ({self.retries} retries, {self.rate_limited} 429s)"
            return text + self._media_text() + self._forgotten_text() + f", {self.elapsed_s:.1f}s"
        text = (
            f"{self.command} {self.outcome}: {self.windows_done} windows"
            f" ({self.windows_skipped} skipped, {self.windows_failed} failed, {self.refetches} refetched),"
            f" calls {self.calls_new} new / {self.calls_updated} updated / {self.calls_unchanged} unchanged,"
            f" {self.rejected} rejected, {self.requests} requests ({self.retries} retries, {self.rate_limited} 429s)"
        )
        per_100 = self.listing_requests_per_100_calls
        if per_100 is not None:
            text += f", {per_100:.2f} listing requests per 100 calls"
        return text + self._media_text() + self._forgotten_text() + f", {self.elapsed_s:.1f}s"

    def _forgotten_text(self) -> str:
        """Only when something was deleted, restored or removed: the usual line stays as it was."""
        parts = []
        if self.calls_deleted or self.calls_restored:
            parts.append(f"{self.calls_deleted} deleted upstream / {self.calls_restored} restored")
        removed = {name: count for name, count in self.removed.items() if count}
        if removed:
            parts.append("removed " + " / ".join(f"{count} {name.replace('_', ' ')}" for name, count in removed.items()))
        return "".join(f", {part}" for part in parts)

    def _media_text(self) -> str:
        if not self.media:
            return ""
        media = self.media
        return (
            f", media {media.get('downloaded', 0)} downloaded / {media.get('pending', 0)} pending"
            f" / {media.get('failed', 0)} failed / {media.get('unavailable', 0)} unavailable"
            f" ({_megabytes(media.get('bytes', 0))})"
        )

    def record(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if key not in ("run_id", "command", "status")}


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def utc_today() -> date:
    return clock.today()


@dataclass(frozen=True)
class RequestBudget:
    """How many requests this run may send (None: no limit), and which setting says so."""

    limit: int | None = None
    note: str = ""


def request_budget(api: ApiSettings, used_last_hour: int) -> RequestBudget:
    """The tighter of ``max_requests_per_run`` and what ``max_requests_per_hour`` leaves
    after the requests of runs that finished in the past hour."""
    budgets = []
    if api.max_requests_per_run is not None:
        budgets.append(RequestBudget(api.max_requests_per_run, "max_requests_per_run"))
    if api.max_requests_per_hour is not None:
        left = max(0, api.max_requests_per_hour - used_last_hour)
        note = f"max_requests_per_hour = {api.max_requests_per_hour}, runs in the past hour sent {used_last_hour}"
        budgets.append(RequestBudget(left, note))
    return min(budgets, key=lambda budget: budget.limit) if budgets else RequestBudget()


async def _budget_for_run(writer: Writer, api: ApiSettings) -> RequestBudget:
    if api.max_requests_per_hour is None:
        return request_budget(api, 0)
    since = clock.now() - timedelta(hours=1)
    return request_budget(api, await writer.run(partial(load.requests_since, since=since)))


def client_for(settings: Settings) -> CallTrackingClient:
    api = settings.api
    options = ClientOptions(
        timeout_s=api.timeout_s,
        max_concurrency=api.max_concurrency,
        requests_per_second=api.requests_per_second,
        max_retries=api.max_retries,
        backoff_initial_s=api.backoff_initial_s,
        backoff_max_s=api.backoff_max_s,
        max_requests_per_run=api.max_requests_per_run,
        allow_foreign_hosts=settings.media.allow_foreign_hosts,
        max_page_bytes=int(api.max_page_mb * MB),
        max_transcript_bytes=int(settings.media.max_transcript_mb * MB),
        max_recording_bytes=int(settings.media.max_recording_mb * MB),
        allow_private_addresses=settings.media.allow_private_addresses,
        give_up_after_s=api.give_up_after_s,
    )
    return CallTrackingClient(api.base_url, settings.require_token(), options)


async def sync(
    settings: Settings,
    *,
    today: date | None = None,
    with_media: bool = True,
    progress: Progress = NO_PROGRESS,
) -> RunSummary:
    """Incremental: from (watermark - lookback_days), or start_date on the first run, through today."""
    today = today or utc_today()

    def plan(conn: duckdb.DuckDBPyConnection) -> RunPlan:
        watermark = load.get_state(conn, state.WATERMARK_KEY)
        start, end = state.sync_range(
            today,
            settings.sync.start_date,
            settings.sync.lookback_days,
            date.fromisoformat(watermark) if watermark else None,
        )
        if watermark:
            return RunPlan([Window(start, end)])
        # A first sync (or one resuming a first sync that crashed) need not fetch again what a
        # backfill or the crashed run committed, except the recent days it always re-reads.
        return _plan_around_committed(
            conn, start, end, [""], refetch_from=today - timedelta(days=settings.sync.lookback_days)
        )

    return await _run(
        settings,
        "sync",
        {"today": today},
        plan,
        CallFilters(),
        track_watermark=True,
        with_media=with_media,
        progress=progress,
    )


async def backfill(
    settings: Settings,
    start: date,
    end: date,
    *,
    filters: CallFilters = CallFilters(),
    force: bool = False,
    with_media: bool = True,
    progress: Progress = NO_PROGRESS,
) -> RunSummary:
    """One-off over [start, end]; skips windows already committed unless ``force``. An end
    after today is capped to today: later days have no calls yet, and ``sync`` fetches them."""
    end = _capped_to_today(end)

    def plan(conn: duckdb.DuckDBPyConnection) -> RunPlan:
        if force:
            return RunPlan([Window(start, end)])
        # An unfiltered window also covers every filtered backfill of the same days.
        return _plan_around_committed(conn, start, end, sorted({"", filters.scope}))

    args = {"start": start, "end": end, "force": force, **filters.__dict__}
    return await _run(
        settings,
        "backfill",
        args,
        plan,
        filters,
        track_watermark=False,
        with_media=with_media,
        progress=progress,
    )


def _capped_to_today(end: date) -> date:
    today = utc_today()
    if end > today:
        log.warning(
            "backfill end %s is after today (%s, UTC): backfilling through today; sync fetches later days",
            end, today, extra={"event": "backfill_end_capped", "end": str(end), "today": str(today)},
        )
        return today
    return end


@dataclass(frozen=True)
class RunPlan:
    """The days a run fetches and the days it skips, as runs of consecutive days;
    windows are cut from ``ranges`` as the run goes (pipeline.windowing)."""

    ranges: list[Window]
    skipped: list[Window] = field(default_factory=list)
    windows_skipped: int = 0  # committed windows within the skipped days

    @property
    def days(self) -> int:
        return sum(window.days for window in self.ranges)


def _plan_around_committed(
    conn: duckdb.DuckDBPyConnection, start: date, end: date, scopes: list[str], refetch_from: date | None = None
) -> RunPlan:
    committed = load.committed_windows(conn, scopes)
    ranges, skipped = state.split_committed(start, end, state.covered_days(committed), refetch_from)
    return RunPlan(ranges, skipped, state.skipped_windows(committed, skipped))


async def _run(
    settings: Settings,
    command: str,
    args: dict[str, Any],
    plan: Callable[[duckdb.DuckDBPyConnection], RunPlan],
    filters: CallFilters,
    *,
    track_watermark: bool,
    with_media: bool,
    progress: Progress,
) -> RunSummary:
    tracker = state.WatermarkTracker() if track_watermark else None
    after_windows = partial(_advance_watermark, tracker=tracker) if tracker else None

    async def work(client: CallTrackingClient, writer: Writer, summary: RunSummary) -> None:
        planned = erasure.unexpired(await writer.run(plan), settings.sync.keep_days)
        summary.windows_skipped = planned.windows_skipped
        progress.watch(summary, client.stats)
        progress.plan(planned.days)
        await refresh_dimensions(client, writer, summary)
        if tracker is not None:
            tracker.plan(planned.ranges, planned.skipped)
        loader = WindowLoader(client, writer, settings, filters, summary, progress)
        await loader.load(planned.ranges)
        if with_media:
            await fetch_media(client, writer, settings, summary, progress=progress)

    return await _recorded_run(settings, command, args, work, after_windows=after_windows)


async def media(
    settings: Settings, *, verify: bool = False, ignore_backoff: bool = False, progress: Progress = NO_PROGRESS
) -> RunSummary:
    """`callsync media`: only recordings and transcripts, as a run of its own (lock, runs row)."""

    async def work(client: CallTrackingClient, writer: Writer, summary: RunSummary) -> None:
        progress.watch(summary, client.stats)
        await fetch_media(
            client, writer, settings, summary, verify=verify, ignore_backoff=ignore_backoff, progress=progress
        )

    args = {"verify": verify, "ignore_backoff": ignore_backoff}
    return await _recorded_run(settings, "media", args, work)


async def _recorded_run(
    settings: Settings,
    command: str,
    args: dict[str, Any],
    work: Callable[[CallTrackingClient, Writer, RunSummary], Awaitable[None]],
    *,
    after_windows: Callable[[duckdb.DuckDBPyConnection, Any], None] | None = None,
    tidy_data: bool = True,
) -> RunSummary:
    """The frame of every run: the lock, migrations, a row in `runs`, the client, the outcome.
    ``tidy_data``: apply retention and remove what was deleted (not on a dry run).
    The writer publishes the snapshot when it closes, whatever the outcome."""
    client = client_for(settings)
    summary = RunSummary(new_run_id(), command)
    started = time.monotonic()
    store = settings.database.store()
    rewrite = upkeep = False
    with store.lock(), _kept_error_of(summary):
        writer = Writer(
            store,
            summary.run_id,
            after_windows=after_windows,
            memory_limit=settings.database.memory_limit,
            publish_interval_s=settings.database.publish_interval_s,
        )
        async with writer:
            await writer.run(load.apply_migrations)
            await writer.run(partial(load.run_sql, name="mark_interrupted_runs"))  # we hold the lock: they died
            budget = await _budget_for_run(writer, settings.api)
            client.throttle.set_budget(budget.limit, budget.note)
            await writer.run(partial(load.start_run, run_id=summary.run_id, command=command, args=args))
            try:
                if tidy_data:
                    await tidy(writer, settings, summary)
                async with client, StopSignals(client.breaker.stop, log.warning).installed():
                    await work(client, writer, summary)
                if tidy_data:
                    await tidy(writer, settings, summary)
                summary.status = "failed" if summary.windows_failed or summary.rejected or summary.failures else "ok"
            except RunInterrupted as exc:
                summary.status, summary.error, summary.error_exit_code = "interrupted", str(exc), exc.exit_code
            except BudgetExhausted as exc:
                summary.status, summary.error = "paused", f"paused: request budget ({exc}); the next run continues"
            except CallsyncError as exc:
                summary.status, summary.error, summary.error_exit_code = "aborted", str(exc), exc.exit_code
            finally:
                _take_request_stats(summary, client)
                summary.elapsed_s = time.monotonic() - started
                await _record_finish(writer, summary)
                rewrite = await _asked(writer, erasure.rewrite_due)
                upkeep = await _asked(writer, store.upkeep_due)
        if rewrite:  # the writer closed the working database: under the lock still
            await _rewrite(store)
        if upkeep:
            await _after_run(store)
    return summary


async def _asked(writer: Writer, question: Callable[[duckdb.DuckDBPyConnection], bool]) -> bool:
    """Whether work is due after the run (a rewrite, the store's upkeep), asked on its connection."""
    try:
        return await writer.run(question)
    except CallsyncError:  # the database itself failed: the run's error already says so
        return False


async def _after_run(store: Store) -> None:
    """The store's upkeep (a lake compacts past a number of files); what fails is logged."""
    try:
        done = await asyncio.to_thread(store.after_run)
    except CallsyncError as exc:  # the run's data is committed; `callsync compact` can do it later
        log.error("upkeep after the run failed: %s", exc)
        return
    if done:
        log.info("compacted %s: %s", store.path, done, extra={"event": "compacted"})


async def _rewrite(store: Store) -> None:
    """Removed personal data leaves the files' freed blocks at the latest a day later (see erasure)."""
    try:
        await asyncio.to_thread(erasure.rewrite_database, store)
    except CallsyncError as exc:  # the run's data is committed; the next run tries again
        log.error("could not rewrite the database after removing data: %s", exc)


async def tidy(writer: Writer, settings: Settings, summary: RunSummary) -> None:
    """Retention, and the media of calls deleted upstream (see pipeline.erasure), counted in the summary."""
    removed = await writer.run(partial(erasure.tidy, settings=settings, run_id=summary.run_id))
    for name, count in {**removed.as_summary(), "files": removed.files}.items():
        summary.removed[name] = summary.removed.get(name, 0) + count


@contextmanager
def _kept_error_of(summary: RunSummary) -> Iterator[None]:
    """The publish when the writer closes may fail too (no space, no memory): after a run
    that failed already, the run's own error is the one to show, and this one is logged."""
    try:
        yield
    except CallsyncError as exc:
        if summary.error is None:
            raise
        log.error("%s", exc)


async def _record_finish(writer: Writer, summary: RunSummary) -> None:
    status = "failed" if summary.status == "aborted" else summary.status
    try:
        await writer.run(
            partial(load.finish_run, run_id=summary.run_id, status=status, fields=summary.record(), error=_run_error(summary))
        )
    except CallsyncError as exc:  # the database itself failed: the run's error already says so
        if str(exc) != summary.error:
            log.error("could not record the run's outcome: %s", exc)


def _run_error(summary: RunSummary) -> str | None:
    """What `runs.error` says: the error that stopped the run, else why it failed (status
    shows it beside the run)."""
    if summary.error is not None:
        return summary.error
    reasons = list(summary.failures)
    if summary.rejected:
        reasons.append(f"{summary.rejected} rejected records (see rejected_records)")
    if not reasons:
        return None
    return reasons[0] + (f" (and {len(reasons) - 1} more failures: see the log)" if len(reasons) > 1 else "")


def _take_request_stats(summary: RunSummary, client: CallTrackingClient) -> None:
    summary.requests = client.stats.requests
    summary.retries = client.stats.retries
    summary.rate_limited = client.stats.rate_limited


async def refresh_dimensions(client: CallTrackingClient, writer: Writer, summary: RunSummary) -> None:
    """Tracking numbers and flows: a full refresh each run; vanished rows are marked deleted.
    Each stands alone: a broken numbers listing does not keep the flows from being stored."""
    await asyncio.gather(
        _refresh_dimension(writer, summary, "tracking numbers", client.all_numbers, "refresh_numbers",
                           columns.numbers_to_arrow),
        _refresh_dimension(writer, summary, "flows", client.list_flows, "refresh_flows", columns.flows_to_arrow),
    )


async def _refresh_dimension(
    writer: Writer, summary: RunSummary, what: str, fetch: Callable[[], Awaitable[list]], statement: str,
    to_arrow: Callable[[list], Any],
) -> None:
    try:
        rows = await fetch()
    except (AuthError, BudgetExhausted):
        raise
    except ApiError as exc:
        summary.failures.append(f"{what}: {exc}")
        log.error("could not refresh %s: %s", what, exc)
        return
    await writer.run(partial(load.refresh_dimension, statement=statement, rows=to_arrow(rows)))


class WindowLoader:
    """Cuts the ranges into windows (pipeline.windowing), fetches windows concurrently
    (bounded by the client's limits) and hands each verified window to the writer.
    Memory is bounded by the windows in flight plus the writer's pending rows, not by
    the size of the range."""

    def __init__(
        self,
        client: CallTrackingClient,
        writer: Writer,
        settings: Settings,
        filters: CallFilters,
        summary: RunSummary,
        progress: Progress,
    ):
        self.fetcher = WindowFetcher(
            client,
            per_page=settings.sync.per_page,
            max_tries=settings.sync.max_window_tries,
            filters=filters,
            end_inclusive=settings.sync.end_date_inclusive,
            max_pages=settings.sync.max_pages_per_window,
            concurrency=client.options.max_concurrency,
        )
        self.max_days = settings.sync.window_days
        self.window_pages = settings.sync.window_pages
        self.writer = writer
        self.scope = filters.scope
        self.summary = summary
        self.progress = progress
        # Half as many windows in flight as requests: a window reads several pages at a
        # time, so the request slots stay full, and a window held while the writer is busy
        # is Arrow memory (a 1M-call backfill peaked 8-9 MB lower, as fast).
        self.workers = max(1, (client.options.max_concurrency + 1) // 2)
        self._commits: list[asyncio.Future] = []

    async def load(self, ranges: list[Window]) -> None:
        planner = WindowPlanner(
            ranges,
            max_days=self.max_days,
            window_pages=self.window_pages,
            per_page=self.fetcher.per_page,
            requests_left=self.fetcher.client.throttle.requests_left,
        )
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self.workers if ranges else 0):
                    group.create_task(self._work(planner))
        except* CallsyncError as errors:
            await self._drain()
            raise _first_error(errors) from None
        finally:
            self.summary.listing_requests += self.fetcher.requests
        await self._drain()

    async def _drain(self) -> None:
        """Wait until every handed-over window is committed (or has failed)."""
        if self._commits:
            self.writer.flush()
            await asyncio.gather(*self._commits, return_exceptions=True)
        self.writer.raise_failure()

    async def _work(self, planner: WindowPlanner) -> None:
        while (window := await planner.next()) is not None:
            listed_on = clock.today()
            try:
                fetched = await self._fetch(planner, window)
            finally:
                planner.done(window)
            if fetched is not None:
                await self._hand_over(fetched, listed_on)

    async def _fetch(self, planner: WindowPlanner, window: Window) -> FetchedWindow | None:
        """The verified window, or None when the range was cut (its parts are queued) or failed."""
        try:
            first = await self.fetcher.first_page(window)
            if not planner.fits(window, first.metas[0].total, page_size(first)):
                return None
            return await self.fetcher.fetch(window, first)
        except (AuthError, BudgetExhausted, RunStopped):
            raise
        except (ImplausibleListingError, BodyTooLargeError, MalformedListingError) as exc:
            if window.days > 1:  # pin it down to the day that lies; its neighbours go on
                log.info("%s; trying each half", exc, extra={"event": "window_halved", "window": str(window)})
                planner.halve(window)
                return None
            self._failed(window, exc)
        except (ApiError, WindowNotConvergedError) as exc:
            self._failed(window, exc)
        except Exception as exc:  # noqa: BLE001  an answer nobody foresaw fails its window, not the run
            log.debug("window %s: unexpected error", window, exc_info=True)
            self._failed(window, ApiError(f"unexpected error: {type(exc).__name__}: {str(exc)[:200]}"))
        return None

    def _failed(self, window: Window, exc: Exception) -> None:
        self.summary.windows_failed += 1
        message = str(exc)
        self.summary.failures.append(message if message.startswith(f"window {window}:") else f"window {window}: {message}")
        log.error("window %s failed: %s", window, exc, extra={"event": "window_failed", "window": str(window)})

    async def _hand_over(self, fetched: FetchedWindow, listed_on: date) -> None:
        window = fetched.window
        batch = WindowBatch(
            self.scope,
            window.start,
            window.end,
            fetched.calls,
            columns.rejected_to_arrow(fetched.rejected),
            listed_on,
        )
        self.summary.refetches += fetched.refetches
        future = await self.writer.submit_window(batch)
        future.add_done_callback(partial(self._committed, window))
        self._commits.append(future)

    def _committed(self, window: Window, future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            error = "cancelled" if future.cancelled() else future.exception()
            self.summary.windows_failed += 1
            self.summary.failures.append(f"window {window}: {error}")
            return
        self.summary.add_counts(future.result())
        self.summary.windows_done += 1
        self.progress.window_done(window)


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The first error of a task group's, which may hold the groups of task groups inside it."""
    first = group.exceptions[0]
    return _first_error(first) if isinstance(first, BaseExceptionGroup) else first


def _advance_watermark(
    conn: duckdb.DuckDBPyConnection, batches: list[WindowBatch], tracker: state.WatermarkTracker
) -> None:
    """Runs in the writer thread, inside the windows' transaction: the watermark moves
    only once every window before it is committed, and never past the day before the
    listings began (the last day that can be fully synced)."""
    watermark = None
    for batch in batches:
        watermark = tracker.mark_done(Window(batch.start, batch.end)) or watermark
    if watermark is not None:
        watermark = min(watermark, load.last_settled_day(batches))
        load.set_state(conn, state.WATERMARK_KEY, watermark.isoformat())


async def fetch_media(
    client: CallTrackingClient,
    writer: Writer,
    settings: Settings,
    summary: RunSummary,
    *,
    verify: bool = False,
    ignore_backoff: bool = False,
    progress: Progress = NO_PROGRESS,
) -> None:
    """Recordings and transcripts of the calls we hold (see pipeline.media). The counts
    are filled in as the run goes, so a paused or aborted run still reports them."""
    from pipeline.media import fetch_pending

    summary.media = {}
    await fetch_pending(
        client, writer, settings, run_id=summary.run_id, verify=verify, ignore_backoff=ignore_backoff,
        counts=summary.media, on_job_done=progress.media_job_done, on_jobs_due=progress.media_jobs_due,
    )
    if summary.media.get("failed"):
        summary.failures.append(f"media: {summary.media['failed']} downloads failed")


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


