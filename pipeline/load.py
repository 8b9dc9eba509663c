"""DuckDB: migrations, columnar upserts, checkpoints. Knows nothing of HTTP.

The write side is one thread (``Writer``) that holds the store's working database
read-write for the whole run and publishes it for analysts now and then and at the
end (see pipeline.store). Each window's calls, its rejected records and its
checkpoint are one transaction: a crash loses nothing committed, and a re-run
upserts over what is there, so nothing is ever duplicated.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from datetime import date, datetime, timedelta
from typing import Any, Callable, Iterator, Sequence, TypeVar

import duckdb
import pyarrow as pa

from pipeline import clock, erasure
from pipeline.errors import DatabaseLockedError, DatabaseMemoryError, DiskError
from pipeline.columns import CALL_SCHEMA, last_row_per_id
from pipeline.sqlfiles import MIGRATIONS_TABLE, _statements, read_sql, run_sql, split_statements, sql_dir  # noqa: F401
from pipeline.store import FileStore, Published, Store, is_out_of_memory, transaction  # noqa: F401

T = TypeVar("T")
log = logging.getLogger("callsync.load")

CHECKPOINT_THRESHOLD = "1GB"
# The writer's DuckDB works in the writer thread alone. With worker threads, each
# checkpoint ran in parallel tasks that took 100-190 MB more at a 1M-call table and
# three times as long, competing for the cores the event loop needs.
WRITER_THREADS = 1
# Once a run has stored this many calls, its checkpoints skip DuckDB's vacuum (see Writer).
# A cron sync of the lookback days stores far fewer.
VACUUM_BELOW_ROWS = 50_000
# The writer checkpoints (see Writer) once this many rows are committed since the last.
CHECKPOINT_ROWS = 15_000
PUBLISH_INTERVAL_S = 60.0


def count_sql(conn: duckdb.DuckDBPyConnection, name: str, **params: Any) -> list[int]:
    """Run sql/statements/NAME.sql like run_sql; the rows each statement inserted or deleted."""
    counts = []
    for query, names in _statements(conn, name):
        rows = conn.execute(query, {key: params[key] for key in names} or None).fetchall()
        counts.append(int(rows[0][0]) if rows else 0)
    return counts


def utcnow() -> datetime:
    return clock.now()


# --- migrations ---------------------------------------------------------------------


def migrate(store: Store) -> list[str]:
    """Apply the migrations and publish, outside a run (tests, tools)."""
    with store.lock():
        conn = store.open()
        try:
            applied = apply_migrations(conn)
            store.publish(conn)
        finally:
            conn.close()
    return applied


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else message


def apply_migrations(conn: duckdb.DuckDBPyConnection, *, through: str | None = None) -> list[str]:
    """Apply sql/migrations/NNN_*.sql in order, each once, recorded in schema_migrations
    (``through``: only up to that migration)."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    )
    applied = {row[0] for row in conn.execute(f"SELECT name FROM {MIGRATIONS_TABLE}").fetchall()}
    newly_applied = []
    for migration in sorted((sql_dir() / "migrations").glob("*.sql")):
        if through is not None and migration.stem > through:
            break
        if migration.stem in applied:
            continue
        conn.execute("BEGIN TRANSACTION")
        for statement in split_statements(conn, migration.read_text()):
            conn.execute(statement)
        conn.execute(f"INSERT INTO {MIGRATIONS_TABLE} VALUES (?, ?)", [migration.stem, utcnow()])
        conn.execute("COMMIT")
        newly_applied.append(migration.stem)
    return newly_applied


# --- writes (each runs in the writer thread, on an open connection) ----------------


@dataclass(frozen=True)
class WindowBatch:
    """One verified window, ready to commit. ``listed_on``: the UTC day its listing began;
    only the days over by then are settled (a listing begun at 23:59 and committed after
    midnight may lack that day's last calls)."""

    scope: str
    start: date
    end: date
    calls: pa.Table
    rejected: pa.Table
    listed_on: date


@dataclass(frozen=True)
class CallCounts:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    deleted: int = 0  # held, but no longer listed upstream: moved to deleted_calls
    restored: int = 0  # deleted upstream before, listed again (also counted as updated or unchanged)


@contextmanager
def rolled_back(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    conn.execute("BEGIN TRANSACTION")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")


def commit_windows(
    conn: duckdb.DuckDBPyConnection,
    batches: Sequence[WindowBatch],
    run_id: str,
    then: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    *,
    dry_run: bool = False,
) -> list[CallCounts]:
    """Commit several windows in one transaction: each window's calls, rejected records
    and checkpoint land together or not at all. ``then`` runs inside the same transaction.
    ``dry_run``: roll it back, only count."""
    synced_at = utcnow()
    calls = _indexed_calls(batches)
    rejected = _windowed_rejected(batches)
    with rolled_back(conn) if dry_run else transaction(conn):
        checks = erasure.commit_checks(conn)
        if checks.tombstones:
            calls, rejected = erasure.skip_forgotten(conn, calls, rejected)
        conn.register("batch", calls)
        restored = erasure.restore_listed(conn, synced_at) if checks.deleted_calls else {}
        classified = {row[0]: row[1:] for row in run_sql(conn, "classify_calls").fetchall()}
        if calls.num_rows:
            run_sql(conn, "upsert_calls", synced_at=synced_at)
        conn.unregister("batch")
        deleted = erasure.mark_vanished(conn, batches, calls, rejected, run_id, synced_at)
        erasure.audit_window_changes(conn, run_id, deleted=deleted, restored=restored)
        if rejected.num_rows:
            conn.register("batch", rejected)
            run_sql(conn, "insert_rejected", run_id=run_id, rejected_at=synced_at)
            conn.unregister("batch")
        settled = _settled_windows(batches)
        if settled.num_rows:
            conn.register("windows", settled)
            run_sql(conn, "checkpoint_windows", run_id=run_id, synced_at=synced_at)
            conn.unregister("windows")
        if then is not None:
            then(conn)
    counts = []
    for index, batch in enumerate(batches):
        new, updated, seen = classified.get(index, (0, 0, 0))
        counts.append(
            CallCounts(
                new, updated, seen - new - updated, batch.rejected.num_rows,
                deleted=deleted.get(index, 0), restored=restored.get(index, 0),
            )
        )
    return counts


def preview_windows(conn: duckdb.DuckDBPyConnection, batches: Sequence[WindowBatch], run_id: str) -> list[CallCounts]:
    """What commit_windows would change (`callsync verify --dry-run`): the same work, rolled back."""
    return commit_windows(conn, batches, run_id, dry_run=True)


def _indexed_calls(batches: Sequence[WindowBatch]) -> pa.Table:
    """All windows' calls in one table, tagged with their window; one row per id."""
    tables = [
        batch.calls.append_column("window_index", pa.array([index] * batch.calls.num_rows, pa.int32()))
        for index, batch in enumerate(batches)
    ]
    # A call seen in two windows (its started_at moved between them): the later window's copy.
    return last_row_per_id(pa.concat_tables(tables) if tables else CALL_SCHEMA.empty_table())


def last_settled_day(batches: Sequence[WindowBatch]) -> date:
    """The last day every batch's listing began after: the day its listing began can still
    get calls and later days have not happened (the next run reads them again)."""
    return min(batch.listed_on for batch in batches) - timedelta(days=1)


def _settled_windows(batches: Sequence[WindowBatch]) -> pa.Table:
    """The windows' checkpoints, through the day before each one's listing began."""
    settled = [batch for batch in batches if batch.start <= last_settled_day([batch])]
    return pa.table(
        {
            "scope": pa.array([batch.scope for batch in settled], pa.string()),
            "window_start": pa.array([batch.start for batch in settled], pa.date32()),
            "window_end": pa.array([min(batch.end, last_settled_day([batch])) for batch in settled], pa.date32()),
            "row_count": pa.array([batch.calls.num_rows for batch in settled], pa.int32()),
        }
    )


def _windowed_rejected(batches: Sequence[WindowBatch]) -> pa.Table:
    tables = []
    for batch in batches:
        rows = batch.rejected.num_rows
        tables.append(
            batch.rejected.append_column("window_start", pa.array([batch.start] * rows, pa.date32())).append_column(
                "window_end", pa.array([batch.end] * rows, pa.date32())
            )
        )
    return pa.concat_tables(tables)


def refresh_dimension(conn: duckdb.DuckDBPyConnection, statement: str, rows: pa.Table) -> None:
    """Full refresh of tracking_numbers or call_flows: rows that vanished are marked deleted."""
    with transaction(conn):
        conn.register("batch", rows)
        run_sql(conn, statement, synced_at=utcnow())
        conn.unregister("batch")


def start_run(conn: duckdb.DuckDBPyConnection, run_id: str, command: str, args: dict[str, Any]) -> None:
    run_sql(conn, "start_run", run_id=run_id, command=command, args=json.dumps(args, default=str), started_at=utcnow())


def finish_run(conn: duckdb.DuckDBPyConnection, run_id: str, status: str, fields: dict[str, Any], error: str | None) -> None:
    columns = (
        "windows_done windows_skipped windows_failed calls_new calls_updated calls_unchanged "
        "rejected refetches requests retries rate_limited"
    ).split()
    run_sql(
        conn,
        "finish_run",
        run_id=run_id,
        finished_at=utcnow(),
        status=status,
        summary=json.dumps(fields, default=str),
        error=error,
        **{column: fields.get(column, 0) for column in columns},
    )


def set_state(conn: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    run_sql(conn, "set_state", key=key, value=value, updated_at=utcnow())


def get_state(conn: duckdb.DuckDBPyConnection, key: str) -> str | None:
    row = run_sql(conn, "get_state", key=key).fetchone()
    return row[0] if row else None


def requests_since(conn: duckdb.DuckDBPyConnection, since: datetime) -> int:
    return int(run_sql(conn, "requests_since", since=since).fetchone()[0])


def committed_windows(conn: duckdb.DuckDBPyConnection, scopes: Sequence[str]) -> list[tuple[date, date]]:
    return [(start, end) for start, end in run_sql(conn, "committed_windows", scopes=list(scopes)).fetchall()]


# --- the writer thread ------------------------------------------------------------


@dataclass
class _Queued:
    work: Callable[[duckdb.DuckDBPyConnection], Any] | WindowBatch
    future: asyncio.Future
    rows: int


class Writer:
    """One thread owns every write. Work is queued and committed in groups, at most once per
    ``commit_interval_s``; the windows of a group share one transaction. ``max_pending_rows``
    bounds what waits for the next commit. The group being committed does not count, so
    fetching goes on during a commit: at most twice ``max_pending_rows`` is held.

    The writer opens the store's working database on its first commit and holds it until
    the run ends: no one else opens that file, so nothing has to wait for a gap. It
    publishes the snapshot analysts read at most every ``publish_interval_s`` and, always,
    when it closes, whatever the run's outcome (ok, failed, paused, aborted, interrupted):
    the end of every run goes through ``__aexit__``.

    Rows committed but not yet checkpointed stay in DuckDB's memory, and so does every
    block a connection has read or written (each commit reads the id column of `calls`).
    So once ``checkpoint_rows`` are committed since the last checkpoint, the writer
    checkpoints and opens a fresh connection to the working database (no one else
    opens that file, so this lets no one in); publishing does the same. Held for the
    whole run without that, a 1M-call backfill peaked at 280 MB; checkpointing every
    40k rows peaked 14 MB higher than every 15k at 200k calls (and 10k saved no more).

    Each checkpoint stores the rows since the last as a new row group, and DuckDB's vacuum
    merges small row groups by rewriting them: 100-190 MB for a moment, whenever a row
    group's worth had gathered. So once a run has stored ``vacuum_below_rows`` calls, its
    checkpoints skip the vacuum: the frequent small syncs keep the table compact, and a
    big backfill leaves row groups of ``checkpoint_rows`` or so.

    ``after_windows(conn, batches)`` runs inside each windows transaction (the sync
    moves its watermark there)."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        *,
        after_windows: Callable[[duckdb.DuckDBPyConnection, Sequence[WindowBatch]], None] | None = None,
        commit_interval_s: float = 1.0,
        max_pending_rows: int = 20_000,
        memory_limit: str | None = None,
        checkpoint_rows: int = CHECKPOINT_ROWS,
        publish_interval_s: float = PUBLISH_INTERVAL_S,
        vacuum_below_rows: int = VACUUM_BELOW_ROWS,
    ):
        self.store = store
        self.run_id = run_id
        self.after_windows = after_windows
        self.commit_interval_s = commit_interval_s
        self.max_pending_rows = max_pending_rows
        self.memory_limit = memory_limit
        self.checkpoint_rows = checkpoint_rows
        self.publish_interval_s = publish_interval_s
        self.vacuum_below_rows = vacuum_below_rows
        self.published: list[Published] = []
        self._rows_stored = 0
        self._rows_unchecked = 0  # committed since the last checkpoint: in DuckDB's memory
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._published_at = 0.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="callsync-writer")
        self._queue: list[_Queued] = []
        self._pending_rows = 0
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._closing = False
        self._urgent = False
        self._failure: BaseException | None = None
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Writer:
        self._task = asyncio.create_task(self._commit_loop(), name="callsync-writer")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Commit what is queued, publish, close: the one way every run ends."""
        self._closing = True
        self._wakeup.set()
        try:
            if self._task is not None:
                await asyncio.shield(self._task)
        finally:
            try:
                await asyncio.shield(asyncio.get_running_loop().run_in_executor(self._executor, self._close))
            finally:
                self._executor.shutdown(wait=True)

    async def publish(self, *, rewrite: bool = False) -> Published | None:
        """Publish now (after what is queued before it), e.g. ``rewrite=True`` after an erasure."""
        return await self.run(partial(self._publish_now, rewrite=rewrite))

    async def run(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``work(conn)`` in its own transaction-scope, now, and wait for it."""
        return await self._enqueue(work, rows=0, urgent=True)

    async def submit(self, work: Callable[[duckdb.DuckDBPyConnection], T], *, rows: int = 0) -> asyncio.Future:
        """Queue ``work(conn)`` for the next group commit (within commit_interval_s) without
        waiting for it; the future gives its result. Batch small writes into one work item:
        each item pays for its own transaction."""
        await self._wait_for_room(rows)
        return self._enqueue(work, rows=rows, urgent=False)

    async def _wait_for_room(self, rows: int) -> None:
        self.raise_failure()
        while self._pending_rows and self._pending_rows + rows > self.max_pending_rows:
            self.flush()  # someone is waiting: commit now rather than at the next interval
            self._room.clear()
            await self._room.wait()
            self.raise_failure()

    async def submit_window(self, batch: WindowBatch) -> asyncio.Future:
        """Queue a verified window for the next group commit; the future gives its CallCounts.
        Waits first while too many rows are pending."""
        await self._wait_for_room(batch.calls.num_rows)
        return self._enqueue(batch, rows=batch.calls.num_rows, urgent=False)

    def _enqueue(self, work: Any, *, rows: int, urgent: bool) -> asyncio.Future:
        self.raise_failure()
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(work, future, rows))
        self._pending_rows += rows
        self._urgent = self._urgent or urgent
        self._wakeup.set()
        return future

    def flush(self) -> None:
        """Commit what is queued now rather than at the next interval."""
        self._urgent = bool(self._queue)
        self._wakeup.set()

    def raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_commit = 0.0
        while self._queue or not self._closing:
            if not self._queue:
                await self._wait_for_work(None)
                continue
            wait = last_commit + self.commit_interval_s - time.monotonic()
            if wait > 0 and not (self._closing or self._urgent) and self._pending_rows < self.max_pending_rows:
                await self._wait_for_work(wait)
                continue
            group, self._queue, self._urgent = self._queue, [], False
            # The group leaves the queue now: producers fill it again while this commits.
            self._pending_rows -= sum(item.rows for item in group)
            self._room.set()
            results = await loop.run_in_executor(self._executor, self._commit_group, [item.work for item in group])
            last_commit = time.monotonic()
            for item, (ok, value) in zip(group, results):
                if not item.future.cancelled():
                    item.future.set_result(value) if ok else item.future.set_exception(value)

    async def _wait_for_work(self, timeout: float | None) -> None:
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout=timeout)
        except asyncio.TimeoutError:
            pass

    def _commit_group(self, works: list[Any]) -> list[tuple[bool, Any]]:
        """In the writer thread: run the group (consecutive windows as one transaction) on
        the held connection, opening it first if needed; then checkpoint or publish if due."""
        results: list[tuple[bool, Any]] = []
        try:
            self.store.check_lock()  # a lake's lease still ours (pipeline.lease)
            for run in _consecutive_runs(works):  # the connection is asked for each time: a publish renews it
                results.extend(
                    self._run_windows(self._connection(), run)
                    if isinstance(run[0], WindowBatch)
                    else [self._run_one(self._connection(), work) for work in run]
                )
            if not self._closing and time.monotonic() - self._published_at >= self.publish_interval_s:
                self._publish_during_run()
            elif self._rows_unchecked >= self.checkpoint_rows:
                self._checkpoint()
        except BaseException as exc:  # opening or checkpointing failed: every unfinished item fails with it
            self._failure = self._failure or _as_store_error(exc)
            results.extend((False, self._failure) for _ in works[len(results):])
        return results

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._conn is None:
            self._open()
            # Nothing published yet (a first run): publish after the first group, so that
            # analysts and `callsync query` have a database from the start.
            published = self.store.is_published()
            self._published_at = time.monotonic() - (0 if published else self.publish_interval_s)
        return self._conn

    def _open(self) -> None:
        conn = self.store.open()
        # The writer checkpoints by itself (see _checkpoint); DuckDB's default (a
        # checkpoint whenever the WAL passes 16 MB) made most commits checkpoint.
        conn.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
        conn.execute(f"SET threads = {WRITER_THREADS}")
        if self.memory_limit:  # validated by config: digits and a unit
            conn.execute(f"SET memory_limit = '{self.memory_limit}'")
        self._conn = conn

    def _skip_vacuum_if_big(self) -> None:
        if self._rows_stored >= self.vacuum_below_rows:
            self._conn.execute("SET max_vacuum_tasks = 0")

    def _checkpoint(self) -> None:
        self._skip_vacuum_if_big()
        self.store.checkpoint(self._conn)
        self._rows_unchecked = 0
        if self.store.renews_connections:
            self._shed_cache()

    def _shed_cache(self) -> None:
        """A fresh connection to the same working database. DuckDB keeps what it has read
        and written cached while a connection is open, so one held for a whole run grew
        with the table (a 1M-call backfill peaked at 280 MB, against 208 MB when the old
        writer let go of the file every second). Nobody else opens the working database,
        so reopening it lets no one in; the checkpoint just made keeps it cheap."""
        self._conn.close()
        self._conn = None
        self._open()

    def _publish_now(self, conn: duckdb.DuckDBPyConnection, *, rewrite: bool = False, renew: bool = True) -> Published:
        self._skip_vacuum_if_big()
        published = self.store.publish(conn, rewrite=rewrite)
        self._rows_unchecked = 0
        if renew and self.store.renews_connections:
            self._shed_cache()
        self._published_at = time.monotonic()
        self.published.append(published)
        log.debug("published %s: %d bytes in %.2fs (%s)", published.path, published.bytes, published.seconds, published.method)
        return published

    def _publish_during_run(self) -> None:
        """A failed publish does not stop the run: what it commits is safe in the working
        database, and the publish at the end tries again."""
        try:
            self._publish_now(self._conn)
        except DiskError as exc:
            log.error("%s", exc)
            self._published_at = time.monotonic()

    def _close(self) -> None:
        """Publish what is committed and let go of the working database."""
        if self._conn is None:
            return
        try:
            self._publish_now(self._conn, renew=False)
        finally:
            conn, self._conn = self._conn, None
            conn.close()

    def _run_windows(self, conn: duckdb.DuckDBPyConnection, batches: list[WindowBatch]) -> list[tuple[bool, Any]]:
        then = partial(self.after_windows, batches=batches) if self.after_windows else None
        outcome = self._run_one(conn, partial(commit_windows, batches=batches, run_id=self.run_id, then=then))
        ok, value = outcome
        if not ok:
            return [outcome] * len(batches)
        rows = sum(batch.calls.num_rows for batch in batches)
        self._rows_stored += rows
        self._rows_unchecked += rows
        return [(True, counts) for counts in value]

    def _run_one(self, conn: duckdb.DuckDBPyConnection, work: Callable[[duckdb.DuckDBPyConnection], Any]) -> tuple[bool, Any]:
        try:
            return True, work(conn)
        except BaseException as exc:
            error = _as_store_error(exc)
            if isinstance(error, DiskError):
                self._failure = self._failure or error
            return False, error


def _consecutive_runs(works: list[Any]) -> list[list[Any]]:
    runs: list[list[Any]] = []
    for work in works:
        if runs and isinstance(work, WindowBatch) and isinstance(runs[-1][0], WindowBatch):
            runs[-1].append(work)
        else:
            runs.append([work])
    return runs


def _as_store_error(exc: BaseException) -> BaseException:
    if isinstance(exc, (DiskError, DatabaseLockedError)):
        return exc
    if isinstance(exc, (duckdb.IOException, OSError)):
        return DiskError(f"database write failed: {_first_line(str(exc))}")
    if isinstance(exc, duckdb.OutOfMemoryException) or is_out_of_memory(exc):
        return DatabaseMemoryError(
            f"database ran out of memory: {_first_line(str(exc))} (raise [database] memory_limit)"
        )
    return exc
