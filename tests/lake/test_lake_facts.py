"""What DuckLake (duckdb 1.5.5, PostgreSQL catalog) does with concurrent writers, and its upkeep
functions: facts the lake backend's writer is designed around (#18), kept as tests so an upgrade
that changes them is noticed.

- Two MERGE writers on one table conflict at COMMIT; retrying the whole transaction succeeds.
- Two transactions that MERGE the same new key both commit: DuckLake has no PRIMARY KEY or UNIQUE,
  so uniqueness across writers is the writer's job (one writer per schema, under a lock).
- Two INSERT-only writers both commit.
- merge_adjacent_files / expire_snapshots / cleanup_old_files / delete_orphaned_files compact a
  table and remove the files no snapshot needs, including an orphan a killed run leaves.
- A lease row in the catalog's PostgreSQL, taken through DuckDB's postgres extension, admits
  one holder per schema until it expires by PostgreSQL's clock (the one-writer-per-schema lock
  across machines). postgres_query cannot run INSERT ... RETURNING (it wraps the query in COPY),
  so the take is a conditional upsert through postgres_execute, then a read of the holder.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from pipeline.lake import attach_statement

# Inlining off: every commit writes Parquet, as the writer's large window commits do.
NO_INLINING = ("DATA_INLINING_ROW_LIMIT 0",)

MERGE = """
MERGE INTO lake.calls AS t
USING (SELECT unnest($ids) AS id, $caller AS caller) AS s ON t.id = s.id
WHEN MATCHED THEN UPDATE SET caller = s.caller
WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.caller)
"""


@pytest.fixture
def two_writers(pg_catalog, connect, tmp_path: Path):
    """Two connections (as two processes would have) on one lake with a 100-row calls table."""
    first, second = connect(), connect()
    for con in (first, second):
        con.execute(attach_statement(pg_catalog, f"{tmp_path}/data/", options=NO_INLINING))
    first.execute("CREATE TABLE lake.calls (id BIGINT, caller VARCHAR)")
    first.execute("INSERT INTO lake.calls SELECT range, 'old' FROM range(100)")
    return first, second


def merge(con: duckdb.DuckDBPyConnection, ids: list[int], caller: str) -> None:
    con.execute(MERGE, {"ids": ids, "caller": caller})


def test_two_merge_writers_conflict_at_commit_and_a_retry_succeeds(two_writers):
    first, second = two_writers
    first.execute("BEGIN")
    second.execute("BEGIN")
    merge(first, [1, 2, 3], "first")
    merge(second, [50, 51], "second")
    first.execute("COMMIT")
    with pytest.raises(duckdb.TransactionException, match="Transaction conflict.*another transaction has deleted"):
        second.execute("COMMIT")

    second.execute("BEGIN")
    merge(second, [50, 51], "second")
    second.execute("COMMIT")
    rows = dict(second.sql("SELECT caller, count(*) FROM lake.calls GROUP BY caller").fetchall())
    assert rows == {"old": 95, "first": 3, "second": 2}
    assert second.sql("SELECT count(DISTINCT id) FROM lake.calls").fetchone() == (100,)


def test_two_transactions_merging_one_new_key_both_commit_and_leave_duplicates(two_writers):
    first, second = two_writers
    first.execute("BEGIN")
    second.execute("BEGIN")
    merge(first, [1000], "first")
    merge(second, [1000], "second")
    first.execute("COMMIT")
    second.execute("COMMIT")  # no conflict: neither deleted anything
    assert sorted(first.sql("SELECT caller FROM lake.calls WHERE id = 1000").fetchall()) == [("first",), ("second",)]


def test_two_insert_only_writers_both_commit(two_writers):
    first, second = two_writers
    first.execute("BEGIN")
    second.execute("BEGIN")
    first.execute("INSERT INTO lake.calls SELECT range, 'first' FROM range(100, 200)")
    second.execute("INSERT INTO lake.calls SELECT range, 'second' FROM range(200, 300)")
    first.execute("COMMIT")
    second.execute("COMMIT")
    assert first.sql("SELECT count(*), count(DISTINCT id) FROM lake.calls").fetchone() == (300, 300)


def parquet_files(data: Path) -> set[Path]:
    return set(data.rglob("*.parquet"))


def test_upkeep_functions_compact_and_remove_unneeded_and_orphaned_files(pg_catalog, connect, tmp_path: Path):
    data = tmp_path / "data"
    con = connect()
    con.execute(attach_statement(pg_catalog, f"{data}/", options=NO_INLINING))
    con.execute("CREATE TABLE lake.calls (id BIGINT, caller VARCHAR)")
    for start in range(0, 500, 100):  # five commits: five small files
        con.execute(f"INSERT INTO lake.calls SELECT range, 'c' || range FROM range({start}, {start + 100})")
    assert len(parquet_files(data)) == 5
    orphan = data / "main" / "calls" / "ducklake-left-by-a-killed-run.parquet"
    orphan.write_bytes(b"PAR1")

    merged = con.sql("CALL ducklake_merge_adjacent_files('lake')").fetchall()
    assert merged == [("main", "calls", 5, 1)]  # schema, table, files merged, files written
    # Files older snapshots still need stay until those snapshots expire. ``now()`` here so the
    # test needs no clock; a real run keeps [database] lake_keep_snapshots_days and gives readers
    # of older snapshots a grace period with ``older_than``.
    con.execute("CALL ducklake_expire_snapshots('lake', older_than => now())")
    removed = con.sql("CALL ducklake_cleanup_old_files('lake', cleanup_all => true)").fetchall()
    assert len(removed) == 5
    orphans = con.sql("CALL ducklake_delete_orphaned_files('lake', cleanup_all => true)").fetchall()
    assert orphans == [(str(orphan),)]

    assert len(parquet_files(data)) == 1
    assert con.sql("SELECT count(*), count(DISTINCT id) FROM lake.calls").fetchone() == (500, 500)
    (files,) = con.sql("SELECT count(*) FROM ducklake_list_files('lake', 'calls')").fetchone()
    assert files == 1


def test_delete_orphaned_files_spares_files_newer_than_older_than(pg_catalog, connect, tmp_path: Path):
    """A writer's files exist before its commit names them: upkeep that runs beside another
    writer (another schema, same data path) must pass ``older_than``, never ``cleanup_all``."""
    data = tmp_path / "data"
    con = connect()
    con.execute(attach_statement(pg_catalog, f"{data}/", options=NO_INLINING))
    con.execute("CREATE TABLE lake.calls (id BIGINT)")
    con.execute("INSERT INTO lake.calls SELECT range FROM range(10)")
    in_flight = data / "main" / "calls" / "ducklake-being-written.parquet"
    in_flight.write_bytes(b"PAR1")
    spared = con.sql("CALL ducklake_delete_orphaned_files('lake', older_than => now() - INTERVAL 1 HOUR)")
    assert spared.fetchall() == []
    assert in_flight.exists()


LEASES = """CREATE TABLE IF NOT EXISTS callsync_leases (
    lake_schema TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at TIMESTAMPTZ NOT NULL)"""
TAKE = """INSERT INTO callsync_leases VALUES ({schema}, {holder}, now() + make_interval(secs => {seconds}))
ON CONFLICT (lake_schema) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE callsync_leases.expires_at < now() OR callsync_leases.holder = excluded.holder"""
HOLDER = "SELECT holder FROM callsync_leases WHERE lake_schema = {schema}"


def pg_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def take_lease(con: duckdb.DuckDBPyConnection, schema: str, holder: str, seconds: float) -> bool:
    """Take (or renew) the schema's lease unless another holder's is still running."""
    take = TAKE.format(schema=pg_literal(schema), holder=pg_literal(holder), seconds=float(seconds))
    con.execute("CALL postgres_execute('pg', $sql)", {"sql": take})
    (held_by,) = con.execute("SELECT * FROM postgres_query('pg', $sql)", {"sql": HOLDER.format(schema=pg_literal(schema))}).fetchone()
    return held_by == holder


def test_a_lease_in_the_catalog_database_admits_one_holder_per_schema_until_it_expires(pg_catalog, connect):
    first, second = connect(), connect()
    for con in (first, second):  # as two machines would: each its own connection to the catalog
        con.execute(f"ATTACH {pg_literal(pg_catalog.removeprefix('postgres:'))} AS pg (TYPE postgres)")
    first.execute("CALL postgres_execute('pg', $sql)", {"sql": LEASES})

    assert take_lease(first, "brand_a", "host-1 pid 10", seconds=600)
    assert not take_lease(second, "brand_a", "host-2 pid 20", seconds=600)  # would exit 75
    assert take_lease(second, "brand_b", "host-2 pid 20", seconds=600)  # another schema: no conflict
    assert take_lease(first, "brand_a", "host-1 pid 10", seconds=600)  # the holder renews

    # A holder that died: its lease already ran out (as if killed an hour ago).
    assert take_lease(first, "brand_c", "host-1 pid 11", seconds=-3600)
    assert take_lease(second, "brand_c", "host-2 pid 21", seconds=600)
