"""sync, backfill, media, status, query and compact into a DuckLake (PostgreSQL catalog, data on a
folder or S3): the same results as a DuckDB file, the same guarantees (#18).

Every run is the real CLI in a subprocess against the real sandbox; the lake's catalog is a real
PostgreSQL server and its S3 a real S3-compatible server (tests/lake/conftest.py).
"""

from __future__ import annotations

import asyncio
import random
import signal
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from pipeline.lake import LakeStore, load_lake_extensions
from pipeline.sandbox import Faults, SandboxData, run_sandbox
from tests.conftest import run_cli, start_cli, write_config
from tests.dbcheck import assert_same_calls

# What makes a row unique in each table: DuckLake has no keys, so the writer keeps them.
KEYS = {
    "calls": "id",
    "deleted_calls": "id",
    "tracking_numbers": "id",
    "call_flows": "id",
    "rejected_records": "rejected_id",
    "runs": "run_id",
    "sync_windows": "scope, window_start, window_end",
    "sync_state": "key",
    "media_jobs": "call_id, kind",
    "recordings": "call_id",
    "transcript_segments": "call_id, segment_index",
    "tombstones": "hash",
    "forget_audit": "audit_id",
    "files_to_remove": "path",
    "schema_migrations": "name",
}
MEDIA_ROWS = {
    "recordings": "SELECT call_id, size_bytes, sha256 FROM recordings",
    "transcript_segments": 'SELECT call_id, segment_index, speaker, text, "timestamp" FROM transcript_segments',
    "media_jobs": "SELECT call_id, kind, status FROM media_jobs",
}


def lake_config(
    directory: Path, base_url: str, catalog: str, data_path: str, schema: str = "brand_a", sync: dict | None = None, **database
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return write_config(
        directory, base_url,
        database={"path": None, "lake_catalog": catalog, "lake_data_path": data_path, "schema": schema, **database},
        api={"max_concurrency": 4},
        sync=sync or {},
    )


def lake(catalog: str, data_path: str, schema: str = "brand_a", **options) -> LakeStore:
    return LakeStore(catalog, data_path, schema, **options)


def assert_unique(conn: duckdb.DuckDBPyConnection) -> None:
    for table, key in KEYS.items():
        total, distinct = conn.execute(f"SELECT count(*), count(DISTINCT ({key})) FROM {table}").fetchone()
        assert total == distinct, f"{table}: {total - distinct} duplicate rows"


def rows(conn: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return sorted(conn.execute(sql).fetchall())


async def sync_all(directory: Path, data: SandboxData) -> None:
    start = data.first_day.isoformat()
    today = data.today.isoformat()
    for args in (("backfill", "--start", start, "--end", today), ("sync",), ("media",), ("verify", "--start", start, "--end", today)):
        result = await run_cli(*args, cwd=directory)
        assert result.code == 0, result.stderr
        assert " ok" in result.stdout


async def test_backfill_sync_and_media_into_a_lake_equal_the_sandbox_and_a_file(small_data, pg_catalog, tmp_path):
    async with run_sandbox(data=small_data, faults=Faults(shuffle_pages=True)) as sandbox:
        (tmp_path / "file").mkdir()
        write_config(tmp_path / "file", sandbox.base_url, api={"max_concurrency": 4})
        await sync_all(tmp_path / "file", small_data)
        lake_config(tmp_path / "lake", sandbox.base_url, pg_catalog, str(tmp_path / "data"))
        await sync_all(tmp_path / "lake", small_data)

        status = await run_cli("status", cwd=tmp_path / "lake")
        assert status.code == 0, status.stderr
        named = await run_cli("query", "daily_calls", "--format", "csv", cwd=tmp_path / "lake")
        on_file = await run_cli("query", "daily_calls", "--format", "csv", cwd=tmp_path / "file")
        schema = await run_cli("query", "schema", "--format", "csv", cwd=tmp_path / "lake")
        schema_on_file = await run_cli("query", "schema", "--format", "csv", cwd=tmp_path / "file")
    assert named.code == 0 and named.stdout == on_file.stdout  # the named queries, unchanged
    assert schema.code == 0 and schema.stdout == schema_on_file.stdout  # the same tables, columns and comments

    with lake(pg_catalog, str(tmp_path / "data")).read_only() as conn:
        assert_same_calls(conn, small_data)
        assert_unique(conn)
        with duckdb.connect(str(tmp_path / "file" / "callsync.duckdb"), read_only=True) as file:
            for table, sql in MEDIA_ROWS.items():
                assert rows(conn, sql) == rows(file, sql), table
            assert rows(conn, "SELECT count(*) FROM tracking_numbers") == rows(file, "SELECT count(*) FROM tracking_numbers")
        assert conn.execute("SELECT count(*) FROM recordings").fetchone()[0] > 0
    assert list((tmp_path / "data" / "brand_a" / "calls").glob("*.parquet"))
    assert not (tmp_path / "lake" / "callsync.duckdb").exists()

    # What status prints is what an analyst runs: here with the extensions from their packages.
    statements = [line.strip() for line in status.stdout.splitlines() if line.strip().startswith(("ATTACH", "USE"))]
    assert statements[0].endswith("(READ_ONLY);") and "PASSWORD" not in status.stdout.upper()
    analyst = duckdb.connect()
    load_lake_extensions(analyst, ("ducklake", "postgres_scanner"))
    for statement in statements:
        analyst.execute(statement)
    assert analyst.execute("SELECT count(*) FROM calls").fetchone()[0] == small_data.calls_total
    analyst.close()


async def test_a_lake_on_s3_equals_the_sandbox(small_data, pg_catalog, s3_server, s3_bucket, tmp_path):
    data_path = f"s3://{s3_bucket}/callsync/"
    endpoint = f"http://{s3_server.endpoint}"
    async with run_sandbox(data=small_data, faults=Faults(shuffle_pages=True)) as sandbox:
        lake_config(tmp_path, sandbox.base_url, pg_catalog, data_path, lake_s3_endpoint=endpoint)
        await sync_all(tmp_path, small_data)
        status = await run_cli("status", cwd=tmp_path)
    assert status.code == 0, status.stderr
    assert "lake-test-secret" not in status.stdout and "lake-test-key" not in status.stdout
    with lake(pg_catalog, data_path, s3_endpoint=endpoint).read_only() as conn:
        assert_same_calls(conn, small_data)
        assert_unique(conn)
        assert conn.execute("SELECT count(*) FROM recordings").fetchone()[0] > 0
    keys = s3_server.list_keys(s3_bucket)
    assert any(key.startswith("callsync/brand_a/calls/") and key.endswith(".parquet") for key in keys)
    assert not (tmp_path / "data").exists()


async def wait_for_lease(store: LakeStore, process) -> bool:
    """Wait on PostgreSQL until the run holds its schema's lease (or it ended)."""
    from pipeline.lease import Lease

    probe = Lease(store.catalog.removeprefix("postgres:"), store.schema, 60, store._bare)
    while process.returncode is None:
        held = await asyncio.to_thread(probe.peek)
        if held is not None and held[1]:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_one_writer_per_schema_across_processes_and_two_schemas_at_once(pg_catalog, tmp_path):
    first_data = SandboxData.generate(seed=11, calls=3_000, days=15)
    second_data = SandboxData.generate(seed=12, calls=2_000, days=15)
    data_path = str(tmp_path / "data")
    slow = Faults(latency_ms=40, shuffle_pages=True)
    async with run_sandbox(data=first_data, faults=slow) as first, run_sandbox(data=second_data, faults=slow) as second:
        lake_config(tmp_path / "a", first.base_url, pg_catalog, data_path, schema="brand_a")
        lake_config(tmp_path / "a2", first.base_url, pg_catalog, data_path, schema="brand_a")
        lake_config(tmp_path / "b", second.base_url, pg_catalog, data_path, schema="brand_b")
        start = (first_data.today - timedelta(days=14)).isoformat()
        args = ("backfill", "--start", start, "--end", first_data.today.isoformat(), "--no-media")
        running = await start_cli(*args, cwd=tmp_path / "a")
        assert await wait_for_lease(lake(pg_catalog, data_path), running), "the backfill should hold the lease"
        while len(first.requests) < 5:  # fetching: the lake and its schema exist
            await asyncio.sleep(0.005)
        running.send_signal(signal.SIGSTOP)  # held still (its lease lasts 120 s) while the others are tried
        other_schema = await start_cli(*args, cwd=tmp_path / "b")
        status = await run_cli("status", cwd=tmp_path / "a2")
        refused = await run_cli(*args, cwd=tmp_path / "a2")
        running.send_signal(signal.SIGCONT)
        assert status.code == 0, status.stderr
        assert "writer:     " in status.stdout and "lease until" in status.stdout, status.stdout
        assert refused.code == 75, refused.stderr
        assert "another callsync run holds lake schema brand_a" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        for process in (running, other_schema):
            _, stderr = await process.communicate()
            assert process.returncode == 0, stderr.decode()
    with lake(pg_catalog, data_path, "brand_a").read_only() as conn:
        assert_same_calls(conn, first_data)
        assert_unique(conn)
        assert conn.execute("SELECT count(*) FROM lake.brand_b.calls").fetchone()[0] == second_data.calls_total
    with lake(pg_catalog, data_path, "brand_b").read_only() as conn:
        assert_same_calls(conn, second_data)
        assert_unique(conn)


async def test_a_lease_left_by_a_killed_run_expires(small_data, pg_catalog, tmp_path):
    data_path = str(tmp_path / "data")
    store = lake(pg_catalog, data_path)
    async with run_sandbox(data=small_data, faults=Faults(latency_ms=40)) as sandbox:
        lake_config(tmp_path, sandbox.base_url, pg_catalog, data_path, lake_lease_s=5)
        args = ("backfill", "--start", (small_data.today - timedelta(days=9)).isoformat(),
                "--end", small_data.today.isoformat(), "--no-media")
        killed = await start_cli(*args, cwd=tmp_path)
        assert await wait_for_lease(store, killed)
        while len(sandbox.requests) < 5:  # fetching: its row in `runs` is committed
            await asyncio.sleep(0.005)
        killed.send_signal(signal.SIGKILL)
        await killed.communicate()
        from pipeline.lease import Lease

        probe = Lease(store.catalog.removeprefix("postgres:"), store.schema, 60, store._bare)
        held = await asyncio.to_thread(probe.peek)
        if held is not None and held[1]:  # still running by PostgreSQL's clock: a second run is refused
            refused = await run_cli(*args, cwd=tmp_path)
            assert refused.code == 75 or (await asyncio.to_thread(probe.peek))[1] is False, refused.stderr
        while (await asyncio.to_thread(probe.peek))[1]:  # wait on PostgreSQL's clock for the expiry
            await asyncio.sleep(0.1)
        result = await run_cli(*args, cwd=tmp_path)
        assert result.code == 0, result.stderr
    with store.read_only() as conn:
        assert_same_calls(conn, small_data)
        assert_unique(conn)
        assert conn.execute("SELECT count(*) FROM runs WHERE status = 'interrupted'").fetchone()[0] == 1


def files_on_disk(data: Path) -> set[str]:
    return {str(path) for path in data.rglob("*.parquet")}


def files_in_catalog(conn: duckdb.DuckDBPyConnection, schema: str) -> set[str]:
    """Every data and delete file any snapshot of the schema's tables names."""
    tables = [name for (name,) in conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake' AND schema_name = ?", [schema]
    ).fetchall()]
    named: set[str] = set()
    for table in tables:
        for data_file, delete_file in conn.execute(
            "SELECT data_file, delete_file FROM ducklake_list_files('lake', ?, schema => ?)", [table, schema]
        ).fetchall():
            named.add(data_file)
            if delete_file:
                named.add(delete_file)
    return named


async def test_backfill_killed_at_random_moments_ends_identical_and_compact_removes_the_orphans(pg_catalog, tmp_path):
    data = SandboxData.generate(seed=5, calls=4_000, days=20)
    chooser = random.Random(20261202)
    data_path = tmp_path / "data"
    async with run_sandbox(data=data, faults=Faults(latency_ms=5, shuffle_pages=True)) as sandbox:
        lake_config(tmp_path, sandbox.base_url, pg_catalog, str(data_path), sync={"per_page": 50},
                    lake_lease_s=2, lake_orphans_after_s=0, lake_keep_snapshots_days=0)
        args = ("backfill", "--start", (data.today - timedelta(days=19)).isoformat(), "--end", data.today.isoformat(), "--no-media")
        kills = 0
        for _ in range(4):
            process = await start_cli(*args, cwd=tmp_path)
            target = len(sandbox.requests) + chooser.randint(5, 40)
            while len(sandbox.requests) < target and process.returncode is None:
                await asyncio.sleep(0.005)
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            await process.communicate()
            await wait_for_expiry(lake(pg_catalog, str(data_path)))
        assert kills >= 2, "the kills should land while the backfill runs"
        final = await run_cli(*args, cwd=tmp_path)
        assert final.code == 0, final.stderr
        compacted = await run_cli("compact", cwd=tmp_path)
        assert compacted.code == 0, compacted.stderr
        assert compacted.stdout.startswith("compacted lake schema brand_a:")
    with lake(pg_catalog, str(data_path)).read_only() as conn:
        assert_same_calls(conn, data)
        assert_unique(conn)
        assert files_on_disk(data_path) == files_in_catalog(conn, "brand_a")  # no orphan left


async def wait_for_expiry(store: LakeStore) -> None:
    """A killed run's lease stops blocking once PostgreSQL's clock passes it."""
    from pipeline.lease import Lease

    probe = Lease(store.catalog.removeprefix("postgres:"), store.schema, 60, store._bare)
    while True:
        held = await asyncio.to_thread(probe.peek)
        if held is None or not held[1]:
            return
        await asyncio.sleep(0.05)


async def test_a_reader_queries_the_lake_through_a_whole_backfill(pg_catalog, tmp_path):
    data = SandboxData.generate(seed=9, calls=6_000, days=30)
    data_path = str(tmp_path / "data")
    async with run_sandbox(data=data, faults=Faults(latency_ms=30, shuffle_pages=True)) as sandbox:
        lake_config(tmp_path, sandbox.base_url, pg_catalog, data_path)
        first = await run_cli("backfill", "--start", data.today.isoformat(), "--end", data.today.isoformat(), "--no-media",
                              cwd=tmp_path)
        assert first.code == 0, first.stderr  # the schema exists: readers can attach from the start
        backfill = await start_cli("backfill", "--start", (data.today - timedelta(days=29)).isoformat(),
                                   "--end", data.today.isoformat(), "--no-media", cwd=tmp_path)
        counts = []
        while backfill.returncode is None:
            result = await run_cli("query", "SELECT count(*) AS calls FROM calls", "--format", "csv", cwd=tmp_path)
            assert result.code == 0, result.stderr
            counts.append(int(result.stdout.splitlines()[1]))
        _, stderr = await backfill.communicate()
        assert backfill.returncode == 0, stderr.decode()
    assert len(counts) >= 2 and counts == sorted(counts)
    with lake(pg_catalog, data_path).read_only() as conn:
        assert_same_calls(conn, data)
        assert_unique(conn)


def pg_dump(cluster, catalog: str) -> str:
    """The whole catalog database as SQL: every table DuckLake keeps there, inlined rows included."""
    import os
    import subprocess

    name = dict(part.split("=", 1) for part in catalog.removeprefix("postgres:").split())["dbname"]
    done = subprocess.run(
        [str(cluster.bindir / "pg_dump"), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "callsync", name],
        capture_output=True, text=True, env={**os.environ}, check=True,
    )
    return done.stdout


async def test_forget_on_a_lake_leaves_no_trace_in_its_files_its_catalog_or_its_snapshots(
    small_data, postgres_cluster, pg_catalog, tmp_path
):
    data_path = tmp_path / "data"
    async with run_sandbox(data=small_data, faults=Faults()) as sandbox:
        lake_config(tmp_path, sandbox.base_url, pg_catalog, str(data_path))
        await sync_all(tmp_path, small_data)
        store = lake(pg_catalog, str(data_path))
        with store.read_only() as conn:
            (number, calls) = conn.execute(
                "SELECT caller_number, count(*) FROM calls GROUP BY caller_number ORDER BY count(*) DESC, 1 LIMIT 1"
            ).fetchone()
            (before,) = conn.execute("SELECT max(snapshot_id) FROM ducklake_snapshots('lake')").fetchone()
        digits = "".join(ch for ch in number if ch.isdigit())
        result = await run_cli("forget", "--caller-number", number, "--yes", cwd=tmp_path)
        assert result.code == 0, result.stderr
        again = await run_cli("sync", cwd=tmp_path)  # a tombstone keeps it out
        assert again.code == 0, again.stderr
    with store.read_only() as conn:
        assert conn.execute("SELECT count(*) FROM calls WHERE caller_number = ?", [number]).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM tombstones").fetchone()[0] == 1
        with pytest.raises(duckdb.Error):  # time travel no longer reaches the erased rows
            conn.execute(f"SELECT count(*) FROM calls AT (VERSION => {before})").fetchall()
        for path in data_path.rglob("*.parquet"):
            text = conn.execute("SELECT string_agg(columns(*)::VARCHAR, '|') FROM read_parquet(?)", [str(path)]).fetchall()
            assert digits not in str(text) and number not in str(text), path
    dump = pg_dump(postgres_cluster, pg_catalog)
    assert number not in dump and digits not in dump
    assert calls >= 1


async def test_a_run_ends_with_a_compact_once_the_schema_holds_many_files(pg_catalog, tmp_path):
    data = SandboxData.generate(seed=3, calls=1_500, days=6)
    data_path = str(tmp_path / "data")
    async with run_sandbox(data=data, faults=Faults()) as sandbox:
        lake_config(tmp_path, sandbox.base_url, pg_catalog, data_path)
        for day in range(6):  # one backfill a day: a few files each
            when = (data.first_day + timedelta(days=day)).isoformat()
            result = await run_cli("backfill", "--start", when, "--end", when, "--no-media", cwd=tmp_path)
            assert result.code == 0, result.stderr
    store = lake(pg_catalog, data_path, compact_after_files=5)
    with store.read_only() as conn:
        before = sum(files for files, _ in store.data_files(conn).values())
    assert before > 5
    done = store.after_run()
    assert done is not None and done["files_after"] < before
    assert lake(pg_catalog, data_path, compact_after_files=done["files_after"]).after_run() is None
    with store.read_only() as conn:
        assert_same_calls(conn, data)
        assert_unique(conn)


async def test_malformed_records_are_kept_in_the_lake_with_their_payload(small_data, pg_catalog, tmp_path):
    day = small_data.today - timedelta(days=1)
    calls = small_data.calls_between(day, day)
    small_data.override_call(calls[0]["id"], started_at="yesterday-ish")
    small_data.override_call(calls[1]["id"], duration_seconds="long")
    data_path = str(tmp_path / "data")
    async with run_sandbox(data=small_data, faults=Faults()) as sandbox:
        lake_config(tmp_path, sandbox.base_url, pg_catalog, data_path)
        for again in ([], ["--force"]):  # a second run reads the day again and keeps them under new ids
            result = await run_cli(
                "backfill", "--start", day.isoformat(), "--end", day.isoformat(), "--no-media", *again, cwd=tmp_path
            )
            assert result.code == 1 and "2 rejected" in result.stdout, result.stdout + result.stderr
    with lake(pg_catalog, data_path).read_only() as conn:
        assert_unique(conn)
        rejected = conn.execute("SELECT rejected_id, record_id, raw->>'started_at' FROM rejected_records ORDER BY 1").fetchall()
        assert [row[0] for row in rejected] == [1, 2, 3, 4]
        assert {row[1] for row in rejected} == {calls[0]["id"], calls[1]["id"]}
        assert any(row[2] == "yesterday-ish" for row in rejected)
        assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == len(calls) - 2


async def test_a_run_that_lost_its_lease_stops_before_its_next_commit(pg_catalog, tmp_path):
    """A run frozen (SIGSTOP) past its lease, while another run takes the schema: once thawed it
    stops with exit 75 instead of writing beside the new holder, and the data stays exact."""
    data = SandboxData.generate(seed=21, calls=3_000, days=15)
    data_path = str(tmp_path / "data")
    store = lake(pg_catalog, data_path)
    async with run_sandbox(data=data, faults=Faults(latency_ms=40, shuffle_pages=True)) as sandbox:
        lake_config(tmp_path, sandbox.base_url, pg_catalog, data_path, lake_lease_s=2)
        args = ("backfill", "--start", (data.today - timedelta(days=14)).isoformat(), "--end", data.today.isoformat(),
                "--no-media")
        frozen = await start_cli(*args, cwd=tmp_path)
        assert await wait_for_lease(store, frozen)
        while len(sandbox.requests) < 5:
            await asyncio.sleep(0.005)
        frozen.send_signal(signal.SIGSTOP)
        await wait_for_expiry(store)
        seen = len(sandbox.requests)
        taking_over = await start_cli(*args, cwd=tmp_path)
        while len(sandbox.requests) < seen + 5 and taking_over.returncode is None:  # it holds the lease now
            await asyncio.sleep(0.005)
        frozen.send_signal(signal.SIGCONT)
        _, stderr = await frozen.communicate()
        assert frozen.returncode == 75, stderr.decode()
        lines = stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "lease on lake schema brand_a" in lines[0], lines  # taken, or not renewed in time
        _, stderr = await taking_over.communicate()
        assert taking_over.returncode == 0, stderr.decode()
    with store.read_only() as conn:
        assert_same_calls(conn, data)
        assert_unique(conn)
