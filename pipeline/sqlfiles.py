"""The SQL in sql/: where it is, and running a statement file. Imports only duckdb, so
the read-only commands (query, status) can use it without loading the sync's modules."""

from __future__ import annotations

from functools import cache
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
    for query, names in _statements(name):
        result = conn.execute(query, {key: params[key] for key in names} or None)
    return result


@cache
def _statements(name: str) -> tuple[tuple[str, frozenset[str]], ...]:
    """Read and split a statement file once per process: the writer runs some on every commit."""
    return tuple(
        (statement.query, frozenset(statement.named_parameters))
        for statement in duckdb.extract_statements(read_sql(f"statements/{name}.sql"))
    )


def split_statements(script: str) -> list[str]:
    return [statement.query for statement in duckdb.extract_statements(script)]
