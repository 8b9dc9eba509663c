"""DuckDB: migrations, columnar upserts, checkpoints. Knows nothing of HTTP.

The write side is one thread (``Writer``) that opens the file only while it
commits and closes it between groups of commits, so that an analyst's read-only
connection can get in during a long backfill. Each window's calls, its rejected
records and its checkpoint are one transaction: a crash loses nothing committed,
and a re-run upserts over what is there, so nothing is ever duplicated.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, partial
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import duckdb
import pyarrow as pa

from pipeline import clock, erasure
from pipeline.errors import DatabaseLockedError, DatabaseMemoryError, DiskError, command_hint
from pipeline.columns import CALL_SCHEMA, last_row_per_id

T = TypeVar("T")

MIGRATIONS_TABLE = "schema_migrations"
CHECKPOINT_THRESHOLD = "1GB"
# The writer's DuckDB works in the writer thread alone. With worker threads, each
# checkpoint ran in parallel tasks that took 100-190 MB more at a 1M-call table and
# three times as long, competing for the cores the event loop needs.
WRITER_THREADS = 1
# Once a run has stored this many calls, its checkpoints skip DuckDB's vacuum (see Writer).
# A cron sync of the lookback days stores far fewer.
VACUUM_BELOW_ROWS = 50_000
# The writer lets go of the file (see Writer) after this many rows, if hold_s has not come first.
MAX_HELD_ROWS = 40_000
LOCK_RETRY_S = 0.05

def sql_dir() -> Path:
    """sql/ beside the package in a checkout; inside it when installed as a wheel."""
    packaged = Path(__file__).parent / "sql"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "sql"


def read_sql(relative: str) -> str:
    return (sql_dir() / relative).read_text()


def run_sql(conn: duckdb.DuckDBPyConnection, name: str, **params: Any) -> duckdb.DuckDBPyConnection:
    """Run sql/statements/NAME.sql, one statement at a time, each with the parameters it names."""
    result = conn
    for query, names in _statements(name):
        result = conn.execute(query, {key: params[key] for key in names} or None)
    return result


@cache
def _statements(name: str) -> tuple[tuple[str, frozenset[str]], ...]:
    """Read and split a statement file once per process: the writer runs some on every commit."""
    return tuple(
        (statement.query, frozenset(statement.named_parameters))
        for statement in duckdb.extract_statements(read_sql(f"statements/{name}.sql"))
    )


def count_sql(conn: duckdb.DuckDBPyConnection, name: str, **params: Any) -> list[int]:
    """Run sql/statements/NAME.sql like run_sql; the rows each statement inserted or deleted."""
    counts = []
    for query, names in _statements(name):
        rows = conn.execute(query, {key: params[key] for key in names} or None).fetchall()
        counts.append(int(rows[0][0]) if rows else 0)
    return counts


def split_statements(script: str) -> list[str]:
    return [statement.query for statement in duckdb.extract_statements(script)]


def utcnow() -> datetime:
    return clock.now()


# --- connections and migrations ---------------------------------------------------


class Store:
    """The DuckDB file. Connections retry briefly while another process holds the lock."""

    def __init__(self, path: Path | str, *, lock_wait_s: float = 30.0):
        self.path = Path(path)
        self.lock_wait_s = lock_wait_s

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        conn = self.open(read_only=read_only)
        try:
            yield conn
        finally:
            conn.close()

    def open(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """A connection the caller closes; ``connect`` is the context-managed form."""
        if not read_only:
            _ensure_parent(self.path)
        elif not self.path.exists():
            raise DiskError(f"{self.path}: database does not exist yet (run `{command_hint('sync')}` first)")
        deadline = time.monotonic() + self.lock_wait_s
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                message = str(exc)
                if "lock" not in message.lower():
                    raise DiskError(f"{self.path}: {_first_line(message)}") from None
                if time.monotonic() >= deadline:
                    raise DatabaseLockedError(
                        f"{self.path}: database stayed locked by another process for {self.lock_wait_s:.0f}s"
                    ) from None
                time.sleep(LOCK_RETRY_S)

    def migrate(self) -> list[str]:
        with self.connect() as conn:
            return apply_migrations(conn)


def _ensure_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DiskError(f"{path.parent}: cannot create database folder: {exc.strerror}") from None


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else message


def apply_migrations(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply sql/migrations/NNN_*.sql in order, each once, recorded in schema_migrations."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name VARCHAR PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
    )
    applied = {row[0] for row in conn.execute(f"SELECT name FROM {MIGRATIONS_TABLE}").fetchall()}
    newly_applied = []
    for migration in sorted((sql_dir() / "migrations").glob("*.sql")):
        if migration.stem in applied:
            continue
        conn.execute("BEGIN TRANSACTION")
        for statement in split_statements(migration.read_text()):
            conn.execute(statement)
        conn.execute(f"INSERT INTO {MIGRATIONS_TABLE} VALUES (?, ?)", [migration.stem, utcnow()])
        conn.execute("COMMIT")
        newly_applied.append(migration.stem)
    return newly_applied


# --- writes (each runs in the writer thread, on an open connection) ----------------


@dataclass(frozen=True)
class WindowBatch:
    """One verified window, ready to commit."""

    scope: str
    start: date
    end: date
    calls: pa.Table
    rejected: pa.Table


@dataclass(frozen=True)
class CallCounts:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    deleted: int = 0  # held, but no longer listed upstream: moved to deleted_calls
    restored: int = 0  # deleted upstream before, listed again (also counted as updated or unchanged)


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    conn.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


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
        settled = _settled_windows(batches, clock.today())
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


def _settled_windows(batches: Sequence[WindowBatch], today: date) -> pa.Table:
    """The windows' checkpoints, through yesterday only: today can still get calls and later
    days have not happened, so neither is recorded as settled (the next run reads them again)."""
    last_settled = today - timedelta(days=1)
    settled = [batch for batch in batches if batch.start <= last_settled]
    return pa.table(
        {
            "scope": pa.array([batch.scope for batch in settled], pa.string()),
            "window_start": pa.array([batch.start for batch in settled], pa.date32()),
            "window_end": pa.array([min(batch.end, last_settled) for batch in settled], pa.date32()),
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
    ``commit_interval_s``; the windows of a group share one transaction. The file is held
    open across groups for at most ``hold_s``, then let go for ``reader_gap_s`` so that an
    analyst's read-only connection gets in during a long backfill (opening and closing
    per group would checkpoint every time, which grows with the table). The rows committed
    but not yet checkpointed stay in memory until then: at 200k calls, 1 s peaked ~7 MB
    lower than 1.5 s (and that ~10 MB lower than 3 s); 0.75 s saved little more and
    was ~10% slower, each letting go costing the writer a checkpoint and a reopen.
    ``max_pending_rows`` bounds what waits for the next commit. The group being committed
    does not count, so fetching goes on during a commit: at most twice
    ``max_pending_rows`` is held.

    Each checkpoint stores the rows since the last as a new row group, and DuckDB's vacuum
    merges small row groups by rewriting them: 100-190 MB for a moment, whenever a row
    group's worth had gathered. So once a run has stored ``vacuum_below_rows`` calls, its
    checkpoints skip the vacuum: the frequent small syncs keep the table compact, and a
    big backfill leaves row groups of what it committed between letting go (~10-100k rows).

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
        hold_s: float = 1.0,
        max_held_rows: int = MAX_HELD_ROWS,
        reader_gap_s: float = 0.25,
        vacuum_below_rows: int = VACUUM_BELOW_ROWS,
    ):
        self.store = store
        self.run_id = run_id
        self.after_windows = after_windows
        self.commit_interval_s = commit_interval_s
        self.max_pending_rows = max_pending_rows
        self.memory_limit = memory_limit
        self.hold_s = hold_s
        self.max_held_rows = max_held_rows
        self.reader_gap_s = reader_gap_s
        self.vacuum_below_rows = vacuum_below_rows
        self._rows_stored = 0
        self._rows_held = 0  # committed since the file was taken: in DuckDB's memory until let go
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._opened_at = 0.0
        self._released_at = 0.0
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
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await asyncio.shield(self._task)
        self._executor.submit(self._release).result()
        self._executor.shutdown(wait=True)

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
        the held connection, opening it first if needed; let it go once held long enough."""
        results: list[tuple[bool, Any]] = []
        try:
            conn = self._connection()
            for run in _consecutive_runs(works):
                results.extend(
                    self._run_windows(conn, run)
                    if isinstance(run[0], WindowBatch)
                    else [self._run_one(conn, work) for work in run]
                )
            if self._closing or self._held_enough():
                self._release()
        except BaseException as exc:  # opening or closing failed: every unfinished item fails with it
            self._failure = self._failure or _as_store_error(exc)
            results.extend((False, self._failure) for _ in works[len(results):])
        return results

    def _held_enough(self) -> bool:
        return self._rows_held >= self.max_held_rows or time.monotonic() - self._opened_at >= self.hold_s

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._conn is None:
            # After letting go, leave readers a moment to get in before taking the file again.
            time.sleep(max(0.0, self._released_at + self.reader_gap_s - time.monotonic()))
            self._conn = self.store.open()
            # Letting go of the file every hold_s checkpoints anyway; DuckDB's default (a
            # checkpoint whenever the WAL passes 16 MB) made most commits checkpoint too.
            self._conn.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
            self._conn.execute(f"SET threads = {WRITER_THREADS}")
            if self.memory_limit:  # validated by config: digits and a unit
                self._conn.execute(f"SET memory_limit = '{self.memory_limit}'")
            self._opened_at = time.monotonic()
        return self._conn

    def _release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._rows_held = 0
            self._released_at = time.monotonic()
            if self._rows_stored >= self.vacuum_below_rows:
                conn.execute("SET max_vacuum_tasks = 0")  # for the checkpoint that closing makes
            conn.close()

    def _run_windows(self, conn: duckdb.DuckDBPyConnection, batches: list[WindowBatch]) -> list[tuple[bool, Any]]:
        then = partial(self.after_windows, batches=batches) if self.after_windows else None
        outcome = self._run_one(conn, partial(commit_windows, batches=batches, run_id=self.run_id, then=then))
        ok, value = outcome
        if not ok:
            return [outcome] * len(batches)
        rows = sum(batch.calls.num_rows for batch in batches)
        self._rows_stored += rows
        self._rows_held += rows
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
    if isinstance(exc, duckdb.OutOfMemoryException) or (
        isinstance(exc, duckdb.Error) and "could not allocate" in str(exc)  # e.g. on COMMIT
    ):
        return DatabaseMemoryError(
            f"database ran out of memory: {_first_line(str(exc))} (raise [database] memory_limit)"
        )
    return exc
