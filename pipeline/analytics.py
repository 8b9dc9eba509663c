"""Named queries (sql/queries/*.sql) and ad-hoc SQL, on a read-only connection.

A named query is one SQL file; its file stem is its name. Its opening comment says
what it answers (the first line, shown by ``callsync query --list``) and declares
its parameters, one line each, optionally with a default::

    -- Calls whose transcript mentions a phrase (case-insensitive).
    -- param: phrase  text to search for
    -- param: limit = 100  how many calls to show

The SQL uses them as DuckDB named parameters (``$phrase``). Values arrive as text;
the SQL casts where it needs a number (``CAST($limit AS INTEGER)``).

Errors are one line: a mistake in the query (syntax, unknown table or column, a bad
or missing parameter, an unknown name, a write on the read-only connection) is a
UsageError (exit 2); a missing or unreadable database file is a DiskError (exit 1).
Queries read the published snapshot (see pipeline.store), which no sync holds: they
never wait. Only an analyst's read-write session on that file keeps them out
(DatabaseLockedError, exit 1, at once) until the next publish replaces it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping, Sequence
from uuid import UUID

import duckdb

from pipeline.errors import DatabaseLockedError, DiskError, UsageError, command_hint, first_line
from pipeline.sqlfiles import MIGRATIONS_TABLE, sql_dir
from pipeline.store import Store, as_store

_NAME = re.compile(r"[A-Za-z_][\w-]*")
_PARAM_LINE = re.compile(r"param:\s*(?P<name>\w+)(?:\s*=\s*(?P<default>\S+))?\s*(?P<description>.*)")

Columns = list[str]
Rows = list[tuple]


@dataclass(frozen=True)
class Param:
    name: str
    default: str | None
    description: str


@dataclass(frozen=True)
class NamedQuery:
    name: str
    description: str
    params: tuple[Param, ...]
    sql: str

    def values(self, given: Mapping[str, str]) -> dict[str, str]:
        """The declared parameters' values: given, else their defaults."""
        declared = {param.name: param for param in self.params}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            accepted = ", ".join(declared) or "none"
            raise UsageError(f"query {self.name}: unknown parameter {unknown[0]} (it takes: {accepted})")
        values = {name: given.get(name, param.default) for name, param in declared.items()}
        missing = [name for name, value in values.items() if value is None]
        if missing:
            param = declared[missing[0]]
            raise UsageError(f"query {self.name}: missing parameter: --param {param.name}=VALUE ({param.description})")
        return values


# --- the catalogue of named queries ------------------------------------------------


def queries_dir() -> Path:
    return sql_dir() / "queries"


def list_queries() -> list[NamedQuery]:
    return [parse_query(path.stem, path.read_text()) for path in sorted(queries_dir().glob("*.sql"))]


def load_query(name: str) -> NamedQuery:
    path = queries_dir() / f"{name}.sql"
    if not _NAME.fullmatch(name) or not path.is_file():
        raise UsageError(f"no query named {name!r} (see `{command_hint('query --list')}`)")
    return parse_query(name, path.read_text())


def parse_query(name: str, text: str) -> NamedQuery:
    """The description and parameters from the file's opening comment lines."""
    header = []
    for line in text.splitlines():
        if not line.strip().startswith("--"):
            break
        header.append(line.strip().removeprefix("--").strip())
    params = tuple(
        Param(match["name"], match["default"], match["description"].strip())
        for match in map(_PARAM_LINE.fullmatch, header)
        if match
    )
    description = header[0] if header and not _PARAM_LINE.fullmatch(header[0]) else ""
    return NamedQuery(name, description, params, text)


def is_query_name(name_or_sql: str) -> bool:
    """A bare word names a query; anything else is SQL."""
    return bool(_NAME.fullmatch(name_or_sql.strip()))


# --- running ---------------------------------------------------------------------------


def run_query(database: Path | str | Store, name_or_sql: str, params: Mapping[str, str] | None = None) -> tuple[Columns, Rows]:
    """Run a named query or ad-hoc SQL on a read-only connection to the published snapshot."""
    sql, values = resolve(name_or_sql, params or {})
    with as_store(database).read_only() as conn:
        return execute(conn, sql, values)


def resolve(name_or_sql: str, params: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The SQL to run and its parameter values. Ad-hoc SQL gets the parameters as given."""
    if not name_or_sql.strip():
        raise UsageError("nothing to run: give a query name or SQL")
    if is_query_name(name_or_sql):
        query = load_query(name_or_sql.strip())
        return query.sql, query.values(params)
    return name_or_sql, dict(params)


def execute(conn: duckdb.DuckDBPyConnection, sql: str, values: Mapping[str, Any]) -> tuple[Columns, Rows]:
    conn.execute("SET TimeZone = 'UTC'")  # timestamps come back in UTC, whatever the machine's zone
    try:
        result = conn.execute(sql, dict(values) or None)
        if result.description is None:
            return [], []
        return [column[0] for column in result.description], result.fetchall()
    except duckdb.IOException as exc:
        error = DatabaseLockedError if "lock" in str(exc).lower() else DiskError
        raise error(first_line(exc)) from None
    except duckdb.Error as exc:
        hint = _schema_hint(conn) if isinstance(exc, duckdb.CatalogException) else ""
        raise UsageError(first_line(exc) + hint) from None


def parse_params(pairs: Sequence[str]) -> dict[str, str]:
    """--param k=v pairs as a dict."""
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--param {pair!r}: expected NAME=VALUE")
        params[name.strip()] = value
    return params


def _schema_hint(conn: duckdb.DuckDBPyConnection) -> str:
    """Why a table or view may be missing: the database predates a migration."""
    try:
        applied = {row[0] for row in conn.execute(f"SELECT name FROM {MIGRATIONS_TABLE}").fetchall()}
    except duckdb.Error:
        return " (this is not a callsync database, or it is empty)"
    missing = [path.stem for path in sorted((sql_dir() / "migrations").glob("*.sql")) if path.stem not in applied]
    if not missing:
        return ""
    return f" (the database predates migration {missing[0]}: the next sync or backfill upgrades it)"



# --- output -----------------------------------------------------------------------------


def to_csv(columns: Columns, rows: Rows) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if value is None else _plain(value) for value in row] for row in rows])
    return out.getvalue()


def to_json(columns: Columns, rows: Rows) -> str:
    """A list of objects, one per row."""
    return json.dumps([dict(zip(columns, row)) for row in rows], default=_plain, indent=2)


def _plain(value: Any) -> Any:
    """A JSON/CSV-friendly form of what DuckDB returns."""
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (UUID, Path)):
        return str(value)
    if isinstance(value, (list, tuple, dict, str, int, float, bool)) or value is None:
        return value
    return str(value)


def to_table(columns: Columns, rows: Rows):
    """A rich Table; numbers are right-aligned."""
    from rich.table import Table

    table = Table()
    for index, name in enumerate(columns):
        sample = next((row[index] for row in rows if row[index] is not None), None)
        numeric = isinstance(sample, (int, float, Decimal)) and not isinstance(sample, bool)
        table.add_column(name, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*["" if value is None else _cell(value) for value in row])
    return table


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        if value.utcoffset() == timedelta(0):
            return value.replace(tzinfo=None).isoformat(sep=" ") + "Z"
        return value.isoformat(sep=" ")
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=_plain)
    return str(value)
