"""Connecting DuckDB to a DuckLake (#18): the extensions it needs, and the ATTACH statement.

DuckLake keeps its catalog in PostgreSQL (or SQLite on one machine) and its data in Parquet files
on a folder or S3. DuckDB reaches those through extensions: ducklake for the format,
postgres_scanner / sqlite_scanner for the catalog, httpfs for s3:// paths, aws for the AWS
credential chain.

Offline, and in tests and CI, the extensions come from the `lake` extra's `duckdb-extension-*`
packages: a third party's repackaging of DuckDB's official builds, made for one duckdb version
(1.5.5). Each holds ``duckdb_extension_<name>/extensions/v<duckdb version>/<name>.duckdb_extension``.
A ``LOAD`` of that path needs no network and writes nothing under ``~/.duckdb`` (the packages' own
``import_extension`` helper runs ``INSTALL``, which copies the file there), so a run uses exactly
the build uv.lock pins. Without the packages, DuckDB's ``INSTALL name; LOAD name`` fetches the
official build from DuckDB's repository.
"""

from __future__ import annotations

import importlib.util
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import duckdb

from pipeline.errors import ConfigError, DiskError, command_hint, first_line
from pipeline.lease import Lease
from pipeline.sqlfiles import MIGRATIONS_TABLE, read_sql
from pipeline.store import Published, lock_is_free, transaction

LAKE_EXTENSIONS = ("ducklake", "postgres_scanner", "sqlite_scanner", "httpfs", "aws")


class ExtensionUnavailable(RuntimeError):
    """An extension is neither packaged for this duckdb nor installable by DuckDB itself."""


def packaged_extension(name: str) -> Path | None:
    """The file the `duckdb-extension-<name>` package ships for this duckdb, if it is installed."""
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        return None
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    path = package_dir / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    return path if path.is_file() else None


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def load_statement(name: str) -> str:
    """The SQL that loads extension ``name``: from its package's file when installed."""
    path = packaged_extension(name)
    if path is None:
        return f"INSTALL {name}; LOAD {name};"
    return f"LOAD {sql_string(str(path))};"


def extensions_needed(catalog: str, data_path: str | None = None) -> tuple[str, ...]:
    """The extensions a lake with this catalog and data path needs (each LOAD verifies its
    signature over a ~40 MB file, ~0.15 s: load no more than needed)."""
    names = ["ducklake"]
    if catalog.startswith("postgres:"):
        names.append("postgres_scanner")
    elif catalog.startswith("sqlite:"):
        names.append("sqlite_scanner")
    if data_path is not None and data_path.startswith(("s3://", "s3a://", "s3n://")):
        names += ["httpfs", "aws"]
    return tuple(names)


def load_lake_extensions(con: duckdb.DuckDBPyConnection, names: tuple[str, ...] = LAKE_EXTENSIONS) -> None:
    for name in names:
        try:
            con.execute(load_statement(name))
        except duckdb.Error as exc:
            raise ExtensionUnavailable(
                f"DuckDB extension {name!r} is not available (install callsync with the `lake` extra): {exc}"
            ) from exc


def attach_statement(
    catalog: str,
    data_path: str | None = None,
    alias: str = "lake",
    read_only: bool = False,
    options: tuple[str, ...] = (),
    if_not_exists: bool = False,
) -> str:
    """``ATTACH 'ducklake:<catalog>' AS <alias> (...)``.

    ``catalog`` is ``postgres:<libpq conninfo>`` or ``sqlite:<file>``; passwords stay out of it
    (libpq reads PGPASSWORD or ~/.pgpass). ``data_path`` is needed when the lake is created; later
    attaches read it from the catalog. ``options`` are further ATTACH options as SQL, e.g.
    ``"DATA_INLINING_ROW_LIMIT 0"``."""
    written = []
    if data_path is not None:
        written.append(f"DATA_PATH {sql_string(data_path)}")
    if read_only:
        written.append("READ_ONLY")
    written.extend(options)
    suffix = f" ({', '.join(written)})" if written else ""
    attach = "ATTACH IF NOT EXISTS" if if_not_exists else "ATTACH"
    return f"{attach} {sql_string('ducklake:' + catalog)} AS {alias}{suffix}"


# --- the lake store: the same seam as pipeline.store.FileStore ---------------------------

ALIAS = "lake"
# Migrations up to this one are replayed into a scratch DuckDB and their tables created in a
# new lake schema column by column: they use PRIMARY KEY, sequences and SET NOT NULL, which
# DuckLake refuses. Every later migration runs as it is on both backends, so it must not.
LAKE_BASELINE = "008_redact_url_credentials"
FILES_BEFORE_COMPACT = 200  # live data files in a schema past which a run ends with a compact


def s3_secret_statement(endpoint: str | None) -> str:
    """DuckDB's S3 secret from the AWS credential chain (environment, ~/.aws, instance role);
    ``endpoint`` (http[s]://host:port) for an S3-compatible server instead of AWS."""
    options = ["TYPE s3", "PROVIDER credential_chain"]
    if endpoint is not None:
        scheme, _, host = endpoint.partition("://")
        options += [f"ENDPOINT {sql_string(host.rstrip('/'))}", "URL_STYLE 'path'", f"USE_SSL {scheme == 'https'}"]
    return f"CREATE OR REPLACE SECRET callsync_s3 ({', '.join(options)})"


class LakeStore:
    """One schema of a DuckLake: the tables and views of a DuckDB file, in Parquet files on a
    folder or S3, their catalog in PostgreSQL (or SQLite on one machine).

    Every commit is a DuckLake snapshot that readers on any machine see at once, so there is
    nothing to publish; readers never wait for the writer, nor it for them. One writer per
    schema: a lease in the PostgreSQL catalog (pipeline.lease), or a lock file beside a
    SQLite catalog. DuckLake has no keys, so uniqueness is the writer's, as for `calls` in a
    file: the statements upsert with MERGE and classify_calls."""

    renews_connections = False  # a commit leaves its rows in Parquet, not in the connection's memory

    def __init__(
        self,
        catalog: str,
        data_path: str,
        schema: str = "main",
        *,
        s3_endpoint: str | None = None,
        keep_snapshots_days: int = 7,
        lease_s: float = 120.0,
        orphans_after_s: float = 3600.0,
        compact_after_files: int = FILES_BEFORE_COMPACT,
    ):
        self.catalog = catalog
        self.data_path = data_path
        self.schema = schema
        self.s3_endpoint = s3_endpoint
        self.keep_snapshots_days = keep_snapshots_days
        self.lease_s = lease_s
        self.orphans_after_s = orphans_after_s
        self.compact_after_files = compact_after_files
        self.extensions = extensions_needed(catalog, data_path)
        self.path = f"lake schema {schema}"  # what messages call it
        self._lease = None
        self._instances: dict[bool, duckdb.DuckDBPyConnection] = {}  # by read_only

    # -- the seam --

    def lock(self):
        if self.catalog.startswith("postgres:"):
            self._lease = Lease(self.catalog.removeprefix("postgres:"), self.schema, self.lease_s, self._bare)
            return self._lease
        from pipeline.state import RunLock

        return RunLock(self._lock_file_base)

    def open(self) -> duckdb.DuckDBPyConnection:
        conn = self.connect(read_only=False)
        try:
            create_baseline(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def transaction(self, conn: duckdb.DuckDBPyConnection):
        return transaction(conn)  # a conflict cannot happen: one writer per schema

    def check_lock(self) -> None:
        if self._lease is not None:
            self._lease.check()

    def checkpoint(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Nothing to do: a commit has written its rows to Parquet already."""

    def is_published(self) -> bool:
        return True

    def exists(self) -> bool:
        return True

    def publish(self, conn: duckdb.DuckDBPyConnection, *, rewrite: bool = False):
        """Every commit is visible already. ``rewrite=True`` (after an erasure): purge."""
        started = time.monotonic()
        if rewrite:
            self.purge(conn)
        return Published(self.path, 0, time.monotonic() - started, "purge" if rewrite else "commit")

    def rewrite(self, then) -> None:
        """Erased rows leave every file: see ``purge``; ``then(conn)`` records it."""
        conn = self.open()
        try:
            self.purge(conn)
            with transaction(conn):
                then(conn)
        finally:
            conn.close()

    @contextmanager
    def read_only(self) -> Iterator[duckdb.DuckDBPyConnection]:
        conn = self.connect(read_only=True)
        try:
            yield conn
        finally:
            conn.close()

    # -- connections --

    def _bare(self, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """A connection of its own (a cursor) on one of the store's in-memory DuckDBs, which load
        the extensions once per process (each LOAD checks a ~40 MB file's signature) and keep
        what is attached for all their connections: the lease's, the writer's, upkeep's. Readers
        have their own, since a lake attached read-only there stays read-only."""
        if read_only not in self._instances:
            instance = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
            try:
                load_lake_extensions(instance, self.extensions)
            except ExtensionUnavailable as exc:
                instance.close()
                raise ConfigError(f"{exc}".splitlines()[0]) from None
            self._instances[read_only] = instance
        return self._instances[read_only].cursor()

    def connect(self, *, read_only: bool) -> duckdb.DuckDBPyConnection:
        """The lake attached as ``lake``, the account's schema the default: the SQL in sql/
        names its tables as it does in a file."""
        conn = self._bare(read_only)
        try:
            if self.is_s3:
                conn.execute(s3_secret_statement(self.s3_endpoint))
            conn.execute(attach_statement(self.catalog, self.data_path, ALIAS, read_only=read_only, if_not_exists=True))
            if not read_only:
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ALIAS}.{self.schema}")
            conn.execute(f"USE {ALIAS}.{self.schema}")
        except duckdb.Error as exc:
            conn.close()
            if not _missing(exc):
                raise DiskError(f"cannot attach the lake: {first_line(exc)}") from None
            raise DiskError(f"{self.path} does not exist yet (run `{command_hint('sync')}` first)") from None
        return conn

    @property
    def _lock_file_base(self) -> Path:
        """Beside a SQLite catalog, one lock file per schema: ``<catalog file>.<schema>.lock``."""
        return Path(f"{self.catalog.removeprefix('sqlite:')}.{self.schema}")

    @property
    def is_s3(self) -> bool:
        return self.data_path.startswith(("s3://", "s3a://", "s3n://"))

    # -- upkeep --

    def data_files(self, conn: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int]]:
        """Live data files per table of the schema: (files, bytes)."""
        rows = conn.execute(read_sql("lake/data_files.sql"), {"schema": self.schema}).fetchall()
        return {table: (int(files), int(size)) for table, files, size in rows}

    def compact(self, conn: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        """Merge the schema's small files, expire snapshots older than keep_snapshots_days, and
        delete the files no snapshot needs, with the orphans a killed run left (see
        ``_orphans_before``). Call under ``lock()``."""
        before = self.data_files(conn)
        conn.execute(f"CALL ducklake_flush_inlined_data('{ALIAS}', schema_name => {sql_string(self.schema)})")
        for table in before:
            conn.execute(
                f"CALL ducklake_merge_adjacent_files('{ALIAS}', {sql_string(table)}, schema => {sql_string(self.schema)})"
            )
        expired = conn.execute(
            f"CALL ducklake_expire_snapshots('{ALIAS}', older_than => now() - to_days({int(self.keep_snapshots_days)}))"
        ).fetchall()
        # A reader's query that began before a merge may still read the files it replaced: those
        # go once as old as an orphan may be.
        grace = {"before": datetime.now(timezone.utc) - timedelta(seconds=self.orphans_after_s)}
        removed = conn.execute(f"CALL ducklake_cleanup_old_files('{ALIAS}', older_than => $before)", grace).fetchall()
        orphans = conn.execute(
            f"CALL ducklake_delete_orphaned_files('{ALIAS}', older_than => $before)", {"before": self._orphans_before()}
        ).fetchall()
        after = self.data_files(conn)
        return {
            "files_before": sum(files for files, _ in before.values()),
            "files_after": sum(files for files, _ in after.values()),
            "files_per_table": {table: files for table, (files, _) in after.items()},
            "snapshots_expired": len(expired),
            "files_removed": len(removed),
            "orphans_removed": len(orphans),
        }

    def _orphans_before(self) -> datetime:
        """A file no snapshot names is an orphan once it is older than ``orphans_after_s`` and
        than the start of any other schema's running writer (it has files it has not committed
        yet; ours is not running: we hold the lease)."""
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=self.orphans_after_s)
        if self._lease is not None:
            oldest = self._lease.oldest_other_taken_at()
            if oldest is not None:
                cutoff = min(cutoff, datetime.fromisoformat(oldest))
        return cutoff

    def upkeep_due(self, conn: duckdb.DuckDBPyConnection) -> bool:
        """Whether the schema holds more than ``compact_after_files`` live data files."""
        return sum(files for files, _ in self.data_files(conn).values()) > self.compact_after_files

    def after_run(self) -> dict[str, Any] | None:
        """Compact, if due (under the lock)."""
        conn = self.connect(read_only=False)
        try:
            return self.compact(conn) if self.upkeep_due(conn) else None
        finally:
            conn.close()

    def purge(self, conn: duckdb.DuckDBPyConnection) -> None:
        """After an erasure: rewrite the files that hold deleted rows, end every older snapshot
        (time travel would show the erased rows) and delete the files only they needed."""
        conn.execute(f"CALL ducklake_flush_inlined_data('{ALIAS}', schema_name => {sql_string(self.schema)})")
        for table in self.data_files(conn):
            conn.execute(
                f"CALL ducklake_rewrite_data_files('{ALIAS}', {sql_string(table)}, schema => {sql_string(self.schema)},"
                " delete_threshold => 0)"
            )
        conn.execute(f"CALL ducklake_expire_snapshots('{ALIAS}', older_than => now())")
        conn.execute(f"CALL ducklake_cleanup_old_files('{ALIAS}', cleanup_all => true)")

    # -- status --

    def is_locked(self) -> bool:
        return self.writer() is not None

    def writer(self) -> str | None:
        """Who writes the schema now: its lease's holder and until when, or None."""
        if not self.catalog.startswith("postgres:"):
            free = lock_is_free(self._lock_file_base)
            return None if free else "a run on this machine (lock file)"
        held = Lease(self.catalog.removeprefix("postgres:"), self.schema, self.lease_s, self._bare).peek()
        return f"{held[0]}, lease until {held[2]}" if held is not None and held[1] else None

    def describe(self, conn: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        """For `callsync status`: the newest snapshot, the files, and how analysts attach."""
        snapshot = conn.execute(read_sql("lake/last_snapshot.sql")).fetchone()
        files = self.data_files(conn)
        return {"lake": {
            "lake_schema": self.schema,
            "data_path": self.data_path,
            "snapshot_id": snapshot[0] if snapshot else None,
            "snapshot_at": snapshot[1] if snapshot else None,
            "data_files": sum(count for count, _ in files.values()),
            "data_bytes": sum(size for _, size in files.values()),
            "writer": self.writer(),
            "attach": self.analyst_statements(),
        }}

    def analyst_statements(self) -> list[str]:
        """What an analyst runs in the duckdb CLI or Python to read this schema (read-only)."""
        statements = [f"INSTALL {name}; LOAD {name};" for name in self.extensions]
        if self.is_s3:
            statements.append(s3_secret_statement(self.s3_endpoint).replace("callsync_s3", "lake_s3") + ";")
        statements.append(attach_statement(self.catalog, None, ALIAS, read_only=True) + ";")
        statements.append(f"USE {ALIAS}.{self.schema};")
        return statements


def create_baseline(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """A new lake schema gets the tables and views the migrations up to LAKE_BASELINE make,
    without the keys and sequences DuckLake refuses, and those migrations recorded as applied."""
    from pipeline import load

    exists = conn.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database()"
        " AND schema_name = current_schema() AND table_name = ?",
        [MIGRATIONS_TABLE],
    ).fetchone()[0]
    if exists:
        return []
    scratch = duckdb.connect()
    try:
        applied = load.apply_migrations(scratch, through=LAKE_BASELINE)
        tables: dict[str, list[str]] = {}
        for table, column, data_type, nullable, default in scratch.execute(read_sql("lake/baseline_columns.sql")).fetchall():
            spec = f'"{column}" {data_type}' + ("" if nullable else " NOT NULL")
            if default is not None and "nextval" not in default:
                spec += f" DEFAULT {default}"
            tables.setdefault(table, []).append(spec)
        views = scratch.execute(read_sql("lake/baseline_views.sql")).fetchall()
        recorded = scratch.execute(f"SELECT name, applied_at FROM {MIGRATIONS_TABLE}").fetchall()
    finally:
        scratch.close()
    conn.execute("BEGIN TRANSACTION")
    try:
        for table, specs in tables.items():
            conn.execute(f'CREATE TABLE "{table}" ({", ".join(specs)})')
        for _, sql in views:
            conn.execute(sql)
        conn.executemany(f"INSERT INTO {MIGRATIONS_TABLE} VALUES (?, ?)", recorded)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return applied


def _missing(exc: duckdb.Error) -> bool:
    """A read-only attach of a lake or schema no run has created yet."""
    text = str(exc)
    return isinstance(exc, duckdb.CatalogException) or any(
        words in text for words in ("unable to open database file", "creating a new DuckLake is explicitly disabled")
    )

