"""What must be forgotten is forgotten: upstream deletions, retention, erasure (real CLI, real sandbox)."""

from __future__ import annotations

import glob
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import duckdb
import pytest

from pipeline.sandbox import Faults, SandboxData, run_sandbox
from tests.conftest import run_cli, write_config
from tests.dbcheck import assert_same_calls, scalar


@pytest.fixture
def tiny_data() -> SandboxData:
    return SandboxData.generate(seed=11, calls=300, days=5)


@pytest.fixture
async def tiny_sandbox(tiny_data):
    async with run_sandbox(data=tiny_data, faults=Faults(), host="127.0.0.1", port=0) as running:
        yield running


async def admin(sandbox, hook: str, **body) -> list[str]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{sandbox.base_url}/_admin/{hook}", json=body) as response:
            assert response.status == 200, await response.text()
            return (await response.json())["ids"]


def rows(database: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(sql, params or []).fetchall()


def recorded_calls(database: Path, count: int) -> list[tuple[str, str]]:
    """(call id, recording path) of calls with a recording and a transcript."""
    return rows(
        database,
        "SELECT r.call_id, r.path FROM recordings r SEMI JOIN transcript_segments t ON t.call_id = r.call_id "
        "ORDER BY r.call_id LIMIT ?",
        [count],
    )


def media_rows(database: Path, call_ids: list[str]) -> int:
    return sum(
        scalar(database, f"SELECT count(*) FROM {table} WHERE list_contains(?, call_id)", [call_ids])
        for table in ("recordings", "transcript_segments", "media_jobs")
    )


async def test_a_call_deleted_upstream_is_marked_deleted_with_its_media_removed_and_comes_back(tiny_sandbox, tiny_data, tmp_path):
    write_config(tmp_path, tiny_sandbox.base_url, sync={"start_date": str(tiny_data.first_day)})
    database = tmp_path / "callsync.duckdb"
    assert (await run_cli("sync", cwd=tmp_path)).code == 0
    held = scalar(database, "SELECT count(*) FROM calls")
    victims = recorded_calls(database, 2)
    ids = [call_id for call_id, _ in victims]
    assert await admin(tiny_sandbox, "delete_calls", ids=ids) == ids

    result = await run_cli("sync", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert "2 deleted upstream / 0 restored" in result.stdout
    assert scalar(database, "SELECT count(*) FROM calls") == held - 2
    assert sorted(row[0] for row in rows(database, "SELECT id FROM deleted_calls WHERE deleted_at IS NOT NULL")) == ids
    assert scalar(database, "SELECT count(*) FROM calls_enriched WHERE list_contains(?, id)", [ids]) == 0
    assert scalar(database, "SELECT count(*) FROM call_transcripts WHERE list_contains(?, call_id)", [ids]) == 0
    assert media_rows(database, ids) == 0
    assert not any((tmp_path / "media" / path).exists() for _, path in victims)
    audit = rows(database, "SELECT kind, calls, files FROM forget_audit ORDER BY audit_id")
    assert audit == [("upstream_delete", 2, 0), ("upstream_delete_media", 2, 2)]
    assert all(call_id not in str(rows(database, "SELECT * FROM forget_audit")) for call_id in ids)

    assert await admin(tiny_sandbox, "restore_calls", ids=ids[:1]) == ids[:1]
    result = await run_cli("sync", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert "0 deleted upstream / 1 restored" in result.stdout
    assert scalar(database, "SELECT count(*) FROM calls WHERE id = ?", [ids[0]]) == 1
    assert [row[0] for row in rows(database, "SELECT id FROM deleted_calls")] == ids[1:]
    # Its media is planned and fetched again.
    assert scalar(database, "SELECT count(*) FROM recordings WHERE call_id = ?", [ids[0]]) == 1
    assert (tmp_path / "media" / victims[0][1]).exists()


async def test_keep_leaves_the_media_of_a_deleted_call(tiny_sandbox, tiny_data, tmp_path):
    write_config(
        tmp_path, tiny_sandbox.base_url, sync={"start_date": str(tiny_data.first_day)},
        media={"on_upstream_delete": "keep"},
    )
    database = tmp_path / "callsync.duckdb"
    assert (await run_cli("sync", cwd=tmp_path)).code == 0
    [(call_id, path)] = recorded_calls(database, 1)
    await admin(tiny_sandbox, "delete_calls", ids=[call_id])
    assert (await run_cli("sync", cwd=tmp_path)).code == 0
    assert scalar(database, "SELECT count(*) FROM deleted_calls WHERE id = ?", [call_id]) == 1
    assert scalar(database, "SELECT count(*) FROM recordings WHERE call_id = ?", [call_id]) == 1
    assert (tmp_path / "media" / path).exists()


async def test_a_window_that_did_not_converge_deletes_nothing(tiny_data, tmp_path):
    faults = Faults()
    async with run_sandbox(data=tiny_data, faults=faults, host="127.0.0.1", port=0) as sandbox:
        write_config(
            tmp_path, sandbox.base_url, sync={"start_date": str(tiny_data.first_day), "per_page": 10, "max_window_tries": 1}
        )
        database = tmp_path / "callsync.duckdb"
        assert (await run_cli("sync", "--no-media", cwd=tmp_path)).code == 0
        held = {call_id for (call_id,) in rows(database, "SELECT id FROM calls")}
        await admin(sandbox, "delete_calls", count=3, day=str(tiny_data.today - timedelta(days=1)))
        faults.update(drift_rate=1.0)  # every page sees a late call land: no listing of many pages is complete
        result = await run_cli("sync", "--no-media", cwd=tmp_path)
        assert result.code == 1 and "failed" in result.stdout
        assert held <= {call_id for (call_id,) in rows(database, "SELECT id FROM calls")}  # (a one-page day may commit)
        assert scalar(database, "SELECT count(*) FROM deleted_calls") == 0
        assert scalar(database, "SELECT count(*) FROM forget_audit") == 0


async def test_a_run_cut_short_by_its_budget_deletes_nothing(tiny_sandbox, tiny_data, tmp_path):
    write_config(tmp_path, tiny_sandbox.base_url, sync={"start_date": str(tiny_data.first_day), "per_page": 10})
    database = tmp_path / "callsync.duckdb"
    assert (await run_cli("sync", "--no-media", cwd=tmp_path)).code == 0
    await admin(tiny_sandbox, "delete_calls", count=3, day=str(tiny_data.today - timedelta(days=1)))
    write_config(
        tmp_path, tiny_sandbox.base_url, sync={"start_date": str(tiny_data.first_day), "per_page": 10},
        api={"max_requests_per_run": 4},
    )
    result = await run_cli("sync", "--no-media", cwd=tmp_path)
    assert result.code == 0 and "paused: request budget" in result.stdout
    assert scalar(database, "SELECT count(*) FROM deleted_calls") == 0


async def logged_requests(sandbox) -> list[dict]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{sandbox.base_url}/_admin/requests") as response:
            return await response.json()


async def test_retention_removes_old_media_and_calls_and_never_fetches_them_again(tiny_sandbox, tiny_data, tmp_path):
    start = str(tiny_data.first_day)
    write_config(tmp_path, tiny_sandbox.base_url, sync={"start_date": start})
    database = tmp_path / "callsync.duckdb"
    assert (await run_cli("sync", cwd=tmp_path)).code == 0
    old_files = [path for (path,) in rows(database, "SELECT path FROM recordings")]

    # Media kept 2 days, calls 3: the oldest calls go with their media, the middle ones keep only their rows.
    write_config(tmp_path, tiny_sandbox.base_url, sync={"start_date": start, "keep_days": 3}, media={"keep_days": 2})
    now = datetime.now(timezone.utc).replace(microsecond=0)  # callsync's clock, pinned: the cutoffs are exact
    pinned = {"CALLSYNC_NOW": now.isoformat()}
    result = await run_cli("backfill", "--start", start, "--end", str(tiny_data.today), "--force", cwd=tmp_path, env=pinned)
    assert result.code == 0, result.stderr
    assert "removed" in result.stdout and "calls" in result.stdout
    call_cut = f"TIMESTAMPTZ '{now - timedelta(days=3)}'"
    assert scalar(database, f"SELECT count(*) FROM calls WHERE started_at < {call_cut}") == 0
    assert scalar(database, "SELECT count(*) FROM calls") > 0
    media_cut = f"TIMESTAMPTZ '{now - timedelta(days=2)}'"
    for table in ("recordings", "transcript_segments", "media_jobs"):
        assert scalar(
            database, f"SELECT count(*) FROM {table} t JOIN calls c ON c.id = t.call_id WHERE c.started_at < {media_cut}"
        ) == 0, table
        assert scalar(database, f"SELECT count(*) FROM {table} WHERE call_id NOT IN (SELECT id FROM calls)") == 0
    kept_files = {path for (path,) in rows(database, "SELECT path FROM recordings")}
    assert kept_files and all((tmp_path / "media" / path).exists() == (path in kept_files) for path in old_files)
    kinds = {kind for (kind,) in rows(database, "SELECT kind FROM forget_audit")}
    assert kinds == {"call_retention", "media_retention"}
    # The file was rewritten after the removal (freed blocks hold no old transcript).
    assert scalar(database, "SELECT count(*) FROM sync_state WHERE key = 'last_rewrite'") == 1
    assert scalar(database, "SELECT count(*) FROM sync_state WHERE key = 'rewrite_pending'") == 0

    # Fetched again: no old day's listing, no old call's media.
    async with aiohttp.ClientSession() as session:
        await session.delete(f"{tiny_sandbox.base_url}/_admin/requests")
    result = await run_cli("backfill", "--start", start, "--end", str(tiny_data.today), "--force", cwd=tmp_path, env=pinned)
    assert result.code == 0, result.stderr
    assert scalar(database, f"SELECT count(*) FROM calls WHERE started_at < {call_cut}") == 0
    requests = await logged_requests(tiny_sandbox)
    first_kept_day = str((now - timedelta(days=3)).date())
    listed_days = [record["query"]["end_date"] for record in requests if record["path"].endswith("/calls")]
    assert listed_days and min(listed_days) >= first_kept_day
    media_cutoff = (now - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    old_ids = {call["id"] for call in tiny_data.calls_between(None, None) if call["started_at"] < media_cutoff}
    media_paths = [record["path"] for record in requests if record["path"].endswith(("/recording", "/transcript"))]
    assert not [path for path in media_paths if path.split("/")[-2] in old_ids]


async def test_forget_a_caller_leaves_nothing_and_a_backfill_does_not_bring_them_back(tiny_sandbox, tiny_data, tmp_path):
    start, end = str(tiny_data.first_day), str(tiny_data.today)
    # A name with glob characters: the snapshots beside it are still found and removed.
    name = "calls [prod].duckdb"
    write_config(tmp_path, tiny_sandbox.base_url, sync={"start_date": start}, database={"path": name})
    database = tmp_path / name
    calls = tiny_data.calls_between(None, None)
    recorded = next(call for call in calls if call["recording_url"] and call["started_at"] < end)
    number = recorded["caller_number"]
    # Another call from the same number, served malformed: a rejected record holds the number too.
    other = next(call for call in calls if call["id"] != recorded["id"] and not call["recording_url"])
    tiny_data.override_call(other["id"], caller_number=number, duration_seconds="long")
    result = await run_cli("sync", cwd=tmp_path)
    assert result.code == 1 and "1 rejected" in result.stdout  # the malformed one
    assert scalar(database, "SELECT error FROM runs ORDER BY started_at DESC LIMIT 1") == (
        "1 rejected records (see rejected_records)"  # what `status` shows beside the failed run
    )
    assert scalar(database, "SELECT count(*) FROM rejected_records WHERE record_id = ?", [other["id"]]) == 1
    [(path,)] = rows(database, "SELECT path FROM recordings WHERE call_id = ?", [recorded["id"]])
    assert scalar(database, "SELECT count(*) FROM transcript_segments WHERE call_id = ?", [recorded["id"]]) > 0
    assert number.encode() in database.read_bytes()  # so that its absence below means something
    assert number.encode() in (tmp_path / ".callsync" / name).read_bytes()

    refused = await run_cli("forget", "--caller-number", number, cwd=tmp_path)
    assert refused.code == 2 and "--yes" in refused.stderr
    result = await run_cli("forget", "--caller-number", number, "--yes", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert "forget ok: 1 calls" in result.stdout and "1 rejected records" in result.stdout
    assert number not in result.stdout + result.stderr

    def assert_forgotten() -> None:
        for table, column in (("calls", "caller_number"), ("deleted_calls", "caller_number")):
            assert scalar(database, f"SELECT count(*) FROM {table} WHERE {column} = ?", [number]) == 0
        assert media_rows(database, [recorded["id"], other["id"]]) == 0
        assert scalar(database, "SELECT count(*) FROM rejected_records WHERE raw::VARCHAR LIKE ?", [f"%{number}%"]) == 0
        assert not (tmp_path / "media" / path).exists()
        # The published file, the working database and everything beside them (snapshots, logs, temp files).
        files = [database, *tmp_path.glob(glob.escape(name) + "*"), *(tmp_path / ".callsync").iterdir()]
        assert (tmp_path / ".callsync" / name) in files
        assert not [file for file in files if file.is_file() and number.encode() in file.read_bytes()]

    assert_forgotten()
    # The rewrite (a fresh copy of the contents) keeps what the schema says of itself.
    assert scalar(database, "SELECT comment FROM duckdb_tables() WHERE table_name = 'tombstones'")
    assert scalar(database, "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'calls' AND comment IS NULL") == 0
    [(kind, forgotten_calls, files, detail)] = rows(database, "SELECT kind, calls, files, detail FROM forget_audit")
    assert (kind, forgotten_calls, files) == ("forget", 1, 1)
    assert number not in detail and recorded["id"] not in detail

    tiny_data.overrides[other["id"]] = {"caller_number": number}  # the vendor now serves it well formed
    result = await run_cli("backfill", "--start", start, "--end", end, "--force", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert_forgotten()
    assert scalar(database, "SELECT count(*) FROM calls WHERE list_contains(?, id)", [[recorded["id"], other["id"]]]) == 0

    listed = await run_cli("forget", "--list", cwd=tmp_path)
    assert listed.code == 0 and "caller_number" in listed.stdout and "(1 tombstone)" in listed.stdout
    assert number not in listed.stdout and erasure_digits(number) not in listed.stdout


def erasure_digits(number: str) -> str:
    return "".join(character for character in number if character.isdigit())


async def test_forget_a_call_by_id(tiny_sandbox, tiny_data, tmp_path):
    write_config(tmp_path, tiny_sandbox.base_url, sync={"start_date": str(tiny_data.first_day)})
    database = tmp_path / "callsync.duckdb"
    assert (await run_cli("sync", "--no-media", cwd=tmp_path)).code == 0
    first, second = [call_id for (call_id,) in rows(database, "SELECT id FROM calls ORDER BY id LIMIT 2")]
    result = await run_cli("forget", "--call-id", first, "--call-id", second, "--yes", cwd=tmp_path)
    assert result.code == 0 and "forget ok: 2 calls" in result.stdout
    assert (await run_cli("sync", "--no-media", cwd=tmp_path)).code == 0
    assert scalar(database, "SELECT count(*) FROM calls WHERE list_contains(?, id)", [[first, second]]) == 0
    assert scalar(database, "SELECT count(*) FROM deleted_calls") == 0  # skipped at load, not "deleted upstream"


async def test_forget_works_on_the_working_database_when_path_is_gone(tiny_sandbox, tiny_data, tmp_path):
    # `path` removed, or dangling: the data are still in .callsync/, and the next run would publish them.
    write_config(tmp_path, tiny_sandbox.base_url, sync={"start_date": str(tiny_data.first_day)})
    database = tmp_path / "callsync.duckdb"
    assert (await run_cli("sync", "--no-media", cwd=tmp_path)).code == 0
    [(call_id,)] = rows(database, "SELECT id FROM calls ORDER BY id LIMIT 1")
    for snapshot in (tmp_path / ".callsync").glob("*.snapshot-*"):
        snapshot.unlink()
    assert database.is_symlink() and not database.exists()
    result = await run_cli("forget", "--call-id", call_id, "--yes", cwd=tmp_path)
    assert result.code == 0 and "forget ok: 1 calls" in result.stdout, result.stderr
    assert scalar(database, "SELECT count(*) FROM calls WHERE id = ?", [call_id]) == 0  # published again
    assert (await run_cli("sync", "--no-media", cwd=tmp_path)).code == 0
    assert scalar(database, "SELECT count(*) FROM calls WHERE id = ?", [call_id]) == 0
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    write_config(fresh, tiny_sandbox.base_url)
    nothing = await run_cli("forget", "--call-id", call_id, "--yes", cwd=fresh)
    assert nothing.code == 1 and "database does not exist yet (nothing to forget)" in nothing.stderr
    assert not list(fresh.rglob("*.duckdb*"))


async def test_verify_finds_what_sync_cannot_and_mends_it_at_the_lowest_cost(tmp_path):
    tiny_data = SandboxData.generate(seed=11, calls=400, days=8)  # more days than the lookback
    async with run_sandbox(data=tiny_data, faults=Faults(), host="127.0.0.1", port=0) as tiny_sandbox:
        await verify_and_mend(tiny_sandbox, tiny_data, tmp_path)


async def verify_and_mend(tiny_sandbox, tiny_data, tmp_path) -> None:
    start = tiny_data.first_day
    write_config(tmp_path, tiny_sandbox.base_url, sync={"start_date": str(start), "per_page": 20})
    database = tmp_path / "callsync.duckdb"
    assert (await run_cli("sync", "--no-media", cwd=tmp_path)).code == 0
    # Outside the lookback: a call deleted upstream, and one lost locally.
    [deleted] = await admin(tiny_sandbox, "delete_calls", count=1, day=str(start))
    [(lost,)] = rows(database, "SELECT id FROM calls WHERE timezone('UTC', started_at)::DATE = ? ORDER BY id LIMIT 1", [start + timedelta(days=1)])
    with duckdb.connect(str(tmp_path / ".callsync" / "callsync.duckdb")) as conn:  # the working database
        conn.execute("DELETE FROM calls WHERE id = ?", [lost])
    assert (await run_cli("sync", "--no-media", cwd=tmp_path)).code == 0
    assert scalar(database, "SELECT count(*) FROM deleted_calls") == 0  # the lookback does not see it

    async with aiohttp.ClientSession() as session:
        await session.delete(f"{tiny_sandbox.base_url}/_admin/requests")
    result = await run_cli("verify", "--dry-run", "--no-progress", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert "verify: 8 windows checked by their first page" in result.stdout and ", 2 listed in full," in result.stdout
    assert "1 missing, 0 changed, 1 deleted upstream, 0 restored would be mended (dry run" in result.stdout
    listings = [record for record in await logged_requests(tiny_sandbox) if record["path"].endswith("/calls")]
    pages = {day: -(-len(tiny_data.calls_between(day, day)) // 20) for day in (start, start + timedelta(days=1))}
    assert len(listings) == 8 + sum(pages.values()) - 2  # page 1 of each window, the rest of the two that differ
    assert scalar(database, "SELECT count(*) FROM deleted_calls") == 0
    assert scalar(database, "SELECT count(*) FROM calls WHERE id = ?", [lost]) == 0

    write_config(tmp_path, tiny_sandbox.base_url, sync={"start_date": str(start)})  # a page holds a day: ids compared
    changed = await admin(tiny_sandbox, "mutate", count=2, within_days=3)  # not the two days above
    result = await run_cli("verify", "--no-progress", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert f"1 missing, {len(changed)} changed, 1 deleted upstream, 0 restored were mended" in result.stdout
    assert [row[0] for row in rows(database, "SELECT id FROM deleted_calls")] == [deleted]
    assert_same_calls(database, tiny_data)


async def test_verify_full_finds_a_call_missing_where_another_is_extra(tmp_path):
    # A deletion and a late arrival on one old day (outside the lookback) leave its count as
    # it was: the race of a window paged while both happen ends the same way. Only reading
    # the day's ids tells.
    tiny_data = SandboxData.generate(seed=12, calls=600, days=6)  # ~100 calls a day: more than a page of 20
    async with run_sandbox(data=tiny_data, faults=Faults(), host="127.0.0.1", port=0) as tiny_sandbox:
        start = tiny_data.first_day
        write_config(tmp_path, tiny_sandbox.base_url, sync={"start_date": str(start), "per_page": 20, "lookback_days": 1})
        database = tmp_path / "callsync.duckdb"
        assert (await run_cli("sync", "--no-media", cwd=tmp_path)).code == 0
        [deleted] = await admin(tiny_sandbox, "delete_calls", count=1, day=str(start))
        [arrived] = await admin(tiny_sandbox, "add_calls", count=1, day=str(start))

        quick = await run_cli("verify", "--dry-run", "--no-progress", cwd=tmp_path)
        assert quick.code == 0, quick.stderr
        assert "0 missing, 0 changed, 0 deleted upstream" in quick.stdout  # the totals match
        full = await run_cli("verify", "--full", "--no-progress", cwd=tmp_path)
        assert full.code == 0, full.stderr
        assert ", 0 matched by their totals; 1 missing, 0 changed, 1 deleted upstream, 0 restored were mended" in full.stdout
        assert [row[0] for row in rows(database, "SELECT id FROM deleted_calls")] == [deleted]
        assert scalar(database, "SELECT count(*) FROM calls WHERE id = ?", [arrived]) == 1
        assert_same_calls(database, tiny_data)

        # [sync] keep_days: verify leaves the days before it alone, as sync and backfill do.
        write_config(tmp_path, tiny_sandbox.base_url, sync={"start_date": str(start), "per_page": 20, "keep_days": 2})
        kept = await run_cli("verify", "--full", "--dry-run", "--no-progress", cwd=tmp_path)
        assert kept.code == 0, kept.stderr
        assert "0 missing, 0 changed, 0 deleted upstream" in kept.stdout, kept.stdout


def test_verify_groups_days_by_the_calls_held():
    from datetime import date

    from pipeline.extract import Window
    from pipeline.verify import verify_windows

    day = date(2026, 3, 1)
    held = {day: 30, day + timedelta(days=1): 40, day + timedelta(days=2): 500, day + timedelta(days=4): 10}
    windows = verify_windows(day, day + timedelta(days=6), held, per_page=100, max_days=2)
    assert windows == [
        Window(day, day + timedelta(days=1)),  # 70 calls: one page
        Window(day + timedelta(days=2), day + timedelta(days=2)),  # a dense day alone
        Window(day + timedelta(days=3), day + timedelta(days=4)),  # at most max_days days
        Window(day + timedelta(days=5), day + timedelta(days=6)),
    ]
