"""Settings: a TOML file (documented key by key in config.example.toml) plus the token.

The token never lives in the TOML: it comes from the env var named by
``api.token_env`` or from ``api.token_file``. Loading does no I/O beyond reading
those two files.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from pipeline.configpath import CONFIG_ENV, DEFAULT_CONFIG_NAME, find_config, read_toml  # noqa: F401
from pipeline.errors import ConfigError


class _Section(BaseModel):
    # strict: a value of the wrong type is refused, not coerced (`window_days = "1"` is an
    # error). TOML gives dates, ints and floats their own types; paths arrive as strings (FilePath).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# A path from the TOML file: a string, resolved later against the file's folder.
FilePath = Annotated[Path, Field(strict=False)]


_SIZE = re.compile(r"[0-9]+(\.[0-9]+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)")
# A lake schema name that needs no quoting in DuckDB or PostgreSQL (63 bytes: PostgreSQL's limit).
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# libpq's password=... (or sslpassword=..., the client key's) keyword, or the password in a
# postgresql://user:password@host URI.
_CONNINFO_PASSWORD = re.compile(r"(^|[\s:])(ssl)?password\s*=|://[^/@\s]*:[^/@\s]*@", re.IGNORECASE)
_POSTGRES_URI = re.compile(r"postgres(ql)?://", re.IGNORECASE)


class ApiSettings(_Section):
    base_url: str = "https://api.affilync.com"
    token_env: str = "CALLSYNC_TOKEN"
    token_file: FilePath | None = None
    timeout_s: float = Field(30.0, gt=0)
    max_concurrency: int = Field(16, ge=1, le=256)
    requests_per_second: float | None = Field(None, gt=0)
    max_retries: int = Field(6, ge=0, le=50)
    backoff_initial_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)
    max_requests_per_run: int | None = Field(None, ge=1)
    max_requests_per_hour: int | None = Field(None, ge=1)
    max_page_mb: float = Field(16, gt=0)
    # The run stops (exit 1, what it fetched committed) when nothing answered for this long.
    give_up_after_s: float = Field(120.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class SyncSettings(_Section):
    start_date: date | None = None
    window_days: int = Field(92, ge=1, le=366)  # the widest a window may be; its size follows the data
    window_pages: int = Field(20, ge=1, le=1000)  # a window of more than one day holds at most this many pages
    max_pages_per_window: int = Field(1000, ge=1)  # a day claiming more pages than this is not believed
    lookback_days: int = Field(3, ge=0, le=366)
    per_page: int = Field(100, ge=1, le=1000)
    end_date_inclusive: bool = True
    max_window_tries: int = Field(5, ge=1, le=50)
    # Calls that started more than this many days ago are deleted, with their media (None: kept).
    keep_days: int | None = Field(None, ge=1)


class DatabaseSettings(_Section):
    path: FilePath = Path("callsync.duckdb")
    # DuckDB's own limit for the writing connection, e.g. "512MB"; None leaves DuckDB's
    # default (80% of RAM). Each commit must fit within it.
    memory_limit: str | None = None
    # The lake backend (see README "Scaling out"): a DuckLake catalog ("postgres:<libpq conninfo>"
    # or "sqlite:<file>") instead of `path`, its Parquet files on a folder or s3://, and the
    # account's schema in it.
    lake_catalog: str | None = None
    lake_data_path: str | None = None
    schema_name: str = Field("main", alias="schema")
    lake_s3_endpoint: str | None = None  # an S3-compatible server, http[s]://host:port (default: AWS)
    lake_keep_snapshots_days: int = Field(7, ge=0)  # compact expires snapshots older than this
    lake_lease_s: float = Field(120.0, ge=1)  # a killed run's lease on its schema stops blocking after this
    lake_orphans_after_s: float = Field(3600.0, ge=0)  # compact deletes unnamed files once this old

    @field_validator("schema_name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _SCHEMA.fullmatch(value):
            raise ValueError("must be lower-case letters, digits and _, starting with a letter or _ (at most 63)")
        return value
    # Publish the snapshot at `path` at most this often during a long run (and always at its end).
    publish_interval_s: float = Field(60.0, gt=0)

    @field_validator("lake_s3_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^/\s]+/?", value):
            raise ValueError("must be http://host:port or https://host:port")
        return value

    def store(self):
        """Where the data lives: a DuckDB file (pipeline.store) or a lake schema (pipeline.lake)."""
        if self.lake_catalog is None:
            from pipeline.store import FileStore

            return FileStore(self.path)
        from pipeline.lake import LakeStore

        return LakeStore(
            self.lake_catalog, self.lake_data_path, self.schema_name, s3_endpoint=self.lake_s3_endpoint,
            keep_snapshots_days=self.lake_keep_snapshots_days, lease_s=self.lake_lease_s,
            orphans_after_s=self.lake_orphans_after_s,
        )

    @field_validator("memory_limit")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None and not _SIZE.fullmatch(value):
            raise ValueError("must be a size such as '512MB' or '2GB'")
        return value


class MediaSettings(_Section):
    dir: FilePath = Path("media")
    recordings: bool = True
    transcripts: bool = True
    concurrency: int = Field(8, ge=1, le=256)
    max_age_days: int = Field(14, ge=0)
    allow_foreign_hosts: bool = True
    allow_private_addresses: bool = False
    max_transcript_mb: float = Field(32, gt=0)
    max_recording_mb: float = Field(200, gt=0)
    # Recordings and transcripts of calls that started more than this many days ago are deleted (None: kept).
    keep_days: int | None = Field(None, ge=1)
    # What becomes of the media of a call deleted upstream.
    on_upstream_delete: Literal["remove", "keep"] = "remove"


class Settings(_Section):
    api: ApiSettings = ApiSettings()
    sync: SyncSettings = SyncSettings()
    database: DatabaseSettings = DatabaseSettings()
    media: MediaSettings = MediaSettings()
    source: Path | None = Field(None, exclude=True)
    token: SecretStr | None = Field(None, exclude=True)

    def require_database_folder(self) -> None:
        """The database's folder must exist (a typo in [database] path is not a new folder)."""
        if self.database.lake_catalog is not None:
            return
        path, where = self.database.path, f"{self.source or 'config'}: [database] path"
        if not path.parent.is_dir():
            what = "is not a folder" if path.parent.exists() else "does not exist"
            raise ConfigError(f"{where}: the folder {path.parent} {what}")
        if path.is_dir():
            raise ConfigError(f"{where}: {path} is a folder; name the database file in it, e.g. {path / 'callsync.duckdb'}")

    def require_token(self) -> SecretStr:
        if self.token is None:
            hint = f"set ${self.api.token_env}"
            if self.api.token_file:
                hint += f" or create {self.api.token_file}"
            raise ConfigError(f"{self.source or 'config'}: no API token: {hint}")
        return self.token


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
    _check_base_url(config_path, settings.api.base_url)
    _check_database_backend(config_path, settings.database)
    return _with_token(_resolve_paths(settings, config_path.parent))


def _check_base_url(config_path: Path, base_url: str) -> None:
    """Messages never repeat base_url: a user:password@ in it is a secret."""
    where = f"{config_path}: [api] base_url"
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018  (a bad port raises only when read)
    except ValueError:
        raise ConfigError(f"{where}: not a valid URL") from None
    if "@" in parts.netloc:
        raise ConfigError(f"{where}: holds a user or password before the host; the API token is all callsync sends")


def _check_database_backend(config_path: Path, database: DatabaseSettings) -> None:
    """A DuckDB file or a lake, never both. Messages never repeat lake_catalog: it may hold a secret."""
    where = f"{config_path}: [database]"
    if database.lake_catalog is None:
        lake_keys = [key for key in DatabaseSettings.model_fields if key.startswith("lake_") or key == "schema_name"]
        for key in lake_keys:
            if key in database.model_fields_set:
                name = DatabaseSettings.model_fields[key].alias or key
                raise ConfigError(f"{where} {name}: only used with lake_catalog (the lake backend)")
        return
    if "path" in database.model_fields_set:
        raise ConfigError(f"{where} path and lake_catalog: set one, not both (a DuckDB file or a lake)")
    if not database.lake_catalog.startswith(("postgres:", "sqlite:")):
        raise ConfigError(f"{where} lake_catalog: must start with 'postgres:' (a libpq connection string) or 'sqlite:'")
    if _holds_password(database.lake_catalog.removeprefix("postgres:")):
        raise ConfigError(
            f"{where} lake_catalog: a password never goes in the config file; "
            "libpq reads PGPASSWORD or ~/.pgpass"
        )
    if database.lake_data_path is None:
        raise ConfigError(f"{where} lake_data_path: required with lake_catalog (a folder or s3://bucket/prefix/)")


def _holds_password(conninfo: str) -> bool:
    """A password in libpq's keyword form, a URI's userinfo, or a URI's query string
    (postgresql://host/db?password=..., its key percent-encoded or not, as libpq decodes it)."""
    if _CONNINFO_PASSWORD.search(conninfo):
        return True
    if not _POSTGRES_URI.match(conninfo):
        return False
    query = urlsplit(conninfo).query
    return any(key.strip().lower() in ("password", "sslpassword") for key, _ in parse_qsl(query, keep_blank_values=True))


def _read_toml(config_path: Path) -> dict:
    raw = read_toml(config_path)
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
    if error["type"] == "extra_forbidden" and len(location) == 1:
        return f"{config_path}: [{location[0]}]: unknown section{_nearest(location[0], Settings)}"
    if error["type"] == "extra_forbidden":
        section = Settings.model_fields[location[0]].annotation if location[0] in Settings.model_fields else None
        what = "unknown key" + (_nearest(location[-1], section) if section else "")
    else:
        what = error["msg"]
        if "input" in error and not isinstance(error["input"], dict):
            what += f" (got {error['input']!r})"
        if isinstance(error.get("input"), str) and error["type"] in ("int_type", "float_type", "bool_type", "date_type"):
            what += "; write it without quotes" if _unquoted_is_valid(error["input"], error["type"]) else ""
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{config_path}: {where}: {what}{more}"


def _unquoted_is_valid(text: str, error_type: str) -> bool:
    """Whether the quoted value would have been right without its quotes."""
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return False
    expected = {"int_type": int, "float_type": (int, float), "bool_type": bool, "date_type": date}[error_type]
    return isinstance(value, expected) and not isinstance(value, datetime)


def _nearest(name: str, section: type[BaseModel]) -> str:
    known = [info.alias or field for field, info in section.model_fields.items() if not info.exclude]
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(known)})"


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    def resolve(path: Path | None) -> Path | None:
        if path is None:
            return None
        path = path.expanduser()
        return path if path.is_absolute() else base / path

    return settings.model_copy(
        update={
            "api": settings.api.model_copy(update={"token_file": resolve(settings.api.token_file)}),
            "database": settings.database.model_copy(update=_resolved_database(settings.database, resolve)),
            "media": settings.media.model_copy(update={"dir": resolve(settings.media.dir)}),
        }
    )


def _resolved_database(database: DatabaseSettings, resolve) -> dict:
    """The file's path; or a lake's local folder and SQLite catalog, against the config's folder.
    A lake's are made absolute: its catalog keeps the data path for every later reader."""
    update: dict = {"path": resolve(database.path)}
    if database.lake_data_path is not None and "://" not in database.lake_data_path:
        update["lake_data_path"] = str(resolve(Path(database.lake_data_path)).absolute()).rstrip("/") + "/"
    if database.lake_catalog is not None and database.lake_catalog.startswith("sqlite:"):
        update["lake_catalog"] = "sqlite:" + str(resolve(Path(database.lake_catalog.removeprefix("sqlite:"))).absolute())
    return update


def _with_token(settings: Settings) -> Settings:
    token = os.environ.get(settings.api.token_env, "").strip()
    where = f"${settings.api.token_env}"
    if not token and settings.api.token_file:
        where = f"{settings.source or 'config'}: [api] token_file"
        token = _read_token_file(settings.api.token_file, where)
    if _CONTROL.search(token):  # it goes in a header: a line break would start another one
        raise ConfigError(f"{where}: the token holds a line break or another control character; it must be one line")
    return settings.model_copy(update={"token": SecretStr(token) if token else None})


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _read_token_file(path: Path, where: str) -> str:
    """The file's one line, without the newline after it (or a byte-order mark before it)."""
    try:
        return path.read_text(encoding="utf-8-sig").strip()
    except FileNotFoundError:
        raise ConfigError(f"{where}: {path} does not exist") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {path} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
