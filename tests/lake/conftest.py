"""Real parts for the lake tests: a PostgreSQL cluster and an S3-compatible server, both on loopback.

These tests run only with the `lake` extra and the `lake-test` group
(``uv run --extra lake --group lake-test pytest tests/lake``, as .ci/run does); the default
environment has neither the DuckDB extensions nor moto, and does not collect them.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import subprocess
import sys
import threading
from dataclasses import dataclass

import duckdb
import pytest

from pipeline.lake import extensions_needed, load_lake_extensions, packaged_extension
from tests.lake.pgcluster import PG_PASSWORD, PostgresCluster, running_postgres

# The default environment (newest duckdb, no extensions, no moto) does not collect these tests.
LAKE_PARTS_MISSING = packaged_extension("ducklake") is None or importlib.util.find_spec("moto") is None
collect_ignore_glob = ["test_*.py"] if LAKE_PARTS_MISSING else []

S3_KEY_ID = "lake-test-key"
S3_SECRET = "lake-test-secret"
S3_REGION = "us-east-1"
PG_LOCAL = extensions_needed("postgres:", "/data")
PG_S3 = extensions_needed("postgres:", "s3://bucket/")


@pytest.fixture(scope="session")
def postgres_cluster():
    """A PostgreSQL cluster of its own in a temp dir, on a free loopback port, password auth."""
    with running_postgres() as cluster:
        yield cluster


@pytest.fixture
def pg_catalog(postgres_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh database for one test, as DuckLake's catalog string: ``postgres:<libpq conninfo>``.

    The password is not in it: libpq reads PGPASSWORD from the environment, as a real deployment's
    would (or ~/.pgpass)."""
    monkeypatch.setenv("PGPASSWORD", PG_PASSWORD)
    return postgres_cluster.catalog(postgres_cluster.create_database())


@dataclass
class S3Server:
    endpoint: str  # host:port, as DuckDB's ENDPOINT wants it
    _names = itertools.count(1)

    def create_bucket(self) -> str:
        name = f"lake-{next(self._names)}"
        self._client().create_bucket(Bucket=name)
        return name

    def secret_statement(self) -> str:
        """DuckDB's S3 secret for this server: the keys come from the AWS credential chain (here
        the environment), only the endpoint is named."""
        return (
            "CREATE SECRET (TYPE s3, PROVIDER credential_chain, "
            f"ENDPOINT '{self.endpoint}', URL_STYLE 'path', USE_SSL false)"
        )

    def _client(self):
        import boto3  # moto's own dependency, in the lake-test group only

        return boto3.client(
            "s3", endpoint_url=f"http://{self.endpoint}", region_name=S3_REGION,
            aws_access_key_id=S3_KEY_ID, aws_secret_access_key=S3_SECRET,
        )

    def list_keys(self, bucket: str) -> list[str]:
        client = self._client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 in server mode, in its own process on a loopback port it picks and prints."""
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        endpoint = None
        for line in process.stdout:
            match = re.search(r"Running on http://(127\.0\.0\.1:\d+)", line)
            if match:
                endpoint = match.group(1)
                break
        if endpoint is None:
            pytest.fail(f"moto server exited ({process.wait()}) without saying where it listens")
        # Keep reading its request log so a full pipe never stalls it.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        yield S3Server(endpoint=endpoint)
    finally:
        process.terminate()
        process.wait()


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; its credentials only in the standard AWS environment variables."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_REGION", S3_REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", S3_REGION)
    return s3_server.create_bucket()


@pytest.fixture
def connect():
    """Opens in-memory DuckDB connections with the lake extensions loaded from their packages and
    no network fallback (autoinstall off: a missing extension fails instead of being downloaded);
    closes them at the end of the test. Loads what a PostgreSQL catalog with local data needs,
    unless told which extensions to load."""
    opened: list[duckdb.DuckDBPyConnection] = []

    def open_connection(extensions: tuple[str, ...] = PG_LOCAL) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
        opened.append(con)
        load_lake_extensions(con, extensions)
        return con

    yield open_connection
    for con in opened:
        con.close()
