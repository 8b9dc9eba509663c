"""`callsync forget`: erase a caller or a call from every copy callsync controls.

One transaction removes the calls (live or deleted upstream), their recordings' rows,
transcript segments, media jobs and rejected records, and leaves a tombstone per number
or id (pipeline.erasure), so that a later sync or backfill skips them. Then the recording
files and the media folder's temp files go, and the database file is rewritten: DuckDB
keeps freed blocks in its file, so without the rewrite the erased bytes could stay in it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from pipeline import erasure, load
from pipeline.config import Settings
from pipeline.errors import DiskError, UsageError
from pipeline.mediafiles import MediaFolder
from pipeline.sync import new_run_id

log = logging.getLogger("callsync.forget")

@dataclass
class ForgetSummary:
    run_id: str
    calls: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    files: int = 0
    temp_files: int = 0
    tombstones: int = 0

    def line(self) -> str:
        rows = self.rows
        return (
            f"forget ok: {self.calls} calls ({rows.get('calls', 0)} held, {rows.get('deleted_calls', 0)} deleted upstream),"
            f" {rows.get('recordings', 0)} recordings ({self.files} files), {rows.get('transcript_segments', 0)}"
            f" transcript segments, {rows.get('media_jobs', 0)} media jobs, {rows.get('rejected_records', 0)}"
            f" rejected records removed; {self.tombstones} tombstones added; database rewritten"
        )


def forget_values(caller_numbers: list[str], call_ids: list[str]) -> list[tuple[str, str]]:
    """(kind, value) pairs: a number by its digits, an id as given."""
    values = []
    for number in caller_numbers:
        digits = erasure.caller_digits(number)
        if len(digits) < 7:
            raise UsageError(f"--caller-number: {number!r} is not a phone number (e.g. +12125551000)")
        values.append(("caller_number", digits))
    for call_id in call_ids:
        if not call_id.strip():
            raise UsageError("--call-id: empty id")
        values.append(("call_id", call_id))
    if not values:
        raise UsageError("give --caller-number or --call-id (repeatable), or --list")
    return sorted(set(values))


def forget(settings: Settings, caller_numbers: list[str], call_ids: list[str]) -> ForgetSummary:
    values = forget_values(caller_numbers, call_ids)
    summary = ForgetSummary(new_run_id())
    store = settings.database.store()
    if not store.exists():
        raise DiskError(f"{store.path}: database does not exist yet (nothing to forget)")
    with store.lock():
        conn = store.open()
        try:
            load.apply_migrations(conn)
            args = {"caller_numbers": len(caller_numbers), "call_ids": len(call_ids)}  # never the values
            load.start_run(conn, summary.run_id, "forget", args)
            _erase(conn, values, summary)
            summary.files = erasure.remove_queued_files(conn, settings.media.dir)
            summary.temp_files = _empty_media_temp(settings.media.dir)
            load.finish_run(conn, summary.run_id, "ok", {"calls": summary.calls, **summary.rows}, None)
        finally:
            conn.close()
        erasure.rewrite_database(store)
    return summary


def _erase(conn: duckdb.DuckDBPyConnection, values: list[tuple[str, str]], summary: ForgetSummary) -> None:
    table = pa.table({"kind": [kind for kind, _ in values], "value": [value for _, value in values]})
    with load.transaction(conn):
        salt = erasure.salt(conn)
        conn.register("forget_values", table)
        try:
            load.run_sql(conn, "doomed_forgotten")
            media = erasure.remove_media_of_doomed(conn)
            calls, deleted, rejected, tombstones = load.count_sql(
                conn, "remove_forgotten", salt=salt, now=load.utcnow(), run_id=summary.run_id
            )
        finally:
            conn.unregister("forget_values")
        summary.calls = calls + deleted
        summary.rows = {"calls": calls, "deleted_calls": deleted, **media, "rejected_records": rejected}
        summary.tombstones = tombstones
        rows = sum(count for name, count in summary.rows.items() if name != "recording_files")
        erasure.audit(
            conn, "forget", summary.run_id, calls=summary.calls, rows=rows, files=media["recording_files"],
            detail={**summary.rows, "tombstones": tombstones},
        )
        # Should the rewrite below fail (an analyst's session holding the file), the next run does it.
        load.set_state(conn, erasure.REWRITE_KEY, erasure.REWRITE_AT_ONCE)


def _empty_media_temp(media_dir: Path) -> int:
    """Partial downloads of a killed run could hold an erased recording."""
    if not media_dir.is_dir():
        return 0
    folder = MediaFolder(media_dir)
    removed = folder.prepare()  # the temp files of runs that are gone (we hold the run lock: all)
    folder.clean_temp()
    return removed


def list_tombstones(settings: Settings) -> list[tuple]:
    with settings.database.store().read_only() as conn:
        tables = {row[0] for row in load.run_sql(conn, "user_tables").fetchall()}
        return load.run_sql(conn, "list_tombstones").fetchall() if "tombstones" in tables else []
