"""What callsync forgets: calls deleted upstream, retention, and the erasure of a caller.

- **Upstream deletions.** A window that was listed completely and verified (an unfiltered
  window the writer commits) says which calls exist in it. A call held for those days that
  the listing lacks moves from ``calls`` to ``deleted_calls`` in the same transaction
  (``mark_vanished``); one that is listed again moves back (``restore_listed``). Their
  media is removed afterwards, per ``[media] on_upstream_delete`` (``remove_deleted_media``).
- **Retention.** ``[media] keep_days`` and ``[sync] keep_days`` (``apply_retention``).
- **Erasure.** ``callsync forget`` removes a caller's or a call's rows everywhere and
  leaves a tombstone (a salted hash), so that a later listing that still has them is
  skipped at load time (``skip_forgotten``). See pipeline.forget.

Files are never removed inside a transaction: the rows removed queue their recordings
in ``files_to_remove``, and ``remove_queued_files`` deletes them once that committed (a
crash in between leaves the queue for the next run). Every removal writes a row of
``forget_audit``, with counts only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import duckdb
import pyarrow as pa

from pipeline import load
from pipeline.errors import MediaError
from pipeline.extract import Window
from pipeline.mediafiles import MediaFolder, disk_error

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.store import Store
    from pipeline.sync import RunPlan

log = logging.getLogger("callsync.erasure")

SALT_KEY = "tombstone_salt"
MEDIA_RETENTION_KEY = "media_retention_cutoff"
REWRITE_KEY = "rewrite_pending"  # since: rows with personal data were removed, the file not rewritten yet
REWRITE_AT_ONCE = "forget"  # the value of REWRITE_KEY after `callsync forget`: no waiting for the interval
LAST_REWRITE_KEY = "last_rewrite"
REWRITE_INTERVAL = timedelta(days=1)
_NOT_DIGITS = re.compile(r"[^0-9]")


# --- tombstones ------------------------------------------------------------------------


def caller_digits(number: str) -> str:
    """The digits of a phone number: '+1 (212) 555-1000' and '+12125551000' are one caller."""
    return _NOT_DIGITS.sub("", number)


def tombstone_hash(salt: str, value: str) -> str:
    """As the SQL computes it: sha256(salt || value), hex."""
    return hashlib.sha256((salt + value).encode()).hexdigest()


def _state(conn: duckdb.DuckDBPyConnection, key: str) -> str | None:
    """load.get_state, with the result read to its end (DuckDB refuses other work on the
    connection while a result is unfinished, e.g. conn.sql)."""
    rows = load.run_sql(conn, "get_state", key=key).fetchall()
    return rows[0][0] if rows else None


def salt(conn: duckdb.DuckDBPyConnection) -> str:
    """This database's tombstone salt, made on first use."""
    value = _state(conn, SALT_KEY)
    if value is None:
        value = secrets.token_hex(16)
        load.set_state(conn, SALT_KEY, value)
    return value


# --- at commit time (in the writer's transaction) --------------------------------------


@dataclass
class CommitChecks:
    """What a commit must check its batch against; looked up once per commit."""

    tombstones: int
    deleted_calls: int


def commit_checks(conn: duckdb.DuckDBPyConnection) -> CommitChecks:
    return CommitChecks(*load.run_sql(conn, "count_forgetting").fetchall()[0])


def skip_forgotten(conn: duckdb.DuckDBPyConnection, calls: pa.Table, rejected: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The batch without the calls and callers erased by `callsync forget` (and their rejected records)."""
    value = salt(conn)
    kept = []
    for table, statement in ((calls, "skip_forgotten_calls"), (rejected, "skip_forgotten_rejected")):
        if not table.num_rows:
            kept.append(table)
            continue
        conn.register("listed", table)
        try:
            query = load.read_sql(f"statements/{statement}.sql")
            kept.append(conn.sql(query, params={"salt": value}).to_arrow_table().cast(table.schema))
        finally:
            conn.unregister("listed")
    return kept[0], kept[1]


def restore_listed(conn: duckdb.DuckDBPyConnection, synced_at: datetime) -> dict[int, int]:
    """Calls deleted upstream that the batch (registered as `batch`) lists again move back
    into `calls`. Returns how many per window index."""
    return dict(load.run_sql(conn, "restore_listed_calls", synced_at=synced_at).fetchall())


def listed_range(start: date, end: date) -> tuple[datetime, datetime]:
    """The instants a window's listing covers: from its first day's midnight UTC to the
    midnight after its last day (exclusive). With ``end_date_inclusive = false`` the
    fetcher asks for end + 1 as the API's end, which covers the same days."""
    return (
        datetime.combine(start, time(), timezone.utc),
        datetime.combine(end + timedelta(days=1), time(), timezone.utc),
    )


def complete_windows(batches: Sequence[load.WindowBatch]) -> list[tuple[int, datetime, datetime]]:
    """The windows whose listing tells which calls exist: unfiltered, and with every
    rejected record identified (a record without an id might be any held call)."""
    windows = []
    for index, batch in enumerate(batches):
        if batch.scope == "" and batch.rejected.column("record_id").null_count == 0:
            windows.append((index, *listed_range(batch.start, batch.end)))
    return windows


def mark_vanished(
    conn: duckdb.DuckDBPyConnection,
    batches: Sequence[load.WindowBatch],
    calls: pa.Table,
    rejected: pa.Table,
    run_id: str,
    synced_at: datetime,
) -> dict[int, int]:
    """Calls held in a complete window's days that none of the commit's listings has move
    to `deleted_calls`. Returns how many per window index."""
    windows = complete_windows(batches)
    if not windows:
        return {}
    # Registered as they are: concatenating the ids here (drop_null, concat_arrays) imports
    # pyarrow.compute, +8 MB of RSS and ~40 ms on every run.
    tables = {
        "listed_calls": calls.select(["id", "started_at"]),
        "listed_rejected": rejected.select(["record_id"]),
        "listed_windows": pa.table(
            {
                "window_index": pa.array([window[0] for window in windows], pa.int32()),
                "range_start": pa.array([window[1] for window in windows], pa.timestamp("us", tz="UTC")),
                "range_end": pa.array([window[2] for window in windows], pa.timestamp("us", tz="UTC")),
            }
        ),
    }
    for name, table in tables.items():
        conn.register(name, table)
    low, high = min(window[1] for window in windows), max(window[2] for window in windows)
    try:
        held, listed = load.run_sql(conn, "count_listed_and_held", low=low, high=high).fetchall()[0]
        if held == listed:  # the usual case, found without reading the ids
            return {}
        deleted = load.run_sql(conn, "mark_vanished_calls", low=low, high=high).fetchall()
        if deleted:  # (the move costs a scan even when there is nothing to move)
            load.run_sql(conn, "move_vanished_calls", low=low, high=high, synced_at=synced_at, run_id=run_id)
    finally:
        for name in tables:
            conn.unregister(name)
    return dict(deleted)


def audit(
    conn: duckdb.DuckDBPyConnection, kind: str, run_id: str, *, calls: int, rows: int, files: int = 0,
    detail: dict[str, int] | None = None,
) -> None:
    load.run_sql(
        conn, "insert_audit", happened_at=load.utcnow(), kind=kind, run_id=run_id, calls=calls, rows=rows,
        files=files, detail=json.dumps(detail or {}),
    )


def audit_window_changes(
    conn: duckdb.DuckDBPyConnection, run_id: str, *, deleted: dict[int, int], restored: dict[int, int]
) -> None:
    for kind, per_window in (("upstream_delete", deleted), ("upstream_restore", restored)):
        moved = sum(per_window.values())
        if moved:
            audit(conn, kind, run_id, calls=moved, rows=moved, detail={"calls": moved})


# --- after commits: media of deleted calls, retention, files -----------------------------


MEDIA_TABLES = ("recording_files", "recordings", "transcript_segments", "media_jobs")


def remove_media_of_doomed(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """The media of the calls in temp table `doomed_calls`, inside the caller's transaction:
    rows removed per table; ``recording_files`` is the files queued for removal."""
    return dict(zip(MEDIA_TABLES, load.count_sql(conn, "remove_media_of", now=load.utcnow())))


@dataclass
class Removed:
    """What one tidy step removed, for the run summary (``as_summary``)."""

    recordings: int = 0
    transcripts: int = 0  # segments
    calls: int = 0
    files: int = 0

    def add_media(self, media: dict[str, int]) -> None:
        self.recordings += media["recordings"]
        self.transcripts += media["transcript_segments"]

    def as_summary(self) -> dict[str, int]:
        return {"recordings": self.recordings, "transcript_segments": self.transcripts, "calls": self.calls}


def remove_deleted_media(conn: duckdb.DuckDBPyConnection, run_id: str, removed: Removed) -> None:
    """[media] on_upstream_delete = "remove": the media of calls deleted upstream."""
    with load.transaction(conn):
        load.run_sql(conn, "doomed_deleted_media")
        calls = _doomed_count(conn)
        if not calls:
            return
        media = remove_media_of_doomed(conn)
        _audit_removal(conn, "upstream_delete_media", run_id, calls, media)
    removed.add_media(media)


def remove_old_media(conn: duckdb.DuckDBPyConnection, keep_days: int | None, run_id: str, removed: Removed) -> None:
    """[media] keep_days: media of calls that started before the cutoff."""
    if keep_days is None:
        if _state(conn, MEDIA_RETENTION_KEY) is not None:
            load.run_sql(conn, "delete_state", key=MEDIA_RETENTION_KEY)
        return
    cutoff = load.utcnow() - timedelta(days=keep_days)
    previous = _state(conn, MEDIA_RETENTION_KEY)
    since = datetime.fromisoformat(previous) if previous else datetime(1970, 1, 1, tzinfo=timezone.utc)
    with load.transaction(conn):
        load.run_sql(conn, "doomed_old_media", since=since, cutoff=cutoff)
        calls = _doomed_count(conn)
        media = remove_media_of_doomed(conn) if calls else {}
        if any(media.values()):
            _audit_removal(conn, "media_retention", run_id, calls, media)
        load.set_state(conn, MEDIA_RETENTION_KEY, cutoff.isoformat())
    if media:
        removed.add_media(media)


def remove_old_calls(conn: duckdb.DuckDBPyConnection, keep_days: int | None, run_id: str, removed: Removed) -> None:
    """[sync] keep_days: calls that started before the cutoff, with their media and rejected records."""
    if keep_days is None:
        return
    cutoff = load.utcnow() - timedelta(days=keep_days)
    with load.transaction(conn):
        load.run_sql(conn, "doomed_old_calls", cutoff=cutoff)
        calls = _doomed_count(conn)
        if not calls:
            return
        media = remove_media_of_doomed(conn)
        live, deleted, rejected = load.count_sql(conn, "remove_old_calls", cutoff=cutoff, cutoff_day=cutoff.date())
        detail = {**media, "calls": live, "deleted_calls": deleted, "rejected_records": rejected}
        _audit_removal(conn, "call_retention", run_id, calls, detail)
    removed.add_media(media)
    removed.calls += live + deleted


def _doomed_count(conn: duckdb.DuckDBPyConnection) -> int:
    return conn.execute("SELECT count(*) FROM doomed_calls").fetchall()[0][0]


def _audit_removal(conn: duckdb.DuckDBPyConnection, kind: str, run_id: str, calls: int, detail: dict[str, int]) -> None:
    files = detail.get("recording_files", 0)
    rows = sum(count for table, count in detail.items() if table != "recording_files")
    audit(conn, kind, run_id, calls=calls, rows=rows, files=files, detail=detail)
    load.set_state(conn, REWRITE_KEY, load.utcnow().isoformat())


def remove_queued_files(conn: duckdb.DuckDBPyConnection, media_dir: Path) -> int:
    """Delete the recording files whose rows are gone (files_to_remove), then their queue
    entries. A path that would resolve outside the media folder is dropped unremoved."""
    paths = [row[0] for row in load.run_sql(conn, "queued_files").fetchall()]
    if not paths:
        return 0
    folder = MediaFolder(media_dir)
    gone = 0
    for relative in paths:
        try:
            folder.resolve(relative).unlink(missing_ok=True)
            gone += 1
        except MediaError as exc:
            log.warning("not removing %s: %s", relative, exc)
        except OSError as exc:
            raise disk_error(exc, media_dir / relative) from None
    conn.register("removed_files", pa.table({"path": pa.array(paths, pa.string())}))
    try:
        load.run_sql(conn, "unqueue_files")
    finally:
        conn.unregister("removed_files")
    return gone


def tidy(conn: duckdb.DuckDBPyConnection, settings: Settings, run_id: str) -> Removed:
    """In the writer thread, at the start and the end of every run: retention, the media
    of calls deleted upstream, and the files whose rows are gone."""
    removed = Removed()
    remove_old_calls(conn, settings.sync.keep_days, run_id, removed)
    remove_old_media(conn, settings.media.keep_days, run_id, removed)
    if settings.media.on_upstream_delete == "remove":
        remove_deleted_media(conn, run_id, removed)
    removed.files = remove_queued_files(conn, settings.media.dir)
    return removed


def first_kept_day(keep_days: int) -> date:
    """The first day [sync] keep_days keeps (its calls from the cutoff's time of day on)."""
    return (load.utcnow() - timedelta(days=keep_days)).date()


def unexpired(planned: RunPlan, keep_days: int | None) -> RunPlan:
    """The run's days without those older than [sync] keep_days: older calls are not fetched again."""
    if keep_days is None:
        return planned
    first_kept = first_kept_day(keep_days)

    def clipped(windows: list[Window]) -> list[Window]:
        return [Window(max(window.start, first_kept), window.end) for window in windows if window.end >= first_kept]

    return dataclasses.replace(planned, ranges=clipped(planned.ranges), skipped=clipped(planned.skipped))


# --- the database file ---------------------------------------------------------------------


def rewrite_due(conn: duckdb.DuckDBPyConnection) -> bool:
    """Whether the run that ends should rewrite the file (``rewrite_database``). After a
    run that removed personal data (retention, media of calls deleted upstream): at most
    once per REWRITE_INTERVAL (a rewrite costs ~5 s per 200k calls with their media).
    `callsync forget` rewrites at once, and if that failed, the next run does."""
    pending, last = _state(conn, REWRITE_KEY), _state(conn, LAST_REWRITE_KEY)
    if pending is None:
        return False
    recent = last is not None and load.utcnow() - datetime.fromisoformat(last) < REWRITE_INTERVAL
    return pending == REWRITE_AT_ONCE or not recent


def rewrite_database(store: Store) -> None:
    """Rewrite the store so that no byte of erased rows is left (under the run lock, with no
    connection open), and publish the result: see ``Store.rewrite``."""
    store.rewrite(_record_rewrite)
    log.info("rewrote %s and published it", store.path, extra={"event": "database_rewritten"})


def _record_rewrite(conn: duckdb.DuckDBPyConnection) -> None:
    load.run_sql(conn, "delete_state", key=REWRITE_KEY)
    load.set_state(conn, LAST_REWRITE_KEY, load.utcnow().isoformat())
