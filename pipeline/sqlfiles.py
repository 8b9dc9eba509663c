"""The SQL in sql/: where it is, and running a statement file. Imports only duckdb, so
the read-only commands (query, status) can use it without loading the sync's modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

MIGRATIONS_TABLE = "schema_migrations"


def sql_dir() -> Path:
    """sql/ beside the package in a checkout; inside it when installed as a wheel."""
    packaged = Path(__file__).parent / "sql"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "sql"


def read_sql(relative: str) -> str:
    return (sql_dir() / relative).read_text()


def run_sql(conn: duckdb.DuckDBPyConnection, name: str, **params: Any) -> duckdb.DuckDBPyConnection:
    """Run sql/statements/NAME.sql, one statement at a time, each with the parameters it names."""
    result = conn
    for query, names in _statements(conn, name):
        result = conn.execute(query, {key: params[key] for key in names} or None)
    return result


_PARSED: dict[str, tuple[tuple[str, frozenset[str]], ...]] = {}


def _statements(conn: duckdb.DuckDBPyConnection, name: str) -> tuple[tuple[str, frozenset[str]], ...]:
    """Read and split a statement file once per process: the writer runs some on every commit."""
    parsed = _PARSED.get(name)
    if parsed is None:
        parsed = _PARSED[name] = tuple(
            (statement.query, frozenset(statement.named_parameters))
            for statement in conn.extract_statements(read_sql(f"statements/{name}.sql"))
        )
    return parsed


def split_statements(conn: duckdb.DuckDBPyConnection, script: str) -> list[str]:
    """Parsed by ``conn``: duckdb.extract_statements would start DuckDB's default in-memory
    database for it, ~25 ms of every run and every `callsync status`."""
    return [statement.query for statement in conn.extract_statements(script)]
