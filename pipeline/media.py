"""Recordings and transcripts: jobs, streaming downloads, atomic files.

A media run (``fetch_pending``), top to bottom:

1. Plan: set-based SQL gives every call with a ``recording_url``/``transcript_url`` a job
   in ``media_jobs`` (one per call and kind) and notices URLs that changed.
2. Clean ``MEDIA_DIR/.tmp``, where downloads are written before they get their name: a
   killed run can only have left files there. Runs of other databases may share the folder,
   so only the temp files of runs that are gone are removed (see ``MediaFolder``).
3. With ``--verify``, re-hash the stored recordings and reopen what is missing or changed.
4. Page through the jobs due now (keyset paging) into a bounded queue that
   ``media.concurrency`` workers drain; the client's throttle caps the total on top.
5. A recording streams into a ``Spool`` (memory up to SPOOL_BYTES, then its temp file)
   and joins the placing queue; the download slot is free again as soon as the bytes are in.
   Placers take what is queued (up to PLACE_BATCH files or PLACE_BATCH_BYTES) to a file
   thread in one hop, where each is written to ``.tmp``, made durable (one syncfs per
   batch on Linux, else an fsync per file) and renamed to ``recordings/YYYY/MM/DD/<name>.mp3``,
   and then the renames are made durable. The event loop does no file I/O. Only a file
   durable under its name is committed as done. Finished work is
   committed in batches: one writer work item every ``FLUSH_INTERVAL_S`` or ``FLUSH_ITEMS``,
   and on a timer (``FLUSH_TIMER_S``) so that a download that drags on holds back nothing.

A 404 means "not ready yet": the job stays pending and is asked again on every run,
with growing gaps once it has been missing for a day. It becomes ``unavailable`` only
once it has been missing for ``media.max_age_days`` since callsync's first miss (not
since the call: a backfill asks for old calls whose media the vendor may make only now)
and has been asked at least MIN_MISSES times. A failed download (after the client's retries)
is ``failed`` and retried on later runs with back-off. A URL we refuse to fetch
(foreign host while ``allow_foreign_hosts`` is false, not http(s), credentials in it, an
address more internal than the API's: pipeline.addresses) is ``unavailable`` with the
reason in ``last_error``. A body over its cap is ``failed``. A disk error stops the run (``DiskError``).

The counts returned, per run: ``downloaded`` (and per kind ``recordings``,
``transcripts``), ``bytes`` of recordings, ``not_ready`` (404s), ``failed`` and
``unavailable`` (jobs that became so in this run), ``pending`` (jobs left waiting
after the run), ``temp_files_removed`` (left by a killed run), and with --verify
``verified`` / ``reverified_bad``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, Callable

import duckdb
import pyarrow as pa

from pipeline import columns, load
from pipeline.client import CallTrackingClient, Download, parse_transcript
from pipeline.config import Settings
from pipeline.errors import (
    ApiError,
    AuthError,
    BudgetExhausted,
    CallsyncError,
    DiskError,
    MediaError,
    NotFoundError,
    RunStopped,
    UnsafeUrlError,
)
from pipeline.load import Writer
from pipeline.mediafiles import MediaFolder, Spool, disk_error, recording_path, sha256_of

log = logging.getLogger("callsync.media")

RECORDING, TRANSCRIPT = "recording", "transcript"
PAGE_SIZE = 10_000
PLAN_STATE_KEY = "media_planned"
PLAN_MARGIN = timedelta(days=1)
FULL_PLAN = datetime(1970, 1, 1, tzinfo=timezone.utc)
FLUSH_INTERVAL_S = 0.5
FLUSH_ITEMS = 500
FLUSH_SEGMENTS = 50_000
# Finished work is also committed on this timer, so that one download that drags on
# (or a worker stuck waiting) does not hold back the batch that finished around it.
FLUSH_TIMER_S = 2.0
# A transcript body this big is read by Arrow (columns.transcript_to_arrow), not pydantic.
ARROW_TRANSCRIPT_BYTES = 1 << 20
SPOOL_BYTES = 1 << 20
# One file thread: two created and renamed files in the same folders at once, and the
# kernel spun on the folders' locks (perf: rwsem_spin_on_owner); a demo-sized media run
# used ~12% less CPU with one (35 CPU-s against 40, 5 alternating runs), in no more time.
PLACERS = 1
PLACE_BATCH = 64
PLACE_BATCH_BYTES = 4 << 20
VERIFY_THREADS = 4
LOGGED_FAILURES = 10
DAY = timedelta(days=1)
FAILURE_BACKOFF = timedelta(minutes=15)
# A not-ready job is given up only after this many 404s (and max_age_days of them): a
# weekly cron still asks a few times, and max_age_days = 0 does not give up on the first.
MIN_MISSES = 3





# --- jobs and what becomes of them -------------------------------------------------------


@dataclass(frozen=True)
class Job:
    call_id: str
    kind: str
    url: str
    started_at: datetime
    missing_since: datetime | None
    failures: int
    misses: int = 0


@dataclass(frozen=True)
class Outcome:
    """A job's new state after an attempt: one row of the `outcomes` table."""

    call_id: str
    kind: str
    status: str
    failures: int = 0
    last_error: str | None = None
    missing_since: datetime | None = None
    next_attempt_at: datetime | None = None
    done_at: datetime | None = None
    misses: int = 0


def done(job: Job, now: datetime) -> Outcome:
    return Outcome(job.call_id, job.kind, "done", done_at=now)


def not_ready(job: Job, now: datetime, max_age_days: int, error: str) -> Outcome:
    """A 404: asked again on every run for a day, then with gaps growing to a day;
    unavailable once missing for max_age_days since the first miss and asked MIN_MISSES
    times. The call's age plays no part: the vendor makes media for old calls too."""
    missing_since = job.missing_since or now
    missing_for = now - missing_since
    misses = job.misses + 1
    if missing_for >= timedelta(days=max_age_days) and misses >= MIN_MISSES:
        reason = (f"still not ready {_days(missing_for)} after the first miss, {misses} requests"
                  f" (media.max_age_days = {max_age_days}): {error}")
        return Outcome(job.call_id, job.kind, "unavailable", last_error=reason, missing_since=missing_since,
                       misses=misses)
    next_attempt = None if missing_for < DAY else now + min(DAY, missing_for / 4)
    return Outcome(job.call_id, job.kind, "pending", 0, f"not ready yet: {error}", missing_since, next_attempt,
                   misses=misses)


def _days(span: timedelta) -> str:
    days = span / DAY
    return f"{days:.0f} days" if days >= 2 else f"{days:.1f} days"


def failed(job: Job, now: datetime, error: str) -> Outcome:
    """Retried on the next run, then after 15 min, 30 min, 1 h, ... at most a day apart.
    A streak of "not ready yet" goes on through failures (missing_since, misses kept)."""
    failures = job.failures + 1
    gap = min(DAY, FAILURE_BACKOFF * 2 ** min(failures - 2, 10)) if failures > 1 else timedelta(0)
    return Outcome(job.call_id, job.kind, "failed", failures, error, job.missing_since, now + gap, misses=job.misses)


def refused(job: Job, error: str) -> Outcome:
    return Outcome(job.call_id, job.kind, "unavailable", last_error=f"refused: {error}")


# --- committing in batches ----------------------------------------------------------------


OUTCOME_SCHEMA = pa.schema(
    [
        ("call_id", pa.string()),
        ("kind", pa.string()),
        ("status", pa.string()),
        ("failures", pa.int32()),
        ("last_error", pa.string()),
        ("missing_since", pa.timestamp("us", tz="UTC")),
        ("next_attempt_at", pa.timestamp("us", tz="UTC")),
        ("done_at", pa.timestamp("us", tz="UTC")),
        ("misses", pa.int32()),
    ]
)
RECORDING_SCHEMA = pa.schema(
    [
        ("call_id", pa.string()),
        ("path", pa.string()),
        ("size_bytes", pa.int64()),
        ("sha256", pa.string()),
        ("content_type", pa.string()),
    ]
)
SEGMENT_SCHEMA = columns.SEGMENT_SCHEMA


@dataclass
class Finished:
    """Work done since the last flush, waiting to be committed together."""

    outcomes: list[Outcome] = field(default_factory=list)
    recordings: list[tuple] = field(default_factory=list)
    transcripts: list[str] = field(default_factory=list)
    segments: list[tuple] = field(default_factory=list)
    segment_tables: list[pa.Table] = field(default_factory=list)  # big transcripts, read by Arrow
    segment_rows: int = 0

    def __len__(self) -> int:
        return len(self.outcomes)


def commit_finished(conn: duckdb.DuckDBPyConnection, finished: Finished) -> None:
    """In the writer thread: one transaction for a batch of finished jobs."""
    tables = {
        "outcomes": pa.Table.from_pylist([vars(outcome) for outcome in finished.outcomes], OUTCOME_SCHEMA),
        "fetched_recordings": pa.Table.from_arrays(_columns(finished.recordings, 5), schema=RECORDING_SCHEMA),
        "fetched_transcripts": pa.table({"call_id": pa.array(finished.transcripts, pa.string())}),
        "fetched_segments": pa.concat_tables(
            [pa.Table.from_arrays(_columns(finished.segments, 5), schema=SEGMENT_SCHEMA), *finished.segment_tables]
        ),
    }
    with load.transaction(conn):
        for name, table in tables.items():
            conn.register(name, table)
        try:
            load.run_sql(conn, "media_commit", now=load.utcnow())
        finally:
            for name in tables:
                conn.unregister(name)


def _columns(rows: list[tuple], width: int) -> list[list]:
    return [list(column) for column in zip(*rows)] if rows else [[] for _ in range(width)]


class Batcher:
    """Collects finished jobs and hands them to the writer as one work item every
    FLUSH_INTERVAL_S or FLUSH_ITEMS."""

    def __init__(self, writer: Writer):
        self.writer = writer
        self._finished = Finished()
        self._last_flush = time.monotonic()
        self._commits: list[asyncio.Future] = []

    def add(self, outcome: Outcome, *, recording: tuple | None = None, segments: list[tuple] | pa.Table | None = None) -> None:
        finished = self._finished
        finished.outcomes.append(outcome)
        if recording is not None:
            finished.recordings.append(recording)
        if segments is not None:
            finished.transcripts.append(outcome.call_id)
            if isinstance(segments, pa.Table):
                finished.segment_tables.append(segments)
                finished.segment_rows += segments.num_rows
            else:
                finished.segments.extend(segments)
                finished.segment_rows += len(segments)

    def due(self) -> bool:
        finished = self._finished
        return (len(finished) >= FLUSH_ITEMS or finished.segment_rows >= FLUSH_SEGMENTS
                or time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S)

    def waiting(self) -> bool:
        return bool(self._finished.outcomes)

    async def flush(self) -> None:
        finished, self._finished = self._finished, Finished()
        self._last_flush = time.monotonic()
        if not finished.outcomes:
            return
        self._check_commits()
        future = await self.writer.submit(partial(commit_finished, finished=finished), rows=len(finished))
        future.add_done_callback(partial(_log_commit, jobs=len(finished)))
        self._commits.append(future)

    def _check_commits(self) -> None:
        """Forget committed batches; a batch that failed to commit stops the run."""
        for future in self._commits:
            if future.done() and not future.cancelled() and future.exception() is not None:
                raise future.exception()
        self._commits = [future for future in self._commits if not future.done()]

    async def close(self) -> None:
        """Commit everything collected and wait until it is committed."""
        await self.flush()
        commits, self._commits = self._commits, []
        if commits:
            self.writer.flush()
            results = await asyncio.gather(*commits, return_exceptions=True)
            errors = [result for result in results if isinstance(result, BaseException)]
            if errors:
                raise errors[0]
        self.writer.raise_failure()


def _log_commit(future: asyncio.Future, jobs: int) -> None:
    if not future.cancelled() and future.exception() is None:
        log.debug("%d media jobs committed", jobs, extra={"event": "media_committed", "jobs": jobs})


# --- the run ---------------------------------------------------------------------------


@dataclass
class MediaCounts:
    """What one run did (see the module docstring); ``pending`` is what is left after it."""

    downloaded: int = 0
    recordings: int = 0
    transcripts: int = 0
    bytes: int = 0
    not_ready: int = 0
    failed: int = 0
    unavailable: int = 0
    pending: int = 0
    temp_files_removed: int = 0
    verified: int = 0
    reverified_bad: int = 0


@dataclass(frozen=True)
class Placement:
    """A downloaded recording waiting in the placing queue for its file thread."""

    job: Job
    now: datetime
    spool: Spool
    relative: str
    download: Download


class MediaFetcher:
    """``media.concurrency`` download workers drain a bounded queue of due jobs;
    downloaded recordings go on to a bounded placing queue that PLACERS tasks hand to
    the file threads in batches (see the module docstring)."""

    def __init__(self, client: CallTrackingClient, writer: Writer, settings: Settings, folder: MediaFolder,
                 counts: MediaCounts, *, on_job_done: Callable[[], None] | None = None):
        self.client = client
        self.on_job_done = on_job_done
        self.writer = writer
        self.settings = settings.media
        self.folder = folder
        self.counts = counts
        self.batcher = Batcher(writer)
        workers = self.settings.concurrency
        # Bounds the downloads held in memory (or in temp files) waiting to be placed.
        self._placing: asyncio.Queue[Placement | None] = asyncio.Queue(maxsize=workers * 2)
        self._downloading = workers
        self._files = ThreadPoolExecutor(PLACERS, thread_name_prefix="callsync-media")
        self._group: asyncio.TaskGroup | None = None
        self._timer: asyncio.Task | None = None
        self._placers = PLACERS

    async def run(self, *, ignore_backoff: bool) -> None:
        workers = self.settings.concurrency
        queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=workers * 4)
        try:
            async with asyncio.TaskGroup() as self._group:
                self._group.create_task(self._produce(queue, workers, ignore_backoff))
                for _ in range(workers):
                    self._group.create_task(self._work(queue))
                self._timer = self._group.create_task(self._flush_on_timer())
                for _ in range(PLACERS):
                    self._group.create_task(self._place_batches())
        except* CallsyncError as errors:
            await self._close_quietly()
            raise errors.exceptions[0] from None
        finally:
            self._files.shutdown(wait=False)
        await self.batcher.close()

    async def _flush_on_timer(self) -> None:
        """Every FLUSH_TIMER_S, commit what finished, until the last placer is done."""
        while True:
            await asyncio.sleep(FLUSH_TIMER_S)
            if self.batcher.waiting():
                await self.batcher.flush()

    async def _close_quietly(self) -> None:
        """After a fatal error: commit what finished, but let the first error be the one reported."""
        try:
            await self.batcher.close()
        except CallsyncError as exc:
            log.error("could not commit finished media: %s", exc)

    async def _produce(self, queue: asyncio.Queue, workers: int, ignore_backoff: bool) -> None:
        """Pages of due jobs into the queue; the next page is read while this one drains."""

        def read(after: int) -> asyncio.Task:
            page = partial(due_jobs, settings=self.settings, after=after, ignore_backoff=ignore_backoff,
                           now=load.utcnow())
            assert self._group is not None
            return self._group.create_task(self.writer.run(page))

        reading = read(-1)
        while True:
            page = await reading
            if page.more:
                reading = read(page.last_row)
            for job in page.jobs:
                await queue.put(job)
            if not page.more:
                break
        for _ in range(workers):
            await queue.put(None)

    async def _work(self, queue: asyncio.Queue) -> None:
        while (job := await queue.get()) is not None:
            handed_on = await self._attempt(job)
            if self.on_job_done and not handed_on:
                self.on_job_done()
        self._downloading -= 1
        if not self._downloading:  # the last worker: nothing more will be queued for placing
            for _ in range(PLACERS):
                await self._placing.put(None)

    async def _attempt(self, job: Job) -> bool:
        """True when the job was handed on to be placed, so is not finished yet."""
        now = load.utcnow()
        try:
            if job.kind == RECORDING:
                await self._fetch_recording(job, now)
                return True
            await self._fetch_transcript(job, now)
        except (AuthError, BudgetExhausted, DiskError, RunStopped):
            raise
        except NotFoundError as exc:
            self.counts.not_ready += 1
            await self._record(not_ready(job, now, self.settings.max_age_days, str(exc)))
        except UnsafeUrlError as exc:
            await self._record(refused(job, str(exc)))
        except (ApiError, MediaError) as exc:
            await self._record(failed(job, now, str(exc)))
        except Exception as exc:  # noqa: BLE001  a hostile answer we did not foresee: this job fails, not the run
            log.debug("%s of %s: unexpected error", job.kind, job.call_id, exc_info=True)
            await self._record(failed(job, now, f"unexpected error: {type(exc).__name__}: {str(exc)[:200]}"))
        return False

    async def _record(self, outcome: Outcome, **stored: Any) -> None:
        if outcome.status == "failed":
            self.counts.failed += 1
            if self.counts.failed <= LOGGED_FAILURES:
                log.warning("%s of %s failed: %s", outcome.kind, outcome.call_id, outcome.last_error,
                            extra={"event": "media_failed", "call_id": outcome.call_id, "kind": outcome.kind})
        elif outcome.status == "unavailable":
            self.counts.unavailable += 1
        self.batcher.add(outcome, **stored)
        if self.batcher.due():
            await self.batcher.flush()

    async def _fetch_recording(self, job: Job, now: datetime) -> None:
        relative = recording_path(job.call_id, job.started_at)
        spool = Spool(self.folder.new_temp(), SPOOL_BYTES)
        try:
            download = await self.client.download(job.url, spool)
        except BaseException as exc:
            spool.discard()
            if isinstance(exc, OSError):
                raise disk_error(exc, spool.temp) from None
            raise
        await self._placing.put(Placement(job, now, spool, relative, download))

    async def _place_batches(self) -> None:
        """Until the downloads are over: what is queued, as one batch in a file thread
        (save, sync, rename, sync); then each recording is recorded as done."""
        loop = asyncio.get_running_loop()
        last = False
        while not last:
            batch: list[Placement] = []
            size = 0
            while not last and len(batch) < PLACE_BATCH and size < PLACE_BATCH_BYTES:
                if batch and self._placing.empty():
                    break
                placement = await self._placing.get()
                if placement is None:
                    last = True
                else:
                    batch.append(placement)
                    size += placement.download.size_bytes
            if not batch:
                continue
            # (If cancelled meanwhile, the thread finishes its batch and the temp files
            # are cleaned up at the end of the run; nothing is marked done.)
            results = await loop.run_in_executor(
                self._files, self.folder.place_all, [(placement.spool, placement.relative) for placement in batch]
            )
            for placement, error in zip(batch, results):
                await self._placed(placement, error)
        self._placers -= 1
        if not self._placers and self._timer is not None:  # the last placer: no more work to finish
            self._timer.cancel()

    async def _placed(self, placement: Placement, error: OSError | MediaError | None) -> None:
        job = placement.job
        if isinstance(error, OSError):
            raise disk_error(error, self.folder.root / placement.relative)
        if error is not None:
            await self._record(failed(job, placement.now, str(error)))
        else:
            download = placement.download
            self.counts.downloaded += 1
            self.counts.recordings += 1
            self.counts.bytes += download.size_bytes
            row = (job.call_id, placement.relative, download.size_bytes, download.sha256, download.content_type)
            await self._record(done(job, placement.now), recording=row)
        if self.on_job_done:
            self.on_job_done()

    async def _fetch_transcript(self, job: Job, now: datetime) -> None:
        body = await self.client.transcript_body(job.url)
        segments: list[tuple] | pa.Table
        if len(body) >= ARROW_TRANSCRIPT_BYTES:
            segments = await asyncio.to_thread(columns.transcript_to_arrow, job.call_id, body)
        else:
            segments = [
                (job.call_id, index, segment.speaker, segment.text, segment.timestamp)
                for index, segment in enumerate(parse_transcript(body).segments)
            ]
        del body
        self.counts.downloaded += 1
        self.counts.transcripts += 1
        await self._record(done(job, now), segments=segments)


@dataclass(frozen=True)
class DuePage:
    jobs: list[Job]
    last_row: int
    more: bool


def due_jobs(conn: duckdb.DuckDBPyConnection, settings, after: int, ignore_backoff: bool, now: datetime) -> DuePage:
    """One page of the jobs to attempt now, after media_jobs row ``after``."""
    rows = load.run_sql(
        conn,
        "media_due_jobs",
        now=now,
        ignore_backoff=ignore_backoff,
        recordings=settings.recordings,
        transcripts=settings.transcripts,
        after=after,
        page_size=PAGE_SIZE,
    ).fetchall()
    jobs = [Job(*row[1:]) for row in rows if row[4] is not None]
    return DuePage(jobs, rows[-1][0] if rows else after, len(rows) == PAGE_SIZE)


def count_due_jobs(conn: duckdb.DuckDBPyConnection, settings, ignore_backoff: bool, now: datetime) -> int:
    """How many jobs ``due_jobs`` will page through now."""
    return load.run_sql(conn, "media_due_count", now=now, ignore_backoff=ignore_backoff,
                        recordings=settings.recordings, transcripts=settings.transcripts).fetchone()[0]


def plan_jobs(conn: duckdb.DuckDBPyConnection, settings, now: datetime) -> None:
    """Jobs for calls changed since the previous plan (all calls when the kinds to fetch
    changed, or on the first plan); the margin covers a clock that stepped back."""
    plan = json.dumps({"recordings": settings.recordings, "transcripts": settings.transcripts})
    previous = load.get_state(conn, PLAN_STATE_KEY)
    since = FULL_PLAN
    if previous:
        planned_at, _, kinds = previous.partition(" ")
        if kinds == plan:
            since = datetime.fromisoformat(planned_at) - PLAN_MARGIN
    with load.transaction(conn):
        load.run_sql(
            conn,
            "media_plan_jobs",
            now=now,
            since=since,
            recordings=settings.recordings,
            transcripts=settings.transcripts,
            allow_foreign_hosts=settings.allow_foreign_hosts,
            allow_private_addresses=settings.allow_private_addresses,
            keep_since=FULL_PLAN if settings.keep_days is None else now - timedelta(days=settings.keep_days),
        )
        load.set_state(conn, PLAN_STATE_KEY, f"{now.isoformat()} {plan}")


def media_status(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return dict(load.run_sql(conn, "status_media").fetchall())


# --- verify --------------------------------------------------------------------------------


async def verify_recordings(writer: Writer, folder: MediaFolder, counts: MediaCounts) -> None:
    """Re-hash every stored recording; reopen those missing or not matching (and done
    jobs without a stored row), so that this run fetches them again."""
    after = ""
    with ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="callsync-verify") as pool:
        while True:
            rows = await writer.run(partial(_stored_page, after=after))
            if not rows:
                break
            bad = await asyncio.to_thread(_check_page, pool, folder, rows)
            counts.verified += len(rows)
            counts.reverified_bad += len(bad)
            if bad:
                await writer.run(partial(_reopen, bad=bad))
            after = rows[-1][0]
    await writer.run(partial(_reopen, bad=[]))


def _stored_page(conn: duckdb.DuckDBPyConnection, after: str) -> list[tuple]:
    return load.run_sql(conn, "media_stored_recordings", after_call=after, page_size=PAGE_SIZE).fetchall()


def _check_page(pool: ThreadPoolExecutor, folder: MediaFolder, rows: list[tuple]) -> list[tuple[str, str]]:
    return [problem for problem in pool.map(partial(_check_one, folder), rows) if problem is not None]


def _check_one(folder: MediaFolder, row: tuple) -> tuple[str, str] | None:
    call_id, relative, size, sha256 = row
    try:
        path = folder.resolve(relative)
    except MediaError as exc:
        return call_id, f"verify: {exc}"
    found = sha256_of(path)
    if found is None:
        return call_id, f"verify: {relative} is missing"
    if found != (size, sha256):
        return call_id, f"verify: {relative} does not match what was downloaded"
    return None


def _reopen(conn: duckdb.DuckDBPyConnection, bad: list[tuple[str, str]]) -> None:
    reopen = pa.table(
        {"call_id": pa.array([b[0] for b in bad], pa.string()), "reason": pa.array([b[1] for b in bad], pa.string())}
    )
    with load.transaction(conn):
        conn.register("reopen", reopen)
        try:
            load.run_sql(conn, "media_reopen")
        finally:
            conn.unregister("reopen")


# --- the entry point ---------------------------------------------------------------------


async def fetch_pending(
    client: CallTrackingClient,
    writer: Writer,
    settings: Settings,
    *,
    run_id: str,
    verify: bool = False,
    ignore_backoff: bool = False,
    counts: dict[str, Any] | None = None,
    on_job_done: Callable[[], None] | None = None,
    on_jobs_due: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Fetch every recording and transcript not stored yet (see the module docstring).

    The counts go into ``counts`` if given (and are returned): a caller has them even when
    a fatal error (budget spent, disk full, auth) is raised. ``on_jobs_due`` hears how many
    jobs the run will attempt, before the first; ``on_job_done`` each one attempted."""
    media = settings.media
    tally = MediaCounts()
    result = counts if counts is not None else {}
    if not (media.recordings or media.transcripts):
        return result
    folder = MediaFolder(media.dir)
    try:
        if media.recordings:
            tally.temp_files_removed = await asyncio.to_thread(folder.prepare)
        await writer.run(partial(plan_jobs, settings=media, now=load.utcnow()))
        if verify and media.recordings:
            await verify_recordings(writer, folder, tally)
        if on_jobs_due:
            on_jobs_due(await writer.run(partial(count_due_jobs, settings=media, ignore_backoff=ignore_backoff,
                                                 now=load.utcnow())))
        fetcher = MediaFetcher(client, writer, settings, folder, tally, on_job_done=on_job_done)
        await fetcher.run(ignore_backoff=ignore_backoff)
    except CallsyncError:
        await _count_pending(writer, tally)
        raise
    finally:
        if media.recordings:
            await asyncio.to_thread(folder.clean_temp)
        result.update(vars(tally))
    await _count_pending(writer, tally)
    result.update(vars(tally))
    log.debug("media run %s: %s", run_id, vars(tally), extra={"event": "media_done", **vars(tally)})
    return result


async def _count_pending(writer: Writer, tally: MediaCounts) -> None:
    try:
        tally.pending = (await writer.run(media_status)).get("pending", 0)
    except CallsyncError as exc:  # the database itself failed: the run's error already says so
        log.debug("could not count pending media: %s", exc)
