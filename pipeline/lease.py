"""One writer per lake schema, across machines: a lease row in the catalog's PostgreSQL.

A run takes the lease of its schema before it writes and renews it every third of
``[database] lake_lease_s`` from a thread of its own; a second run for the same schema,
on any machine, finds it taken and exits 75, as the lock file does for a DuckDB file. A
holder that died (kill -9, a machine gone) stops renewing, and its lease stops blocking
once it expires, by PostgreSQL's clock. Different schemas have different rows and never
wait for each other.

The SQL is PostgreSQL's (sql/lake/lease_*.sql), sent through DuckDB's postgres extension:
``postgres_execute`` for the conditional upsert (``postgres_query`` wraps a query in COPY,
so it cannot run INSERT ... RETURNING), then a read of who holds the row.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from typing import Any

import duckdb

from pipeline.errors import DiskError, LockHeldError, first_line
from pipeline.sqlfiles import read_sql

log = logging.getLogger("callsync.lease")
PG_ALIAS = "callsync_catalog_pg"


def pg_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class Lease:
    """``with Lease(...)``: hold the schema's lease for the block, or raise LockHeldError."""

    def __init__(self, conninfo: str, schema: str, seconds: float, connect: Any):
        self.conninfo = conninfo
        self.schema = schema
        self.seconds = float(seconds)
        self._connect = connect  # () -> a DuckDB connection with the postgres extension loaded (a cursor)
        self.holder = f"{socket.gethostname()} pid {os.getpid()} {secrets.token_hex(4)}"
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renewed_at = 0.0  # monotonic time of the last renewal that PostgreSQL confirmed
        self.lost: str | None = None  # why this run may no longer write, once it may not
        self._guard = threading.Lock()  # the renewing thread and the run share one connection

    def __enter__(self) -> Lease:
        self._conn = self._catalog()
        try:
            self._create_table()
            if not self._take():
                holder, _, until = self.holder_row() or ("?", True, "?")
                raise LockHeldError(
                    f"another callsync run holds lake schema {self.schema} ({holder}, lease until {until}); exiting"
                )
        except BaseException:
            self._close()
            raise
        self._thread = threading.Thread(target=self._renew_until_stopped, name="callsync-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._execute("lease_release")
        except duckdb.Error as exc:  # it expires by itself
            log.warning("could not release the lease on lake schema %s: %s", self.schema, first_line(exc))
        finally:
            self._close()

    def peek(self) -> tuple[str, bool, str] | None:
        """Who holds the lease (holder, running, until), without taking it: for `status`."""
        self._conn = self._catalog()
        try:
            return self.holder_row()
        except duckdb.Error:  # no lease table yet: no run ever held one
            return None
        finally:
            self._close()

    def check(self) -> None:
        """Raise unless the lease is still ours: called before each commit."""
        if self.lost is None and time.monotonic() - self._renewed_at > self.seconds:
            self.lost = f"the lease on lake schema {self.schema} was not renewed for {self.seconds:.0f}s"
        if self.lost is not None:
            raise LockHeldError(f"{self.lost}; stopping before another run's writes could mix with this one's")

    def holder_row(self) -> tuple[str, bool, str] | None:
        rows = self._query("lease_holder")
        return tuple(rows[0]) if rows else None

    def oldest_other_taken_at(self) -> str | None:
        rows = self._query("lease_oldest_other")
        return rows[0][0] if rows else None

    def _catalog(self) -> duckdb.DuckDBPyConnection:
        conn = self._connect()
        try:
            conn.execute(f"ATTACH IF NOT EXISTS {pg_literal(self.conninfo)} AS {PG_ALIAS} (TYPE postgres)")
        except duckdb.Error as exc:
            conn.close()
            raise DiskError(f"lake catalog unreachable: {first_line(exc)}") from None
        return conn

    def _create_table(self) -> None:
        try:
            self._execute("lease_table")
        except duckdb.Error:  # two first runs at once: CREATE IF NOT EXISTS races in PostgreSQL
            self._execute("lease_table")

    def _take(self) -> bool:
        self._execute("lease_take", seconds=self.seconds)
        row = self.holder_row()
        taken = row is not None and row[0] == self.holder
        if taken:
            self._renewed_at = time.monotonic()
        return taken

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                if not self._take():
                    holder = (self.holder_row() or ("?",))[0]
                    self.lost = f"another run ({holder}) took the lease on lake schema {self.schema}"
                    return
            except duckdb.Error as exc:  # PostgreSQL away for a moment: check() decides when it is too long
                log.warning("could not renew the lease on lake schema %s: %s", self.schema, first_line(exc))

    def _sql(self, name: str, **values: Any) -> str:
        literals = {"schema": pg_literal(self.schema), "holder": pg_literal(self.holder)}
        literals.update({key: repr(float(value)) for key, value in values.items()})
        return read_sql(f"lake/{name}.sql").format(**literals)

    def _execute(self, name: str, **values: Any) -> None:
        with self._guard:
            self._conn.execute(f"CALL postgres_execute('{PG_ALIAS}', $sql)", {"sql": self._sql(name, **values)})

    def _query(self, name: str) -> list[tuple]:
        with self._guard:
            return self._conn.execute(
                f"SELECT * FROM postgres_query('{PG_ALIAS}', $sql)", {"sql": self._sql(name)}
            ).fetchall()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

