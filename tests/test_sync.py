"""The sync engine against the real sandbox: exact copies, incremental syncs, drift, faults."""

from __future__ import annotations

import asyncio
import threading
from datetime import date, datetime, timedelta, timezone
from functools import partial

import pyarrow as pa
import pytest

from pipeline import columns, load, state, sync
from pipeline.extract import READ_TOGETHER, CallFilters, Window
from pipeline.sandbox import SandboxData
from tests.dbcheck import assert_same_calls, scalar, stored_calls


def first_day(data: SandboxData):
    return data.today - timedelta(days=9)


async def test_backfill_equals_the_sandbox_and_a_rerun_changes_nothing(sandbox, make_settings):
    settings = make_settings(sandbox.base_url)
    data = sandbox.data
    summary = await sync.backfill(settings, first_day(data), data.today, with_media=False)
    assert summary.status == "ok" and summary.exit_code == 0
    assert summary.calls_new == data.calls_total and summary.windows_done >= 1
    assert_same_calls(settings.database.path, data)

    rerun = await sync.backfill(settings, first_day(data), data.today, with_media=False)
    # Today is never settled (calls may still come): the window through yesterday is skipped,
    # today alone is read again.
    assert (rerun.windows_done, rerun.windows_skipped, rerun.calls_new) == (1, summary.windows_done, 0)

    changed_before = scalar(settings.database.path, "SELECT max(last_changed_at) FROM calls")
    forced = await sync.backfill(settings, first_day(data), data.today, with_media=False, force=True)
    assert (forced.calls_new, forced.calls_updated, forced.calls_unchanged) == (0, 0, data.calls_total)
    assert scalar(settings.database.path, "SELECT max(last_changed_at) FROM calls") == changed_before
    assert_same_calls(settings.database.path, data)


async def test_tables_have_real_types(sandbox, make_settings):
    settings = make_settings(sandbox.base_url)
    await sync.backfill(settings, sandbox.data.today, sandbox.data.today, with_media=False)
    types = dict(
        scalar_rows(settings.database.path, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'calls'")
    )
    assert types["started_at"] == "TIMESTAMP WITH TIME ZONE" and types["duration_seconds"] == "INTEGER"
    number_types = dict(
        scalar_rows(settings.database.path, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'tracking_numbers'")
    )
    assert number_types["recording_enabled"] == "BOOLEAN" and number_types["created_at"] == "TIMESTAMP WITH TIME ZONE"
    assert scalar(settings.database.path, "SELECT count(*) FROM tracking_numbers") == len(sandbox.data.numbers)
    assert scalar(settings.database.path, "SELECT count(*) FROM call_flows WHERE raw IS NOT NULL") == len(sandbox.data.flows)


def scalar_rows(path, sql):
    import duckdb

    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.execute(sql).fetchall()


async def test_sync_picks_up_late_changes_and_new_calls(sandbox, make_settings):
    data = sandbox.data
    settings = make_settings(sandbox.base_url, sync={"start_date": first_day(data).isoformat(), "lookback_days": 3})
    first = await sync.sync(settings, today=data.today, with_media=False)
    assert first.status == "ok" and first.windows_done >= 1
    yesterday = (data.today - timedelta(days=1)).isoformat()
    assert scalar(settings.database.path, "SELECT value FROM sync_state WHERE key = 'watermark'") == yesterday

    changed = data.mutate_calls(15, within_days=3)
    added = data.add_calls(4)
    before = len(sandbox.requests)
    second = await sync.sync(settings, today=data.today, with_media=False)
    listings = [r for r in sandbox.requests[before:] if r.path.endswith("/calls")]
    assert min(r.query["start_date"] for r in listings) == (data.today - timedelta(days=4)).isoformat()
    assert max(r.query["end_date"] for r in listings) == data.today.isoformat(), (
        "only the lookback days before yesterday, yesterday and today are read again"
    )
    assert second.calls_new == 4 and second.calls_updated == len(changed)
    assert_same_calls(settings.database.path, data)
    stored = stored_calls(settings.database.path)
    assert all(call_id in stored for call_id in added)


async def test_next_day_sync_starts_lookback_days_before_the_watermark(sandbox, make_settings):
    data = sandbox.data
    settings = make_settings(
        sandbox.base_url, sync={"start_date": first_day(data).isoformat(), "lookback_days": 2, "window_days": 1}
    )
    await sync.sync(settings, today=data.today - timedelta(days=3), with_media=False)
    before = len(sandbox.requests)
    later = await sync.sync(settings, today=data.today, with_media=False)
    # watermark = today-3, so the range is today-5 .. today: six one-day windows (window_days = 1
    # pages day by day, as before windows were sized by the data).
    assert later.windows_done == 6
    assert_same_calls(settings.database.path, data)
    calls_requests = [r for r in sandbox.requests[before:] if r.path.endswith("/calls")]
    assert {r.query["start_date"] for r in calls_requests} == {
        (data.today - timedelta(days=offset)).isoformat() for offset in range(6)
    }


async def test_drift_while_paging_loses_and_duplicates_nothing(sandbox, make_settings):
    # About one listing request in ten sees a late-ingested call land in its window.
    sandbox.faults.drift_rate = 0.1
    settings = make_settings(sandbox.base_url, sync={"per_page": 20, "max_window_tries": 10})
    data = sandbox.data
    summary = await sync.backfill(settings, first_day(data), data.today, with_media=False)
    assert summary.status == "ok" and summary.refetches > 0
    sandbox.faults.drift_rate = 0
    assert_same_calls(settings.database.path, data)


async def test_a_window_of_more_pages_than_are_read_together_is_copied_exactly(sandbox, make_settings):
    # 2 calls a page: a day of ~150 calls is more than 2 x READ_TOGETHER pages.
    settings = make_settings(sandbox.base_url, sync={"per_page": 2})
    data = sandbox.data
    summary = await sync.backfill(settings, first_day(data), data.today, with_media=False)
    assert summary.status == "ok" and summary.requests > 10 * (2 * READ_TOGETHER + 1)
    assert_same_calls(settings.database.path, data)


@pytest.fixture
def bigger_data() -> SandboxData:
    return SandboxData.generate(seed=11, calls=12_000, days=60)


async def test_server_errors_and_a_rate_limit_still_give_an_exact_copy(bigger_data, make_settings):
    from pipeline.sandbox import Faults, run_sandbox

    faults = Faults(error_rate=0.1, rate_limit=60)
    async with run_sandbox(data=bigger_data, faults=faults) as sandbox:
        settings = make_settings(sandbox.base_url, api={"max_retries": 10, "max_concurrency": 8})
        summary = await sync.backfill(settings, bigger_data.today - timedelta(days=59), bigger_data.today, with_media=False)
        served = [r for r in sandbox.requests if r.host == "api"]
    assert summary.status == "ok", summary.failures
    assert summary.retries > 0
    assert_same_calls(settings.database.path, bigger_data)
    rate_limited = sum(1 for r in served if r.status == 429)
    assert rate_limited / len(served) < 0.10, f"{rate_limited} of {len(served)} requests were 429s"


async def test_malformed_records_are_kept_with_their_payload_and_fail_the_run(sandbox, make_settings):
    data = sandbox.data
    day = data.today - timedelta(days=1)  # a whole day of calls: just after midnight today has none yet
    calls = data.calls_between(day, day)
    bad_date, bad_duration = calls[0]["id"], calls[1]["id"]
    data.override_call(bad_date, started_at="yesterday-ish")
    data.override_call(bad_duration, duration_seconds="long")
    settings = make_settings(sandbox.base_url)
    summary = await sync.backfill(settings, day, day, with_media=False)
    assert summary.status == "failed" and summary.exit_code == 1 and summary.rejected == 2
    stored = stored_calls(settings.database.path)
    assert len(stored) == len(calls) - 2
    rejected = scalar_rows(settings.database.path, "SELECT record_id, error, raw->>'started_at' FROM rejected_records ORDER BY record_id")
    assert {row[0] for row in rejected} == {bad_date, bad_duration}
    assert any(row[2] == "yesterday-ish" for row in rejected)
    assert all(row[1] for row in rejected)


async def test_failed_windows_are_reported_and_a_later_run_fills_them(sandbox, make_settings):
    data = sandbox.data
    settings = make_settings(sandbox.base_url, api={"max_retries": 0}, sync={"start_date": first_day(data).isoformat()})
    sandbox.faults.error_rate = 0.4
    flaky = await sync.sync(settings, today=data.today, with_media=False)
    assert flaky.exit_code in (1, 0)
    sandbox.faults.error_rate = 0
    if flaky.windows_failed:
        assert flaky.status == "failed" and flaky.exit_code == 1
    healed = await sync.sync(settings, today=data.today, with_media=False)
    assert healed.status == "ok"
    assert_same_calls(settings.database.path, data)


async def test_vanished_numbers_and_flows_are_marked_deleted(sandbox, make_settings):
    data = sandbox.data
    settings = make_settings(sandbox.base_url)
    await sync.backfill(settings, data.today, data.today, with_media=False)
    gone_flow = next(iter(data.flows))
    del data.flows[gone_flow]
    gone_number = data.numbers.pop()["id"]
    await sync.backfill(settings, data.today, data.today, with_media=False, force=True)
    deleted = scalar_rows(settings.database.path, "SELECT id FROM call_flows WHERE deleted_at IS NOT NULL")
    assert deleted == [(gone_flow,)]
    deleted = scalar_rows(settings.database.path, "SELECT id FROM tracking_numbers WHERE deleted_at IS NOT NULL")
    assert deleted == [(gone_number,)]


async def test_filtered_backfill_only_loads_matching_calls(sandbox, make_settings):
    data = sandbox.data
    settings = make_settings(sandbox.base_url)
    summary = await sync.backfill(
        settings, first_day(data), data.today, filters=CallFilters(outcome="qualified"), with_media=False
    )
    stored = stored_calls(settings.database.path)
    assert stored and {call["outcome"] for call in stored.values()} == {"qualified"}
    assert summary.calls_new == sum(1 for c in data.calls_between(None, None) if c["outcome"] == "qualified")
    scopes = scalar(settings.database.path, "SELECT string_agg(DISTINCT scope) FROM sync_windows")
    assert scopes == "outcome=qualified"


async def test_first_sync_after_a_backfill_only_reads_the_recent_days(sandbox, make_settings):
    data = sandbox.data
    settings = make_settings(
        sandbox.base_url, sync={"start_date": first_day(data).isoformat(), "lookback_days": 2, "window_days": 1}
    )
    await sync.backfill(settings, first_day(data), data.today, with_media=False)
    first_sync = await sync.sync(settings, today=data.today, with_media=False)
    assert (first_sync.windows_done, first_sync.windows_skipped) == (3, 7)
    yesterday = (data.today - timedelta(days=1)).isoformat()
    assert scalar(settings.database.path, "SELECT value FROM sync_state WHERE key = 'watermark'") == yesterday
    assert_same_calls(settings.database.path, data)


async def test_a_database_from_before_migration_004_keeps_every_call_and_loses_the_index(sandbox, make_settings):
    data = sandbox.data
    settings = make_settings(sandbox.base_url, sync={"start_date": first_day(data).isoformat(), "lookback_days": 2})
    await sync.backfill(settings, first_day(data), data.today, with_media=False)
    _back_to_the_indexed_calls_table(settings.database.path)
    assert _primary_keys_of_calls(settings.database.path) == 1

    again = await sync.sync(settings, today=data.today, with_media=False)  # migrates first
    assert again.status == "ok" and (again.calls_new, again.calls_updated) == (0, 0)
    assert _primary_keys_of_calls(settings.database.path) == 0
    assert scalar(settings.database.path, "SELECT count(*) FROM calls_enriched") == data.calls_total
    assert_same_calls(settings.database.path, data)


def _primary_keys_of_calls(path) -> int:
    return scalar(path, "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'calls' AND constraint_type = 'PRIMARY KEY'")


def _back_to_the_indexed_calls_table(path) -> None:
    """Rebuild `calls` as migration 001 created it, with its rows, and forget 004."""
    with load.FileStore(path).session() as conn, load.transaction(conn):
        create_calls = load.split_statements(conn, (load.sql_dir() / "migrations" / "001_core.sql").read_text())[0]
        conn.execute("ALTER TABLE calls RENAME TO calls_now")
        conn.execute(create_calls)
        conn.execute("INSERT INTO calls SELECT * FROM calls_now")
        conn.execute("DROP TABLE calls_now")
        conn.execute("DELETE FROM schema_migrations WHERE name = '004_calls_without_index'")


async def test_a_full_writer_commits_at_once_instead_of_waiting_for_its_interval(tmp_path):
    # A producer blocked for room must not wait out commit_interval_s: with an interval
    # of an hour, these submits only finish because the writer commits when one blocks.
    writer = load.Writer(load.FileStore(tmp_path / "w.duckdb"), "run", commit_interval_s=3600, max_pending_rows=3)
    async with writer:
        await writer.run(lambda conn: conn.execute("CREATE TABLE t (n INTEGER)"))

        async def fill() -> None:
            for n in range(6):
                await writer.submit(lambda conn, n=n: conn.execute("INSERT INTO t VALUES (?)", [n]), rows=2)

        await asyncio.wait_for(fill(), timeout=30)
    with load.FileStore(tmp_path / "w.duckdb").read_only() as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 6


def test_a_call_in_two_windows_of_one_commit_is_stored_once_from_the_later_window(tmp_path):
    # Its started_at moved between the two windows' fetches: the later window's copy wins.
    def call(call_id: str, duration: int, day: int) -> dict:
        return {"id": call_id, "duration_seconds": duration, "started_at": datetime(2026, 5, day, 12, tzinfo=timezone.utc)}

    def batch(day: int, calls: list[dict]) -> load.WindowBatch:
        return load.WindowBatch(
            "", date(2026, 5, day), date(2026, 5, day), columns.calls_to_arrow(calls), columns.rejected_to_arrow([]),
            date(2026, 6, 1),
        )

    store = load.FileStore(tmp_path / "c.duckdb")
    batches = [batch(1, [call("call_a", 10, 1), call("call_b", 20, 1)]), batch(2, [call("call_a", 11, 2)])]
    with store.session() as conn:
        load.apply_migrations(conn)
        counts = load.commit_windows(conn, batches, run_id="run")
        stored = conn.execute("SELECT id, duration_seconds FROM calls ORDER BY id").fetchall()
        windows = conn.execute("SELECT window_start, row_count FROM sync_windows ORDER BY 1").fetchall()
    assert stored == [("call_a", 11), ("call_b", 20)]
    assert [(c.new, c.updated, c.unchanged) for c in counts] == [(1, 0, 0), (1, 0, 0)]
    assert windows == [(date(2026, 5, 1), 2), (date(2026, 5, 2), 1)]


async def test_producers_fill_the_queue_again_while_a_group_commits(tmp_path):
    # The first group blocks in the writer thread until released. A full queue's worth of
    # rows must still be accepted meanwhile: fetching does not stall behind a commit.
    committing, release = threading.Event(), threading.Event()

    def slow_commit(conn) -> None:
        committing.set()
        release.wait(30)

    writer = load.Writer(load.FileStore(tmp_path / "w.duckdb"), "run", commit_interval_s=3600, max_pending_rows=3)
    async with writer:
        first = await writer.submit(slow_commit, rows=3)
        writer.flush()
        await asyncio.to_thread(committing.wait, 30)
        try:
            second = await asyncio.wait_for(writer.submit(lambda conn: "next", rows=3), timeout=10)
        finally:
            release.set()
        await first
        writer.flush()
        assert await second == "next"


@pytest.mark.parametrize(("vacuum_below_rows", "row_groups"), [(10_000, 1), (120, 3)])
async def test_checkpoints_stop_merging_row_groups_once_a_run_is_big(tmp_path, vacuum_below_rows, row_groups):
    # Checkpointing after every group (checkpoint_rows=1) stores each window as a row
    # group of its own, and DuckDB's vacuum merges them into one. Once the run has stored
    # vacuum_below_rows calls, it no longer does (here after the second of four windows):
    # such a merge took 100-190 MB at once.
    store = load.FileStore(tmp_path / "v.duckdb")
    load.migrate(store)
    writer = load.Writer(store, "run", commit_interval_s=0, checkpoint_rows=1, vacuum_below_rows=vacuum_below_rows)
    await commit_four_windows_of_fifty_calls(writer)
    assert scalar(store.path, "SELECT count(*) FROM calls") == 200
    assert scalar(store.path, "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('calls')") == row_groups


@pytest.mark.parametrize(("checkpoint_rows", "row_groups"), [(10_000, 1), (100, 2)])
async def test_the_writer_checkpoints_once_it_holds_checkpoint_rows(tmp_path, checkpoint_rows, row_groups):
    # Committed rows stay in DuckDB's memory until a checkpoint. The writer holds the
    # working database for the whole run, so only checkpoint_rows bounds them before the
    # publish at the end; without the vacuum, each checkpoint leaves its rows as a row group.
    store = load.FileStore(tmp_path / "h.duckdb")
    load.migrate(store)
    writer = load.Writer(store, "run", commit_interval_s=0, checkpoint_rows=checkpoint_rows, vacuum_below_rows=0)
    await commit_four_windows_of_fifty_calls(writer)
    assert scalar(store.path, "SELECT count(*) FROM calls") == 200
    assert scalar(store.path, "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('calls')") == row_groups


async def commit_four_windows_of_fifty_calls(writer: load.Writer) -> None:
    """Each window committed on its own, before the next is submitted."""
    async with writer:
        for day in range(1, 5):
            calls = [{"id": f"call_{day}_{n}", "started_at": datetime(2026, 5, day, n // 60, n % 60, tzinfo=timezone.utc)} for n in range(50)]
            window = load.WindowBatch(
                "", date(2026, 5, day), date(2026, 5, day), columns.calls_to_arrow(calls), columns.rejected_to_arrow([]),
                date(2026, 6, 1),
            )
            await (await writer.submit_window(window))


def test_a_call_seen_twice_keeps_the_row_seen_last():
    seen = pa.table({"id": ["a", "b", "a", "c", "b"], "outcome": ["missed", "qualified", "answered", "missed", "missed"]})
    kept = columns.last_row_per_id(seen)
    assert kept.to_pylist() == [
        {"id": "a", "outcome": "answered"},
        {"id": "c", "outcome": "missed"},
        {"id": "b", "outcome": "missed"},
    ]
    unique = seen.slice(0, 2)
    assert columns.last_row_per_id(unique) is unique


def test_a_window_listed_before_midnight_and_committed_after_it_leaves_that_day_unsettled(tmp_path, monkeypatch):
    # Listed at 23:59 on June 1, committed on June 2: June 1 may still have got calls after
    # its listing began, so only May 31 is settled, and the watermark stops there too.
    def window(start: date, end: date) -> load.WindowBatch:
        calls = [{"id": f"call_{start}", "started_at": datetime.combine(start, datetime.min.time(), timezone.utc)}]
        return load.WindowBatch(
            "", start, end, columns.calls_to_arrow(calls), columns.rejected_to_arrow([]), date(2026, 6, 1)
        )

    monkeypatch.setenv("CALLSYNC_NOW", "2026-06-02T00:00:15Z")
    store = load.FileStore(tmp_path / "m.duckdb")
    tracker = state.WatermarkTracker()
    tracker.plan([Window(date(2026, 5, 30), date(2026, 6, 1))], [])
    with store.session() as conn:
        load.apply_migrations(conn)
        batches = [window(date(2026, 5, 30), date(2026, 6, 1))]
        load.commit_windows(conn, batches, run_id="run", then=partial(sync._advance_watermark, batches=batches, tracker=tracker))
        settled = conn.execute("SELECT window_start, window_end FROM sync_windows").fetchall()
        watermark = load.get_state(conn, state.WATERMARK_KEY)
    assert settled == [(date(2026, 5, 30), date(2026, 5, 31))]
    assert watermark == "2026-05-31"
