"""Settings: a TOML file (documented key by key in config.example.toml) plus the token.

The token never lives in the TOML: it comes from the env var named by
``api.token_env`` or from ``api.token_file``. Loading does no I/O beyond reading
those two files.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import date
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from pipeline.errors import ConfigError

DEFAULT_CONFIG_NAME = "callsync.toml"
CONFIG_ENV = "CALLSYNC_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_SIZE = re.compile(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)")


class ApiSettings(_Section):
    base_url: str = "https://api.affilync.com"
    token_env: str = "CALLSYNC_TOKEN"
    token_file: Path | None = None
    timeout_s: float = Field(30.0, gt=0)
    max_concurrency: int = Field(16, ge=1, le=256)
    requests_per_second: float | None = Field(None, gt=0)
    max_retries: int = Field(6, ge=0, le=50)
    backoff_initial_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)
    max_requests_per_run: int | None = Field(None, ge=1)
    max_requests_per_hour: int | None = Field(None, ge=1)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class SyncSettings(_Section):
    start_date: date | None = None
    window_days: int = Field(1, ge=1, le=366)
    lookback_days: int = Field(3, ge=0, le=366)
    per_page: int = Field(100, ge=1, le=1000)
    end_date_inclusive: bool = True
    max_window_tries: int = Field(5, ge=1, le=50)


class DatabaseSettings(_Section):
    path: Path = Path("callsync.duckdb")
    # DuckDB's own limit for the writing connection, e.g. "512MB"; None leaves DuckDB's
    # default (80% of RAM). Each commit must fit within it.
    memory_limit: str | None = None

    @field_validator("memory_limit")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None and not _SIZE.fullmatch(value):
            raise ValueError("must be a size such as '512MB' or '2GB'")
        return value


class MediaSettings(_Section):
    dir: Path = Path("media")
    recordings: bool = True
    transcripts: bool = True
    concurrency: int = Field(8, ge=1, le=256)
    max_age_days: int = Field(14, ge=0)
    allow_foreign_hosts: bool = True


class Settings(_Section):
    api: ApiSettings = ApiSettings()
    sync: SyncSettings = SyncSettings()
    database: DatabaseSettings = DatabaseSettings()
    media: MediaSettings = MediaSettings()
    source: Path | None = Field(None, exclude=True)
    token: SecretStr | None = Field(None, exclude=True)

    def require_token(self) -> SecretStr:
        if self.token is None:
            hint = f"set ${self.api.token_env}"
            if self.api.token_file:
                hint += f" or create {self.api.token_file}"
            raise ConfigError(f"{self.source or 'config'}: no API token: {hint}")
        return self.token


def find_config(explicit: str | Path | None) -> Path | None:
    """--config FILE, else $CALLSYNC_CONFIG, else ./callsync.toml if it exists."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.exists() else None


def load_settings(path: str | Path | None, *, required: bool = True) -> Settings:
    """Read and validate the TOML file, resolve relative paths against it, find the token."""
    config_path = find_config(path)
    if config_path is None:
        if required:
            raise ConfigError(
                f"no config file: pass --config FILE, set ${CONFIG_ENV}, "
                f"or create ./{DEFAULT_CONFIG_NAME} (see config.example.toml)"
            )
        return _with_token(Settings())
    raw = _read_toml(config_path)
    try:
        settings = Settings.model_validate({**raw, "source": config_path})
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(config_path, exc)) from None
    return _with_token(_resolve_paths(settings, config_path.parent))


def _read_toml(config_path: Path) -> dict:
    try:
        with config_path.open("rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{config_path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{config_path}: cannot read config: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path}: not valid TOML: {exc}") from None
    for reserved in ("source", "token"):
        if reserved in raw:
            raise ConfigError(f"{config_path}: {reserved}: unknown key")
    if "token" in raw.get("api", {}):
        raise ConfigError(
            f"{config_path}: [api] token: the token never goes in the config file; "
            "use token_env or token_file"
        )
    return raw


def _describe_validation_error(config_path: Path, exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = [str(part) for part in error["loc"]]
    if len(location) >= 2:
        where = f"[{location[0]}] {'.'.join(location[1:])}"
    else:
        where = location[0] if location else "(top level)"
    if error["type"] == "extra_forbidden":
        what = "unknown key"
    else:
        what = error["msg"]
        if "input" in error and not isinstance(error["input"], dict):
            what += f" (got {error['input']!r})"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{config_path}: {where}: {what}{more}"


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    def resolve(path: Path | None) -> Path | None:
        if path is None:
            return None
        path = path.expanduser()
        return path if path.is_absolute() else base / path

    return settings.model_copy(
        update={
            "api": settings.api.model_copy(update={"token_file": resolve(settings.api.token_file)}),
            "database": settings.database.model_copy(update={"path": resolve(settings.database.path)}),
            "media": settings.media.model_copy(update={"dir": resolve(settings.media.dir)}),
        }
    )


def _with_token(settings: Settings) -> Settings:
    token = os.environ.get(settings.api.token_env, "").strip()
    if not token and settings.api.token_file:
        try:
            token = settings.api.token_file.read_text().strip()
        except FileNotFoundError:
            raise ConfigError(f"[api] token_file: {settings.api.token_file} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"[api] token_file: cannot read {settings.api.token_file}: {exc.strerror}") from None
    return settings.model_copy(update={"token": SecretStr(token) if token else None})
