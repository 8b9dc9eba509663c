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
from pathlib import Path

import duckdb

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
    return f"ATTACH {sql_string('ducklake:' + catalog)} AS {alias}{suffix}"
