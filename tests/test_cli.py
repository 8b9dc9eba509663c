"""The real CLI in subprocesses: exit codes, one-line errors, the run lock, kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from pipeline.cli import cli
from pipeline.sandbox import Faults, SandboxData, run_sandbox
from pipeline.state import RunLock
from tests.conftest import run_cli, start_cli, write_config
from tests.dbcheck import assert_same_calls, scalar


def assert_one_line_error(result, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_every_command_documents_itself():
    for name, command in cli.commands.items():
        assert command.help and command.help.strip(), f"{name} has no help text"
        for param in command.params:
            if param.param_type_name == "option" and not param.hidden:
                assert param.help, f"{name} {param.name} has no help text"


@pytest.mark.parametrize(
    "toml, fragments",
    [
        ("[api]\nmax_concurency = 3\n", ["[api] max_concurency", "unknown key"]),
        ("[api]\nmax_concurrency = 'lots'\n", ["[api] max_concurrency", "integer"]),
        ("[api\nbase_url = 1\n", ["not valid TOML"]),
        ("[api]\ntoken = 'abc'\n", ["never goes in the config file"]),
        ("[sync]\nstart_date = 'someday'\n", ["[sync] start_date"]),
        ("[database]\nmemory_limit = 'lots'\n", ["[database] memory_limit", "a size such as"]),
        ("[database]\nmemory_limit = '\uff11\uff10\uff10MB'\n", ["[database] memory_limit", "a size such as"]),  # fullwidth digits
    ],
)
async def test_bad_config_exits_2_with_one_line(tmp_path, toml, fragments):
    (tmp_path / "callsync.toml").write_text(toml)
    result = await run_cli("sync", cwd=tmp_path)
    assert result.code == 2
    assert_one_line_error(result, "callsync.toml", *fragments)


async def test_missing_config_and_missing_token_exit_2(tmp_path):
    result = await run_cli("sync", cwd=tmp_path)
    assert result.code == 2
    assert_one_line_error(result, "no config file")
    write_config(tmp_path, "http://127.0.0.1:9")
    result = await run_cli("sync", cwd=tmp_path, token=None)
    assert result.code == 2
    assert_one_line_error(result, "no API token", "CALLSYNC_TOKEN")


async def test_bad_token_exits_3_and_is_never_printed(sandbox, tmp_path):
    write_config(tmp_path, sandbox.base_url)
    result = await run_cli("sync", "--no-media", cwd=tmp_path, token="wrong-secret-token")
    assert result.code == 3
    assert "wrong-secret-token" not in result.stdout + result.stderr
    assert "401" in result.stderr and "Traceback" not in result.stderr


async def test_missing_scope_exits_3_naming_the_scope(sandbox, tmp_path):
    write_config(tmp_path, sandbox.base_url)
    result = await run_cli("sync", "--no-media", cwd=tmp_path, token="sandbox-noscope")
    assert result.code == 3
    assert "calls:read" in result.stderr and "Traceback" not in result.stderr


async def test_a_held_lock_exits_75_at_once(sandbox, tmp_path):
    write_config(tmp_path, sandbox.base_url)
    with RunLock(tmp_path / "callsync.duckdb"):
        result = await run_cli("sync", "--no-media", cwd=tmp_path)
    assert result.code == 75
    assert_one_line_error(result, "another callsync run holds", "callsync.duckdb.lock")
    assert not sandbox.requests, "a locked-out run must not touch the API"


async def test_backfill_prints_a_summary_and_json_logs(sandbox, tmp_path):
    data = sandbox.data
    write_config(tmp_path, sandbox.base_url)
    start, end = (data.today - timedelta(days=2)).isoformat(), data.today.isoformat()
    result = await run_cli("backfill", "--start", start, "--end", end, "--no-media", "--log-format", "json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    summary = result.stdout.strip().splitlines()
    assert len(summary) == 1 and summary[0].startswith("backfill ok: 1 windows")
    assert "listing requests per 100 calls" in summary[0]
    for line in result.stderr.strip().splitlines():
        assert "level" in json.loads(line)
    status = await run_cli("status", cwd=tmp_path)
    assert status.code == 0 and "backfill" in status.stdout and "calls" in status.stdout
    assert "listing requests per 100 calls" in status.stdout
    as_json = json.loads((await run_cli("status", "--format", "json", cwd=tmp_path)).stdout)
    assert as_json["counts"]["calls"] == len(data.calls_between(data.today - timedelta(days=2), data.today))


# The CLI's entry point in a child process, reporting afterwards what it imported and
# how it left the garbage collector.
NUMPY_PROBE = """
import gc
import sys
from pipeline import cli
try:
    cli.cli.main(sys.argv[1:], standalone_mode=False)
finally:
    print("tenacity imported:", sys.modules.get("tenacity") is not None)
    print("collector on, imports frozen:", gc.isenabled() and gc.get_freeze_count() > 0)
    print("pyarrow.compute imported:", sys.modules.get("pyarrow.compute") is not None)
    print("numpy imported:", sys.modules.get("numpy") is not None)
"""


async def test_a_backfill_runs_without_numpy(sandbox, tmp_path):
    """pyarrow would import NumPy (~12 MB resident) only for conversions callsync never makes,
    and pyarrow.compute (~8 MB, ~40 ms) only for kernels it has no need of. A run with no
    retry does without tenacity, and the collector is back on after the imports."""
    write_config(tmp_path, sandbox.base_url, media={"dir": str(tmp_path / "media")})
    today = sandbox.data.today.isoformat()
    yesterday = (sandbox.data.today - timedelta(days=1)).isoformat()  # calls with media even just after midnight
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", NUMPY_PROBE, "backfill", "--start", yesterday, "--end", today,
        cwd=tmp_path, env={**os.environ, "CALLSYNC_TOKEN": "sandbox-token"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert "backfill ok" in stdout.decode() and "media 0 downloaded" not in stdout.decode()
    assert stdout.decode().strip().endswith("numpy imported: False")
    assert "pyarrow.compute imported: False" in stdout.decode()
    assert "tenacity imported: False" in stdout.decode()
    assert "collector on, imports frozen: True" in stdout.decode()


async def test_database_memory_limit_applies_and_running_out_is_one_line(sandbox, tmp_path):
    today = sandbox.data.today.isoformat()
    write_config(tmp_path, sandbox.base_url, database={"memory_limit": "1MB"})
    result = await run_cli("backfill", "--start", today, "--end", today, "--no-media", cwd=tmp_path)
    assert result.code == 1
    assert_one_line_error(result, "database ran out of memory", "[database] memory_limit")

    write_config(tmp_path, sandbox.base_url, database={"memory_limit": "64MB"})
    result = await run_cli("backfill", "--start", today, "--end", today, "--no-media", cwd=tmp_path)
    assert result.code == 0, result.stderr


async def test_usage_errors_exit_2(tmp_path):
    result = await run_cli("backfill", "--start", "2026-02-30", "--end", "2026-03-01", cwd=tmp_path)
    assert result.code == 2 and "Traceback" not in result.stderr
    result = await run_cli("backfill", "--start", "2026-03-02", "--end", "2026-03-01", cwd=tmp_path)
    assert result.code == 2 and "before --start" in result.stderr


async def wait_for_requests(sandbox, count: int, process) -> bool:
    """Wait on the server's own log until it has seen ``count`` requests (or the run ended)."""
    while len(sandbox.requests) < count:
        if process.returncode is not None:
            return False
        await asyncio.sleep(0.005)
    return True


async def test_backfill_killed_at_random_moments_ends_identical(tmp_path):
    data = SandboxData.generate(seed=5, calls=4_000, days=20)
    faults = Faults(latency_ms=5, shuffle_pages=True)
    chooser = random.Random(20261126)
    async with run_sandbox(data=data, faults=faults) as sandbox:
        write_config(tmp_path, sandbox.base_url, api={"max_concurrency": 4}, sync={"per_page": 50})
        args = ("backfill", "--start", (data.today - timedelta(days=19)).isoformat(), "--end", data.today.isoformat(), "--no-media")
        kills = 0
        for _ in range(4):
            process = await start_cli(*args, cwd=tmp_path)
            target = len(sandbox.requests) + chooser.randint(5, 60)
            if await wait_for_requests(sandbox, target, process):
                process.send_signal(signal.SIGKILL)
                kills += 1
            await process.communicate()
        assert kills >= 2, "the kills should land while the backfill runs"
        final = await run_cli(*args, cwd=tmp_path)
        assert final.code == 0, final.stderr
        assert "backfill ok" in final.stdout
    database = tmp_path / "callsync.duckdb"
    assert_same_calls(database, data)
    # Windows sized by the data (~4 days here) hold each day once, through yesterday: today is
    # never recorded as settled (calls may still come).
    assert scalar(database, "SELECT count(*) FROM sync_windows") < 19
    assert scalar(database, "SELECT sum(window_end - window_start + 1) FROM sync_windows") == 19
    assert scalar(database, "SELECT count(DISTINCT window_start) FROM sync_windows") == scalar(database, "SELECT count(*) FROM sync_windows")
    settled_calls = len(data.calls_between(None, data.today - timedelta(days=1)))
    assert settled_calls <= scalar(database, "SELECT sum(row_count) FROM sync_windows") <= data.calls_total
    leftovers = [path.name for path in Path(tmp_path).iterdir() if path.name.endswith(".wal")]
    assert not leftovers or scalar(database, "SELECT count(*) FROM calls") == data.calls_total


@pytest.mark.parametrize(
    "token_file, env_token, base_url, fragments",
    [
        (b"tok_SECRET\r\nX-Injected: y", None, None, ["[api] token_file", "line break", "one line"]),
        (b"tok_SECRET\nX-Injected: y\n", None, None, ["[api] token_file", "line break"]),
        (b"\xff\xfetok_SECRET\n", None, None, ["[api] token_file", "token.txt is not UTF-8 text"]),
        (None, "tok_SECRET\nX-Injected: y", None, ["$CALLSYNC_TOKEN", "line break"]),
        (None, "sandbox-token", "http://u:pw_SECRET@127.0.0.1:9", ["[api] base_url", "user or password"]),
        (None, "sandbox-token", "http://[::1:9", ["[api] base_url", "not a valid URL"]),
    ],
)
async def test_a_bad_token_or_base_url_is_one_line_exit_2_without_the_secret(tmp_path, token_file, env_token, base_url,
                                                                           fragments):
    write_config(tmp_path, base_url or "http://127.0.0.1:9", api={"token_env": "CALLSYNC_TOKEN", "token_file": "token.txt"})
    if token_file is not None:
        (tmp_path / "token.txt").write_bytes(token_file)
    result = await run_cli("sync", cwd=tmp_path, token=env_token)
    assert result.code == 2, result.stderr
    assert_one_line_error(result, "callsync: error: ", *fragments)
    assert "SECRET" not in result.stderr and "Injected" not in result.stderr


def test_a_token_files_trailing_newline_and_byte_order_mark_are_not_the_token(tmp_path, monkeypatch):
    from pipeline.config import load_settings

    monkeypatch.delenv("CALLSYNC_TOKEN", raising=False)
    write_config(tmp_path, "http://127.0.0.1:9", api={"token_file": "token.txt"})
    for content in (b"tok_abc\n", b"tok_abc\r\n", b"\xef\xbb\xbftok_abc\n"):
        (tmp_path / "token.txt").write_bytes(content)
        assert load_settings(tmp_path / "callsync.toml").require_token().get_secret_value() == "tok_abc"
