"""`callsync demo`: the offline sandbox, a backfill with media into ./demo.duckdb, a few tables.

The sandbox regenerates its calls on every run from (seed, calls, days, last day). The
first run records those in the database (sync_state key ``demo``), with the loopback
port the sandbox served on, and later runs reuse them all. So a re-run serves the very
same calls at the very same URLs: the backfill skips every committed window, and media
still pending is fetched from where the stored recording_url/transcript_url point, while
media already on disk is not fetched again, on any later day too.
The last day is the day before the first run (UTC): the sandbox spreads a day's
calls over the part of it that has passed, so a day still in progress would give
different calls at a different hour.
"""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import AsyncIterator

from pydantic import SecretStr

from pipeline import analytics, load, sync
from pipeline.config import ApiSettings, DatabaseSettings, MediaSettings, Settings
from pipeline.errors import CallsyncError, UsageError
from pipeline.store import FileStore

DEMO_KEY = "demo"
SANDBOX_TOKEN = "sandbox-token"
DEFAULT_SEED = 42
DEFAULT_CALLS = 20_000
DEFAULT_DAYS = 60
DEFAULT_DATABASE = Path("demo.duckdb")
DEFAULT_MEDIA_DIR = Path("demo-media")
# Shown after the run: named queries from sql/queries.
TABLES = ("qualified_by_source", "number_performance")
MEDIA_TABLES = ("media_coverage",)


@dataclass(frozen=True)
class DemoData:
    """What the sandbox generates: the same four values give the same calls."""

    seed: int
    calls: int
    days: int
    last_day: date
    port: int | None = None  # where the sandbox served first, so stored URLs stay valid

    @property
    def first_day(self) -> date:
        return self.last_day - timedelta(days=self.days - 1)

    def flags(self) -> str:
        return f"--seed {self.seed} --calls {self.calls} --days {self.days}"

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "last_day": self.last_day.isoformat()})

    @classmethod
    def from_json(cls, text: str) -> DemoData:
        fields = json.loads(text)
        return cls(
            int(fields["seed"]),
            int(fields["calls"]),
            int(fields["days"]),
            date.fromisoformat(fields["last_day"]),
            fields.get("port"),
        )


def settle_data(
    database: Path,
    *,
    seed: int | None = None,
    calls: int | None = None,
    days: int | None = None,
    today: date | None = None,
) -> DemoData:
    """The demo data this database was built with; on a first run, the data to build it
    with (unset values take the defaults; no port yet)."""
    with FileStore(database).session() as conn:
        load.apply_migrations(conn)
        stored = load.get_state(conn, DEMO_KEY)
        if stored is not None:
            return _check_same(database, DemoData.from_json(stored), seed=seed, calls=calls, days=days)
        if conn.execute("SELECT count(*) FROM runs").fetchone()[0]:
            raise UsageError(f"{database}: not a demo database (it holds other runs): pass another --database")
    return DemoData(
        DEFAULT_SEED if seed is None else seed,
        DEFAULT_CALLS if calls is None else calls,
        DEFAULT_DAYS if days is None else days,
        (today or sync.utc_today()) - timedelta(days=1),
    )


def record_data(database: Path, data: DemoData) -> None:
    with FileStore(database).session() as conn:
        load.set_state(conn, DEMO_KEY, data.to_json())


def _check_same(database: Path, data: DemoData, **asked: int | None) -> DemoData:
    for name, value in asked.items():
        if value is not None and value != getattr(data, name):
            raise UsageError(
                f"{database} holds the demo built with {data.flags()}: "
                f"leave out --{name} (or pass the same value), or pass another --database"
            )
    return data


def demo_settings(base_url: str, database: Path, media_dir: Path) -> Settings:
    """Settings built in code: no config file, the sandbox's token."""
    return Settings(
        api=ApiSettings(base_url=base_url, backoff_initial_s=0.05, backoff_max_s=1.0),
        database=DatabaseSettings(path=database),
        media=MediaSettings(dir=media_dir),
        token=SecretStr(SANDBOX_TOKEN),
    )


async def build(
    data: DemoData,
    database: Path,
    media_dir: Path,
    *,
    with_media: bool = True,
    progress: sync.Progress = sync.NO_PROGRESS,
) -> sync.RunSummary:
    """Serve the sandbox on loopback (a free port the first time, the same port after)
    and backfill its whole range from it."""
    async with _serve(data, database) as base_url:
        if data.port is None:
            record_data(database, replace(data, port=_port_of(base_url)))
        settings = demo_settings(base_url, database, media_dir)
        return await sync.backfill(
            settings,
            data.first_day,
            data.last_day,
            with_media=with_media,
            progress=progress,
        )


@asynccontextmanager
async def _serve(data: DemoData, database: Path) -> AsyncIterator[str]:
    """`callsync sandbox` in a child process, so that it serves from the other core while
    this one syncs (in-process, the demo took ~75 s instead of ~45 s); yields its base URL.
    The child stops when we close its standard input, also if we are killed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", "sandbox", "--stop-on-eof",
        "--host", "127.0.0.1", "--port", str(data.port or 0),
        "--seed", str(data.seed), "--calls", str(data.calls), "--days", str(data.days),
        "--today", data.last_day.isoformat(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield await _base_url(process, data, database)
    finally:
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()


async def _base_url(process: asyncio.subprocess.Process, data: DemoData, database: Path) -> str:
    """Read the sandbox's first line ("sandbox: ... at URL"), or turn its error into ours."""
    line = (await process.stdout.readline()).decode().strip()
    if " at http://" in line:
        return line.rsplit(" at ", 1)[1]
    error = (await process.stderr.read()).decode().strip().splitlines()
    reason = error[-1].rsplit(": ", 1)[-1] if error else "the sandbox exited"
    if data.port is None:
        raise CallsyncError(f"cannot serve the demo's sandbox on 127.0.0.1: {reason}")
    raise CallsyncError(
        f"cannot serve the demo's sandbox on 127.0.0.1:{data.port} ({reason}):"
        f" {database} stores URLs on that port: free it, or start over with another --database"
    )


def _port_of(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1])


def run_demo(
    database: Path = DEFAULT_DATABASE,
    media_dir: Path = DEFAULT_MEDIA_DIR,
    *,
    seed: int | None = None,
    calls: int | None = None,
    days: int | None = None,
    with_media: bool = True,
    progress: sync.Progress = sync.NO_PROGRESS,
) -> sync.RunSummary:
    """Build (or bring up to date) the demo database. Blocking: runs its own event loop."""
    data = settle_data(database, seed=seed, calls=calls, days=days)
    return asyncio.run(
        build(data, database, media_dir, with_media=with_media, progress=progress)
    )


def demo_tables(database: Path, *, with_media: bool = True) -> list[tuple[str, analytics.Columns, analytics.Rows]]:
    """(title, columns, rows) of the named queries the demo shows."""
    names = TABLES + (MEDIA_TABLES if with_media else ())
    tables = []
    for name in names:
        query = analytics.load_query(name)
        columns, rows = analytics.run_query(database, name)
        tables.append((f"{name}: {query.description}", columns, rows))
    return tables
