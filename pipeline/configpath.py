"""Which config file, and the one key the read-only commands need from it.

`callsync query` and `status` only read `[database] path`: they take it from the TOML
here, without the validation of pipeline.config (which loads pydantic, a tenth of a
second they would spend on nothing). The commands that sync validate every key, and
so does a lake's config (it needs them all).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from pipeline.errors import ConfigError

DEFAULT_CONFIG_NAME = "callsync.toml"
CONFIG_ENV = "CALLSYNC_CONFIG"
DEFAULT_DATABASE = "callsync.duckdb"


def find_config(explicit: str | Path | None) -> Path | None:
    """--config FILE, else $CALLSYNC_CONFIG, else ./callsync.toml if it exists."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.exists() else None


def store_for(config_path: Path):
    """The store the config names: its DuckDB file, or (fully validated) its lake schema."""
    database = read_toml(config_path).get("database", {})
    if isinstance(database, dict) and any(key.startswith("lake_") or key == "schema" for key in database):
        from pipeline.config import load_settings  # a lake needs its extensions and more keys anyway

        return load_settings(config_path).database.store()
    from pipeline.store import FileStore

    return FileStore(database_path(config_path))


def database_path(config_path: Path) -> Path:
    """``[database] path`` of the file, resolved against the file's folder."""
    raw = read_toml(config_path)
    database = raw.get("database", {})
    value = database.get("path", DEFAULT_DATABASE) if isinstance(database, dict) else None
    if not isinstance(value, str):
        raise ConfigError(f"{config_path}: [database] path: must be a string (got {value!r})")
    path = Path(value).expanduser()
    return path if path.is_absolute() else config_path.parent / path


def read_toml(config_path: Path) -> dict:
    """The file's TOML; a ConfigError naming the file if it cannot be read or parsed."""
    try:
        with config_path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{config_path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{config_path}: cannot read config: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: {_describe_toml_error(config_path, exc)}") from None


_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")
_DATE_VALUE = re.compile(r"=\s*\d{4}-\d{1,2}-\d{1,2}\b")


def _describe_toml_error(config_path: Path, exc: tomllib.TOMLDecodeError) -> str:
    """tomllib's message, or "invalid date" when the line holds a date that is not one."""
    position = _TOML_POSITION.search(str(exc))
    if position:
        number = int(position.group(1))
        lines = config_path.read_text(errors="replace").splitlines()
        line = lines[number - 1] if 0 < number <= len(lines) else ""
        if "date" in str(exc).lower() or _DATE_VALUE.search(line):
            return f"line {number}: invalid date {line.split('=', 1)[-1].strip()!r} (write dates as YYYY-MM-DD)"
    return f"not valid TOML: {exc}"
