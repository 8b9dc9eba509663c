"""`callsync status`: what the published snapshot says about past runs, read-only, and
how it stands beside the working database (when published, how far behind, sizes)."""

from __future__ import annotations

from datetime import timezone
from pathlib import Path
from typing import Any

import duckdb

from pipeline import clock
from pipeline.errors import DiskError
from pipeline.sqlfiles import MIGRATIONS_TABLE, run_sql
from pipeline.store import Store, as_store

WATERMARK_KEY = "watermark"  # pipeline.state.WATERMARK_KEY, without importing the sync's modules


def status(database: Path | str | Store) -> dict[str, Any]:
    store = as_store(database)
    with store.read_only() as conn:
        _require_callsync_tables(conn, store)
        watermark = run_sql(conn, "get_state", key=WATERMARK_KEY).fetchone()
        facts = {
            "database": str(store.path),
            "watermark": watermark[0] if watermark else None,
            "last_sync": run_sql(conn, "status_last_sync").fetchone()[0],
            "runs": _rows(run_sql(conn, "status_runs")),
            "counts": dict(run_sql(conn, "status_counts").fetchall()),
            "media": _media_counts(conn),
            "media_oldest_pending": _oldest_pending(conn),
        }
        facts.update(store.describe(conn))  # "snapshot" for a file, "lake" for a lake
    facts["runs"] = _died_runs_shown_interrupted(facts["runs"], store)
    return facts


def _require_callsync_tables(conn: duckdb.DuckDBPyConnection, store: Store) -> None:
    """A file at path that another tool made (opening a missing path read-write creates
    an empty database) has none of callsync's tables."""
    if MIGRATIONS_TABLE not in {row[0] for row in run_sql(conn, "user_tables").fetchall()}:
        raise DiskError(
            f"{store.path}: not a callsync database (no {MIGRATIONS_TABLE} table): another tool made it?"
            f" Remove it; the next run publishes the snapshot there"
        )


def _died_runs_shown_interrupted(runs: list[dict[str, Any]], store: Store) -> list[dict[str, Any]]:
    """A run still `running` while nobody holds the lock died (kill -9, power loss): the next
    run records it as interrupted; until then, status says so."""
    if not any(run["status"] == "running" for run in runs) or store.is_locked():
        return runs
    return [run | {"status": "interrupted"} if run["status"] == "running" else run for run in runs]


def _media_counts(conn: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    if not run_sql(conn, "status_has_media").fetchone()[0]:
        return {}
    return dict(run_sql(conn, "status_media").fetchall())


def _oldest_pending(conn: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    """The pending media job that has waited longest, and for how long (by callsync's clock)."""
    if not run_sql(conn, "status_has_media").fetchone()[0]:
        return None
    row = run_sql(conn, "status_media_oldest_pending").fetchone()
    if row is None:
        return None
    kind, call_id, since, misses = row
    since = since.astimezone(timezone.utc)
    return {"kind": kind, "call_id": call_id, "waiting_since": since, "misses": misses,
            "waiting_s": max(0, int((clock.now() - since).total_seconds()))}


def waited(seconds: int) -> str:
    """A wait as people say it: 3d 4h, 5h 12m, 7m, under a minute."""
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else "under a minute"


def _answers(misses: int) -> str:
    return "not asked yet" if not misses else f"{misses} not-ready answer{'s' if misses > 1 else ''}"


def _rows(relation: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    columns = [column[0] for column in relation.description]
    return [dict(zip(columns, row)) for row in relation.fetchall()]


def render_status(facts: dict[str, Any]) -> str:
    lines = [
        f"database:   {facts['database']}",
        *(_lake_lines(facts["lake"]) if "lake" in facts else _snapshot_lines(facts["snapshot"])),
        f"watermark:  {facts['watermark'] + ' (the last fully synced day)' if facts['watermark'] else 'none (no sync yet)'}",
        f"last sync:  {facts['last_sync'] or 'never'}",
        "rows:       " + ", ".join(f"{table} {count}" for table, count in facts["counts"].items()),
    ]
    if facts["media"]:
        lines.append("media:      " + ", ".join(f"{key} {value}" for key, value in facts["media"].items()))
    oldest = facts.get("media_oldest_pending")
    if oldest:
        lines.append(f"waiting:    oldest pending media waited {waited(oldest['waiting_s'])}"
                     f" ({oldest['kind']} of {oldest['call_id']}, since {oldest['waiting_since']:%Y-%m-%d %H:%M} UTC,"
                     f" {_answers(oldest['misses'])})")
    lines.append("recent runs:")
    for run in facts["runs"]:
        status = run["status"]
        line = (
            f"  {run['started_at']:%Y-%m-%d %H:%M:%S} {run['command']:<8} {status:<10}"
            f" windows {run['windows_done']} (failed {run['windows_failed']}),"
            f" new {run['calls_new']}, updated {run['calls_updated']}, rejected {run['rejected']},"
            f" requests {run['requests']}"
        )
        if run["listing_requests_per_100_calls"] is not None:
            line += f" ({run['listing_requests_per_100_calls']:.2f} listing requests per 100 calls)"
        if run["error"]:
            line += f" - {run['error']}"
        lines.append(line)
    return "\n".join(lines)


def _snapshot_lines(snapshot: dict[str, Any]) -> list[str]:
    published = snapshot["published_at"]
    if snapshot["working_bytes"] is None:
        behind = "no working database yet (the next run takes this file over)"
    elif not snapshot["behind_s"]:
        behind = "up to date with the working database"
    else:
        behind = f"the working database changed {snapshot['behind_s']:.0f}s after it" + (
            " (a run is going)" if snapshot["run_going"]
            else " and no run holds the lock: the last run died or could not publish; the next run publishes"
        )
    free = snapshot["free_bytes"]
    return [
        f"published:  {published:%Y-%m-%d %H:%M:%S}Z, {behind}",
        f"sizes:      snapshot {_mb(snapshot['published_bytes'])}, working database {_mb(snapshot['working_bytes'])}"
        + (f", previous snapshot {_mb(snapshot['previous_bytes'])} (removed at the next publish)" if snapshot["previous_bytes"] else "")
        + (f", {_mb(free)} free (publishing needs about the working database's size)" if free is not None else ""),
    ]


def _lake_lines(lake: dict[str, Any]) -> list[str]:
    snapshot = f"snapshot {lake['snapshot_id']} of {lake['snapshot_at']:%Y-%m-%d %H:%M:%S}Z" if lake["snapshot_at"] else "none"
    return [
        f"lake:       {snapshot}, {lake['data_files']} data files ({_mb(lake['data_bytes'])}) in {lake['data_path']}",
        f"writer:     {lake['writer'] or 'none (no run holds the schema)'}",
        "attach:     read it from the duckdb CLI or Python (read-only, any machine):",
        *(f"  {statement}" for statement in lake["attach"]),
    ]


def _mb(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:.1f} MB"
