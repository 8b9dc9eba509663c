"""The lake's real parts work together: DuckLake on a PostgreSQL catalog, data on a folder or S3."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from pipeline.lake import LAKE_EXTENSIONS, attach_statement, extensions_needed, packaged_extension

ROWS = 1_000  # past DuckLake's data-inlining limit (10 rows), so the rows go to Parquet files


def write_and_commit(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA lake.brand_a")
    con.execute("CREATE TABLE lake.brand_a.calls (id BIGINT, caller VARCHAR)")
    con.execute(f"INSERT INTO lake.brand_a.calls SELECT range, 'caller ' || range FROM range({ROWS})")


def read_back(con: duckdb.DuckDBPyConnection) -> tuple:
    return con.sql("SELECT count(*), count(DISTINCT id), max(caller) FROM lake.brand_a.calls").fetchone()


EXPECTED = (ROWS, ROWS, "caller 999")
PG_S3 = extensions_needed("postgres:", "s3://bucket/")


def test_extensions_load_from_their_packages_without_network(connect):
    con = connect(LAKE_EXTENSIONS)  # autoinstall off: nothing could be downloaded
    loaded = {name for (name,) in con.sql("SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()}
    for name in LAKE_EXTENSIONS:
        assert name in loaded
        assert packaged_extension(name) is not None


def test_each_lake_loads_only_the_extensions_it_needs():
    assert extensions_needed("postgres:dbname=lake", "/srv/lake/") == ("ducklake", "postgres_scanner")
    assert extensions_needed("sqlite:/srv/meta.sqlite", "s3://b/x/") == ("ducklake", "sqlite_scanner", "httpfs", "aws")


def test_postgres_catalog_and_a_local_folder(pg_catalog, connect, tmp_path: Path):
    data = tmp_path / "data"
    writer = connect()
    writer.execute(attach_statement(pg_catalog, f"{data}/"))
    write_and_commit(writer)

    reader = connect()
    reader.execute(attach_statement(pg_catalog, read_only=True))  # the data path comes from the catalog
    assert read_back(reader) == EXPECTED
    files = list((data / "brand_a" / "calls").glob("*.parquet"))
    assert files, f"no Parquet files under {data}"


def test_the_catalog_password_comes_only_from_libpq_environment(pg_catalog, connect, tmp_path, monkeypatch):
    assert "password" not in pg_catalog
    monkeypatch.delenv("PGPASSWORD")
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-such-pgpass"))
    with pytest.raises(duckdb.Error, match="password"):
        connect().execute(attach_statement(pg_catalog, f"{tmp_path}/data/"))


def test_postgres_catalog_and_s3(pg_catalog, s3_bucket, s3_server, connect):
    writer = connect(PG_S3)
    writer.execute(s3_server.secret_statement())
    writer.execute(attach_statement(pg_catalog, f"s3://{s3_bucket}/callsync/"))
    write_and_commit(writer)

    reader = connect(PG_S3)
    reader.execute(s3_server.secret_statement())
    reader.execute(attach_statement(pg_catalog, read_only=True))
    assert read_back(reader) == EXPECTED
    keys = s3_server.list_keys(s3_bucket)
    assert any(key.startswith("callsync/brand_a/calls/") and key.endswith(".parquet") for key in keys), keys


def test_s3_keys_are_never_in_the_secret_duckdb_shows(s3_bucket, s3_server, connect):
    con = connect(PG_S3)
    con.execute(s3_server.secret_statement())
    (shown,) = con.sql("SELECT secret_string FROM duckdb_secrets()").fetchone()
    assert "lake-test-secret" not in shown
    assert "secret=redacted" in shown


def test_sqlite_catalog_on_one_machine(connect, tmp_path: Path):
    catalog = f"sqlite:{tmp_path}/meta.sqlite"
    writer = connect(extensions_needed(catalog))
    writer.execute(attach_statement(catalog, f"{tmp_path}/data/"))
    write_and_commit(writer)
    writer.close()

    reader = connect(extensions_needed(catalog))
    reader.execute(attach_statement(catalog, read_only=True))
    assert read_back(reader) == EXPECTED


def test_a_reader_does_not_wait_for_an_open_write_transaction(pg_catalog, connect, tmp_path: Path):
    writer = connect()
    writer.execute(attach_statement(pg_catalog, f"{tmp_path}/data/"))
    write_and_commit(writer)
    writer.execute("BEGIN")
    writer.execute("INSERT INTO lake.brand_a.calls SELECT range, 'late' FROM range(5000, 6000)")

    reader = connect()
    reader.execute(attach_statement(pg_catalog, read_only=True))
    assert read_back(reader) == EXPECTED  # the last committed snapshot, not the open transaction
    writer.execute("COMMIT")
    assert reader.sql("SELECT count(*) FROM lake.brand_a.calls").fetchone() == (2 * ROWS,)
