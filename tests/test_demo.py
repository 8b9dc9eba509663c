"""`callsync demo` end to end (subprocess, in a tmp working directory), and its data plan."""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import replace
from datetime import date
from pathlib import Path

import duckdb
import pytest

from conftest import run_cli, write_config
from pipeline import demo
from pipeline.errors import UsageError
from pipeline.sandbox import SandboxData

SUMMARY = re.compile(
    r"^backfill (?P<status>\w+): (?P<done>\d+) windows \((?P<skipped>\d+) skipped, (?P<failed>\d+) failed,"
    r".* calls (?P<new>\d+) new / (?P<updated>\d+) updated / (?P<unchanged>\d+) unchanged,"
    r".* media (?P<downloaded>\d+) downloaded / (?P<pending>\d+) pending / (?P<media_failed>\d+) failed",
    re.MULTILINE,
)


def summary_of(stdout: str) -> dict[str, str]:
    match = SUMMARY.search(stdout)
    assert match, stdout
    return match.groupdict()


def rows(database: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(sql).fetchall()


async def test_demo_builds_then_reruns_incrementally(tmp_path: Path):
    first = await run_cli("demo", "--calls", "400", "--days", "5", "--no-progress", cwd=tmp_path, token=None)
    assert first.code == 0, first.stderr
    assert "Traceback" not in first.stderr
    built = summary_of(first.stdout)
    assert built | {"pending": "-"} == {
        "status": "ok", "done": "1", "skipped": "0", "failed": "0", "new": "400", "updated": "0", "unchanged": "0",
        "downloaded": built["downloaded"], "pending": "-", "media_failed": "0",
    }
    assert int(built["downloaded"]) > 0
    for name in demo.TABLES + demo.MEDIA_TABLES:
        assert f"{name}: " in first.stdout
    assert "callsync query --database demo.duckdb --list" in first.stdout  # after `uv run ` under uv

    database = tmp_path / "demo.duckdb"
    recordings = list((tmp_path / "demo-media").rglob("*.mp3"))
    assert len(recordings) == rows(database, "SELECT count(*) FROM recordings")[0][0] > 0
    stamps = {path: path.stat().st_mtime_ns for path in recordings}

    again = await run_cli("demo", "--no-progress", cwd=tmp_path, token=None)
    assert again.code == 0, again.stderr
    rerun = summary_of(again.stdout)
    # 400 calls over 5 days fill 4 pages: one window, committed, so skipped.
    assert (rerun["done"], rerun["skipped"], rerun["new"], rerun["updated"], rerun["downloaded"]) == (
        "0", "1", "0", "0", "0",
    )
    assert rerun["media_failed"] == "0"  # transcripts not ready yet are asked again at the same URLs
    assert {path: path.stat().st_mtime_ns for path in recordings} == stamps
    assert rows(database, "SELECT count(*) FROM calls")[0][0] == 400


async def test_demo_refuses_other_data_in_the_same_database(tmp_path: Path):
    first = await run_cli("demo", "--calls", "100", "--days", "2", "--no-media", "--no-progress", cwd=tmp_path)
    assert first.code == 0, first.stderr
    other = await run_cli("demo", "--calls", "200", "--no-progress", cwd=tmp_path)
    assert other.code == 2
    assert other.stderr.strip() == (
        "callsync: error: demo.duckdb holds the demo built with --seed 42 --calls 100 --days 2:"
        " leave out --calls (or pass the same value), or pass another --database"
    )


async def test_demo_needs_its_port_back(tmp_path: Path):
    database = tmp_path / "demo.duckdb"
    first = await run_cli("demo", "--calls", "50", "--days", "1", "--no-media", "--no-progress", cwd=tmp_path)
    assert first.code == 0, first.stderr
    port = demo.settle_data(database).port
    assert rows(database, "SELECT DISTINCT split_part(recording_url, '/api/', 1) FROM calls "
                          "WHERE recording_url IS NOT NULL") == [(f"http://127.0.0.1:{port}",)]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        busy = await run_cli("demo", "--no-progress", cwd=tmp_path)
    assert busy.code == 1
    assert f"cannot serve the demo's sandbox on 127.0.0.1:{port}" in busy.stderr
    assert len(busy.stderr.strip().splitlines()) == 1


def test_the_plan_is_kept_on_later_days(tmp_path: Path):
    database = tmp_path / "demo.duckdb"
    plan = demo.settle_data(database, calls=300, days=4, today=date(2026, 3, 10))
    assert (plan.first_day, plan.last_day, plan.port) == (date(2026, 3, 6), date(2026, 3, 9), None)
    first = asyncio.run(demo.build(plan, database, tmp_path / "media", with_media=False))
    assert (first.status, first.windows_done, first.calls_new) == ("ok", 1, 300)  # 3 pages: one window

    later = demo.settle_data(database, today=date(2026, 5, 1))
    assert later == replace(plan, port=later.port) and later.port
    assert demo.settle_data(database, seed=42, calls=300, days=4) == later
    again = asyncio.run(demo.build(later, database, tmp_path / "media", with_media=False))
    assert (again.status, again.windows_done, again.windows_skipped, again.calls_new) == ("ok", 0, 1, 0)


def test_a_rerun_serves_the_very_same_calls(tmp_path: Path):
    """The stored plan regenerates identical data, whatever the time of day."""
    database = tmp_path / "demo.duckdb"
    summary = demo.run_demo(database, tmp_path / "media", seed=3, calls=500, days=3, with_media=False)
    assert summary.status == "ok"
    plan = demo.settle_data(database)
    data = SandboxData.generate(seed=plan.seed, calls=plan.calls, days=plan.days, today=plan.last_day)
    served = sorted((call["id"], call["outcome"], call["duration_seconds"]) for call in
                    data.calls_between(plan.first_day, plan.last_day))
    assert served == rows(database, "SELECT id, outcome, duration_seconds FROM calls ORDER BY id")


async def test_a_database_with_other_runs_is_refused(tmp_path: Path, sandbox):
    config = write_config(tmp_path, sandbox.base_url)
    day = sandbox.data.today.isoformat()
    synced = await run_cli("backfill", "--start", day, "--end", day, "--no-media", "--config", str(config),
                           cwd=tmp_path)
    assert synced.code == 0, synced.stderr
    with pytest.raises(UsageError, match="not a demo database"):
        demo.settle_data(tmp_path / "callsync.duckdb")
