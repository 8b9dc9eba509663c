"""Comparing a callsync database with the sandbox's data, field by field."""

from __future__ import annotations

from datetime import date, timezone
from pathlib import Path

import duckdb

CALL_FIELDS = (
    "id tracking_number caller_number duration_seconds outcome campaign_id affiliate_id source "
    "caller_city caller_state recording_url transcript_url sentiment started_at"
).split()


def stored_calls(database: Path | duckdb.DuckDBPyConnection) -> dict[str, dict]:
    """The calls of a DuckDB file, or of the tables a connection reads by default (a lake's schema)."""
    if isinstance(database, duckdb.DuckDBPyConnection):
        rows = database.execute(f"SELECT {', '.join(CALL_FIELDS)} FROM calls").fetchall()
    else:
        with duckdb.connect(str(database), read_only=True) as conn:
            rows = conn.execute(f"SELECT {', '.join(CALL_FIELDS)} FROM calls").fetchall()
    calls = {}
    for row in rows:
        call = dict(zip(CALL_FIELDS, row))
        call["started_at"] = call["started_at"].astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        calls[call["id"]] = call
    assert len(calls) == len(rows), "duplicate ids in calls"
    return calls


def sandbox_calls(data, start: date | None = None, end: date | None = None) -> dict[str, dict]:
    return {call["id"]: {field: call[field] for field in CALL_FIELDS} for call in data.calls_between(start, end)}


def assert_same_calls(database: Path | duckdb.DuckDBPyConnection, data, start: date | None = None, end: date | None = None) -> None:
    stored, expected = stored_calls(database), sandbox_calls(data, start, end)
    missing, extra = expected.keys() - stored.keys(), stored.keys() - expected.keys()
    assert not missing and not extra, f"{len(missing)} missing, {len(extra)} extra"
    different = [call_id for call_id in expected if stored[call_id] != expected[call_id]]
    assert not different, f"{len(different)} differ, e.g. {stored[different[0]]} != {expected[different[0]]}"


def scalar(database: Path, sql: str, params: list | None = None):
    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(sql, params or []).fetchone()[0]


def scalar_rows(database: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(sql, params or []).fetchall()
