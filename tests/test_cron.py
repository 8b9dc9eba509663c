"""What cron relies on, through real CLI processes: dates past today, outages, signals, logs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from datetime import date, datetime, timezone

import pytest

from pipeline.config import load_settings
from pipeline.sandbox import Faults, SandboxData, run_sandbox
from tests.conftest import REPO, run_cli, serve_app, start_cli, write_config
from tests.test_cli import assert_one_line_error
from tests.dbcheck import assert_same_calls, scalar
from tests.test_limits import rate_limited_api

UTC = timezone.utc


async def test_a_backfill_past_today_leaves_today_and_later_days_to_the_next_runs(tmp_path):
    data = SandboxData.generate(seed=9, calls=300, days=5, today=date(2026, 12, 1), now=datetime(2026, 12, 1, 12, tzinfo=UTC))
    async with run_sandbox(data=data, faults=Faults()) as sandbox:
        write_config(tmp_path, sandbox.base_url, sync={"start_date": "2026-11-27"})
        backfill = await run_cli(
            "backfill", "--start", "2026-11-27", "--end", "2026-12-31", "--no-media",
            cwd=tmp_path, env={"CALLSYNC_NOW": "2026-12-01T12:00:00Z"},
        )
        assert backfill.code == 0, backfill.stderr
        capped = [line for line in backfill.stderr.splitlines() if "after today" in line]
        assert len(capped) == 1 and "2026-12-31" in capped[0], backfill.stderr
        database = tmp_path / "callsync.duckdb"
        assert scalar(database, "SELECT max(window_end) FROM sync_windows") == date(2026, 11, 30)

        # Three days later: calls came in on the rest of Dec 1 and on the days after it.
        data.set_now(datetime(2026, 12, 4, 9, tzinfo=UTC))
        added = [call for day in (1, 2, 3) for call in data.add_calls(5, date(2026, 12, day))]
        sync = await run_cli("sync", "--no-media", cwd=tmp_path, env={"CALLSYNC_NOW": "2026-12-04T09:00:00Z"})
        assert sync.code == 0, sync.stderr
        assert_same_calls(database, data)
        assert scalar(database, f"SELECT count(*) FROM calls WHERE id IN ({', '.join(repr(c) for c in added)})") == 15
        assert scalar(database, "SELECT value FROM sync_state WHERE key = 'watermark'") == "2026-12-03"
        status = await run_cli("status", cwd=tmp_path, env={"CALLSYNC_NOW": "2026-12-04T09:00:00Z"})
        assert "2026-12-03 (the last fully synced day)" in status.stdout


@pytest.mark.parametrize(
    "toml, fragments",
    [
        ('[sync]\nwindow_days = "1"\n', ["[sync] window_days", "valid integer", "without quotes"]),
        ("[api]\ntimeout_s = true\n", ["[api] timeout_s", "valid number"]),
        ("[sync]\nstart_date = 2026-02-30\n", ["line 2", "invalid date", "2026-02-30"]),
        ('[sync]\nstart_date = "2026-02-01"\n', ["[sync] start_date", "valid date", "without quotes"]),
        ('[databse]\npath = "x.duckdb"\n', ["[databse]", "unknown section", "did you mean database"]),
        ("[api]\nmax_concurency = 3\n", ["[api] max_concurency", "unknown key", "did you mean max_concurrency"]),
        ('[database]\npath = "nowhere/x.duckdb"\n', ["[database] path", "nowhere", "does not exist"]),
        ('[database]\npath = "afile/x.duckdb"\n', ["[database] path", "afile", "is not a folder"]),
        ('[database]\npath = "."\n', ["[database] path", "is a folder"]),
        ('[api]\ntoken_env = "NO_SUCH_VAR"\ntoken_file = "missing-token"\n', ["[api] token_file", "missing-token"]),
    ],
)
async def test_each_config_error_is_one_line_naming_the_file_and_exits_2(tmp_path, toml, fragments):
    (tmp_path / "afile").write_text("")
    (tmp_path / "callsync.toml").write_text(toml)
    result = await run_cli("sync", cwd=tmp_path, token=None if "token_file" in toml else "sandbox-token")
    assert result.code == 2, result.stderr
    assert_one_line_error(result, "callsync.toml", *fragments)


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["backfill", "--start", "2026-02-30", "--end", "2026-03-01"], ["--start", "2026-02-30", "backfill --help"]),
        (["backfill", "--end", "2026-03-01"], ["Missing option", "--start"]),
        (["sync", "--log-fromat", "json"], ["--log-fromat", "sync --help"]),
        (["backfill", "--start", "2026-03-01", "--end", "2026-03-01", "--outcome", "won"], ["--outcome", "won"]),
    ],
)
async def test_usage_errors_are_one_line_naming_the_option(tmp_path, args, fragments):
    result = await run_cli(*args, cwd=tmp_path)
    assert result.code == 2
    assert_one_line_error(result, *fragments)


async def test_hints_name_commands_that_work_under_uv_run(tmp_path):
    result = await run_cli("query", "no_such_query", "--database", "x.duckdb", cwd=tmp_path, env={"UV": "/usr/bin/uv"})
    assert result.code == 2 and "`uv run callsync query --list`" in result.stderr


def test_the_example_config_loads_strictly_with_every_key_uncommented(tmp_path, monkeypatch):
    text = (REPO / "config.example.toml").read_text()
    # The lake keys exclude [database] path: tests/test_lake_config.py uncomments those.
    uncommented = re.sub(r"(?m)^# ?((?!lake_|schema )[a-z_]+ = )", r"\1", text)
    (tmp_path / "callsync.toml").write_text(uncommented)
    monkeypatch.setenv("CALLSYNC_TOKEN", "x")
    settings = load_settings(tmp_path / "callsync.toml")
    assert settings.sync.start_date == date(2026, 1, 1)


def media_state(database) -> list[tuple]:
    import duckdb

    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(
            "SELECT call_id, kind, status FROM media_jobs ORDER BY ALL"
        ).fetchall() + conn.execute("SELECT call_id, sha256 FROM recordings ORDER BY ALL").fetchall()


def outage_data() -> SandboxData:
    return SandboxData.generate(seed=12, calls=120, days=3, today=date(2026, 11, 20), now=datetime(2026, 11, 21, tzinfo=UTC))


async def wait_until(condition, process) -> None:
    """Wait on the sandbox's recorded state (its request log), not on the clock."""
    while not condition():
        assert process.returncode is None, "the run ended before the moment the test waits for"
        await asyncio.sleep(0.005)


async def test_the_api_going_away_mid_backfill_ends_the_run_with_one_line_and_a_rerun_completes(tmp_path):
    args = ("backfill", "--start", "2026-11-18", "--end", "2026-11-20")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with run_sandbox(data=outage_data(), faults=Faults(latency_ms=20)) as sandbox:
        port = int(sandbox.base_url.rsplit(":", 1)[1])
        write_config(tmp_path / "a", sandbox.base_url, api={"give_up_after_s": 5}, media={"concurrency": 2})
        process = await start_cli(*args, cwd=tmp_path / "a")
        await wait_until(lambda: sum(r.path.endswith("/recording") for r in sandbox.requests) >= 10, process)
    # The sandbox is gone: every request is refused.
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=5 + 30)
    assert process.returncode == 1
    errors = [line for line in stderr.decode().strip().splitlines() if " INFO progress: " not in line]
    assert len(errors) == 1, stderr.decode()  # one line says what happened (progress lines are INFO)
    assert "is unreachable" in stderr.decode() and f"127.0.0.1:{port}" in stderr.decode()
    assert "backfill aborted" in stdout.decode()

    async with run_sandbox(data=outage_data(), faults=Faults(latency_ms=0), port=port) as sandbox:
        rerun = await run_cli(*args, cwd=tmp_path / "a")
        assert rerun.code == 0, rerun.stderr
        write_config(tmp_path / "b", sandbox.base_url)
        uninterrupted = await run_cli(*args, cwd=tmp_path / "b")
        assert uninterrupted.code == 0, uninterrupted.stderr
        assert_same_calls(tmp_path / "a" / "callsync.duckdb", sandbox.data)
    assert media_state(tmp_path / "a" / "callsync.duckdb") == media_state(tmp_path / "b" / "callsync.duckdb")
    assert len(media_state(tmp_path / "a" / "callsync.duckdb")) > 100


def signal_data() -> SandboxData:
    return SandboxData.generate(seed=13, calls=600, days=30, today=date(2026, 11, 20), now=datetime(2026, 11, 21, tzinfo=UTC))


@pytest.mark.parametrize("signal_number, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
async def test_a_signal_mid_backfill_commits_what_is_complete_and_records_the_run_interrupted(
    tmp_path, signal_number, code
):
    args = ("backfill", "--start", "2026-10-22", "--end", "2026-11-20", "--no-media")
    async with run_sandbox(data=signal_data(), faults=Faults(latency_ms=40)) as sandbox:
        write_config(tmp_path, sandbox.base_url, api={"max_concurrency": 2}, sync={"per_page": 10})
        process = await start_cli(*args, cwd=tmp_path)
        await wait_until(lambda: sum(r.path.endswith("/calls") for r in sandbox.requests) >= 35, process)
        process.send_signal(signal_number)
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == code, stderr.decode()
        assert "backfill interrupted:" in stdout.decode()
        name = signal.Signals(signal_number).name
        assert f"callsync: interrupted by {name}" in stderr.decode() and "Traceback" not in stderr.decode()
        database = tmp_path / "callsync.duckdb"
        status, done = scalar(database, "SELECT status || ' ' || windows_done FROM runs").split()
        assert status == "interrupted" and int(done) > 0
        assert scalar(database, "SELECT count(*) FROM sync_windows") == int(done)
        assert scalar(database, "SELECT max(window_end) FROM sync_windows") < date(2026, 11, 20)
        committed = scalar(database, "SELECT sum(row_count) FROM sync_windows")
        assert scalar(database, "SELECT count(*) FROM calls") == committed

        rerun = await run_cli(*args, cwd=tmp_path)
        assert rerun.code == 0, rerun.stderr
        assert "(0 skipped" not in rerun.stdout  # what the interrupted run committed is kept
        assert_same_calls(database, sandbox.data)


async def test_a_second_signal_stops_at_once_and_a_rerun_completes(tmp_path):
    args = ("backfill", "--start", "2026-10-22", "--end", "2026-11-20", "--no-media")
    async with run_sandbox(data=signal_data(), faults=Faults(latency_ms=40)) as sandbox:
        write_config(tmp_path, sandbox.base_url, api={"max_concurrency": 2}, sync={"per_page": 10})
        process = await start_cli(*args, cwd=tmp_path)
        await wait_until(lambda: sum(r.path.endswith("/calls") for r in sandbox.requests) >= 35, process)
        # Back to back: the run is still draining the first when the second arrives (or the
        # loop reads both from its wakeup pipe together, which counts as a second signal too).
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        # Sent back to back, the two can reach the run in either order: each is taken by
        # whichever of its threads is running, and those write to the loop's wakeup pipe
        # in the order they run (a test with threads busy in C code saw SIGINT first one
        # time in six). The one that came second decides the exit code.
        assert process.returncode in (128 + signal.SIGTERM, 128 + signal.SIGINT), stderr.decode()
        second = signal.Signals(process.returncode - 128)
        (first,) = {signal.SIGTERM, signal.SIGINT} - {second}
        assert f"{first.name} received: finishing what is complete" in stderr.decode()
        assert f"{second.name} received as a second signal: stopping at once" in stderr.decode()
        assert "Traceback" not in stderr.decode()

        rerun = await run_cli(*args, cwd=tmp_path)
        assert rerun.code == 0, rerun.stderr
        assert_same_calls(tmp_path / "callsync.duckdb", sandbox.data)


async def test_a_signal_ends_a_retry_after_pause_at_once(tmp_path):
    answered = asyncio.Event()
    async with serve_app(rate_limited_api("500", answered)) as base_url:
        write_config(tmp_path, base_url, api={"give_up_after_s": 600})
        args = ("backfill", "--start", "2026-03-15", "--end", "2026-03-15", "--no-media", "-v", "--log-format", "json")
        process = await start_cli(*args, cwd=tmp_path)
        await asyncio.wait_for(answered.wait(), timeout=30)
        while json.loads(await asyncio.wait_for(process.stderr.readline(), timeout=30)).get("event") != "retry_scheduled":
            pass  # the run now waits out the 500 s the API asked for
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 143, stderr.decode()
    assert "callsync: interrupted by SIGTERM" in stderr.decode() and "Traceback" not in stderr.decode()
    assert scalar(tmp_path / "callsync.duckdb", "SELECT status FROM runs") == "interrupted"


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_before_the_run_begins_ends_callsync_with_one_json_line(tmp_path, signal_number):
    # callsync blocked reading its config, a FIFO: started, its run not begun.
    config = tmp_path / "callsync.toml"
    os.mkfifo(config)
    process = await start_cli("sync", "--log-format", "json", cwd=tmp_path)
    while True:  # until callsync has the FIFO open to read (before that, opening it to write fails)
        assert process.returncode is None, "callsync ended before it read its config"
        try:
            writer = os.open(config, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            await asyncio.sleep(0.005)
    try:
        process.send_signal(signal_number)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        os.close(writer)
    assert process.returncode == 128 + signal_number, stderr.decode()
    [line] = stderr.decode().splitlines()
    event = json.loads(line)
    assert event["event"] == "fatal" and event["exit_code"] == 128 + signal_number
    assert event["message"] == f"callsync: interrupted by {signal.Signals(signal_number).name}"


async def test_a_run_killed_with_sigkill_shows_as_interrupted_in_status(tmp_path):
    args = ("backfill", "--start", "2026-10-22", "--end", "2026-11-20", "--no-media")
    async with run_sandbox(data=signal_data(), faults=Faults(latency_ms=40)) as sandbox:
        write_config(tmp_path, sandbox.base_url, api={"max_concurrency": 2}, sync={"per_page": 10})
        process = await start_cli(*args, cwd=tmp_path)
        await wait_until(lambda: sum(r.path.endswith("/calls") for r in sandbox.requests) >= 4, process)
        process.send_signal(signal.SIGKILL)
        await process.wait()
        # status reads the published snapshot: the killed run is in it only if it published
        # before the kill, and then shows as interrupted, never as running.
        status = await run_cli("status", "--format", "json", cwd=tmp_path)
        assert status.code == 0, status.stderr
        assert [run["status"] for run in json.loads(status.stdout)["runs"]] in ([], ["interrupted"])
        rerun = await run_cli(*args, cwd=tmp_path)
        assert rerun.code == 0, rerun.stderr
    status = await run_cli("status", "--format", "json", cwd=tmp_path)
    assert [run["status"] for run in json.loads(status.stdout)["runs"]] == ["ok", "interrupted"]
    assert " interrupted " in (await run_cli("status", cwd=tmp_path)).stdout


def json_lines(text: str) -> list[dict]:
    lines = text.strip().splitlines()
    assert lines
    return [json.loads(line) for line in lines]  # every line parses, or the test fails here


async def test_with_json_logs_every_stderr_line_of_a_run_is_json_and_progress_shows_without_a_terminal(tmp_path):
    args = ("backfill", "--start", "2026-10-22", "--end", "2026-11-20", "--log-format", "json")
    async with run_sandbox(data=signal_data(), faults=Faults()) as sandbox:
        write_config(tmp_path, sandbox.base_url)
        ok = await run_cli(*args, "--summary-format", "json", cwd=tmp_path)
        assert ok.code == 0, ok.stderr
        events = json_lines(ok.stderr)
        progress = [event for event in events if event.get("event") == "progress"]
        days = [event["days_done"] for event in progress]
        assert days == sorted(set(days)) and days[-1] == progress[-1]["days_planned"] == 30
        assert progress[-1]["calls"] > 0 and progress[-1]["requests"] > 0
        summary = [event for event in events if event.get("event") == "run_summary"]
        assert len(summary) == 1 and summary[0]["status"] == "ok" and summary[0]["windows_done"] > 0
        printed = json.loads(ok.stdout)
        assert printed["status"] == "ok" and printed["calls_new"] == summary[0]["calls_new"] > 0

    write_config(tmp_path, "http://127.0.0.1:9")  # nothing listens there
    failed = await run_cli(*args, cwd=tmp_path)
    assert failed.code == 1
    events = json_lines(failed.stderr)
    assert events[-1]["event"] == "fatal" and "is unreachable" in events[-1]["message"]
    assert [event["status"] for event in events if event.get("event") == "run_summary"] == ["aborted"]
    assert failed.stdout.startswith("backfill aborted:")  # stdout keeps the human line

    usage = await run_cli("backfill", "--start", "2026-02-30", "--end", "2026-03-01", "--log-format", "json", cwd=tmp_path)
    assert usage.code == 2 and json_lines(usage.stderr)[0]["exit_code"] == 2
    (tmp_path / "callsync.toml").write_text("[sync]\nwindow_days = '1'\n")
    config = await run_cli(*args, cwd=tmp_path)
    assert config.code == 2 and "window_days" in json_lines(config.stderr)[0]["message"]


async def test_a_wrong_base_url_fails_within_seconds_with_one_line(tmp_path):
    write_config(tmp_path, "http://127.0.0.1:9", api={"backoff_initial_s": 0.5, "backoff_max_s": 30})
    started = asyncio.get_running_loop().time()
    result = await asyncio.wait_for(run_cli("sync", cwd=tmp_path), timeout=60)
    assert result.code == 1
    assert_one_line_error(result, "127.0.0.1:9 is unreachable", "base_url")
    assert asyncio.get_running_loop().time() - started < 10 + 10  # the 10 s, plus a loaded host's start-up

