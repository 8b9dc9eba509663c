"""Real parts for the lake tests: a PostgreSQL cluster and an S3-compatible server, both on loopback.

These tests run only with the `lake` extra and the `lake-test` group
(``uv run --extra lake --group lake-test pytest tests/lake``, as .ci/run does); the default
environment has neither the DuckDB extensions nor moto, and does not collect them.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from pipeline.lake import extensions_needed, load_lake_extensions, packaged_extension

# The default environment (newest duckdb, no extensions, no moto) does not collect these tests.
LAKE_PARTS_MISSING = packaged_extension("ducklake") is None or importlib.util.find_spec("moto") is None
collect_ignore_glob = ["test_*.py"] if LAKE_PARTS_MISSING else []

# postgres refuses to run as root: when the tests run as root (CI), the cluster belongs to this user.
PG_USER_NAME = "callsync-pg"
PG_SUPERUSER = "callsync"
PG_PASSWORD = "lake-test-password"  # a throwaway cluster's; handed to libpq only through PGPASSWORD
S3_KEY_ID = "lake-test-key"
S3_SECRET = "lake-test-secret"
S3_REGION = "us-east-1"
PG_LOCAL = extensions_needed("postgres:", "/data")
PG_S3 = extensions_needed("postgres:", "s3://bucket/")


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bindir() -> Path:
    found = shutil.which("pg_config")
    if found is None:
        pytest.fail("pg_config not found: install Debian's postgresql package (.ci/run does)")
    bindir = Path(subprocess.run([found, "--bindir"], check=True, capture_output=True, text=True).stdout.strip())
    if not (bindir / "initdb").is_file():
        pytest.fail(f"{bindir}/initdb not found: install Debian's postgresql server package (.ci/run does)")
    return bindir


def _cluster_owner() -> str | None:
    """None: run postgres as ourselves. As root: a dedicated system user, created once."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_USER_NAME)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER_NAME],
            check=True,
        )
    return PG_USER_NAME


@dataclass
class PostgresCluster:
    bindir: Path
    datadir: Path
    port: int
    owner: str | None
    _names = itertools.count(1)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        """A server binary run as the cluster's owner, output captured (fails the test on error)."""
        done = subprocess.run(args, user=self.owner, capture_output=True, text=True, cwd=self.datadir.parent)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def create_database(self) -> str:
        name = f"lake_{next(self._names)}"
        env = {**os.environ, "PGPASSWORD": PG_PASSWORD}
        subprocess.run(
            [str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_SUPERUSER, name],
            check=True, env=env, capture_output=True,
        )
        return name


@pytest.fixture(scope="session")
def postgres_cluster():
    """A PostgreSQL cluster of its own in a temp dir, on a free loopback port, password auth."""
    bindir = _pg_bindir()
    owner = _cluster_owner()
    root = Path(tempfile.mkdtemp(prefix="callsync-pg-"))
    datadir = root / "data"
    pwfile = root / "pwfile"
    pwfile.write_text(PG_PASSWORD + "\n")
    if owner is not None:
        shutil.chown(root, owner)
        shutil.chown(pwfile, owner)
    cluster = PostgresCluster(bindir=bindir, datadir=datadir, port=0, owner=owner)
    cluster.run(
        str(bindir / "initdb"), "-D", str(datadir), "-U", PG_SUPERUSER, f"--pwfile={pwfile}",
        "--auth=scram-sha-256", "--encoding=UTF8", "--no-sync",
    )
    for _ in range(3):  # a free port can be taken by someone else before postgres binds it
        cluster.port = _free_loopback_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={cluster.port} "
            f"-c unix_socket_directories='{root}' -c fsync=off"
        )
        pg_ctl = [str(bindir / "pg_ctl"), "-D", str(datadir), "-o", options, "-l", str(root / "log"), "-w", "start"]
        if subprocess.run(pg_ctl, user=owner, capture_output=True, cwd=root).returncode == 0:
            break
    else:
        pytest.fail(f"postgres did not start: {(root / 'log').read_text()[-2000:]}")
    try:
        yield cluster
    finally:
        subprocess.run([str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "fast", "-w", "stop"],
                       user=owner, capture_output=True, cwd=root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_catalog(postgres_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh database for one test, as DuckLake's catalog string: ``postgres:<libpq conninfo>``.

    The password is not in it: libpq reads PGPASSWORD from the environment, as a real deployment's
    would (or ~/.pgpass)."""
    monkeypatch.setenv("PGPASSWORD", PG_PASSWORD)
    name = postgres_cluster.create_database()
    return f"postgres:dbname={name} host=127.0.0.1 port={postgres_cluster.port} user={PG_SUPERUSER}"


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
