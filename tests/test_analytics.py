"""Named queries, views and `callsync query`, on a real demo-built database.

The database is built once per module by the demo itself (sandbox, backfill with media).
Read-only behaviour is tested with real processes: a child holding the DuckDB file
read-write, and a real `callsync backfill` against a slow sandbox.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import shutil
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from conftest import run_cli, start_cli, write_config
from pipeline import analytics, demo, load
from pipeline.errors import DatabaseLockedError, UsageError
from pipeline.store import FileStore
from pipeline.sandbox import Faults, SandboxData, run_sandbox

PHRASE = "warranty"
EXPECTED_COLUMNS = {
    "daily_calls": [
        "call_date", "calls", "qualified", "unqualified", "voicemail", "abandoned", "qualified_rate", "avg_duration_s",
    ],
    "qualified_by_campaign": [
        "campaign_id", "calls", "qualified", "qualified_rate", "avg_duration_s", "avg_qualified_duration_s",
    ],
    "qualified_by_affiliate": [
        "affiliate_id", "calls", "qualified", "qualified_rate", "avg_duration_s", "avg_qualified_duration_s",
    ],
    "qualified_by_source": [
        "source", "calls", "qualified", "qualified_rate", "avg_duration_s", "avg_qualified_duration_s",
    ],
    "number_performance": [
        "display_name", "type", "phone_number", "flow_name", "calls", "qualified_rate", "avg_duration_s",
    ],
    "hour_by_weekday": ["hour", "mon", "tue", "wed", "thu", "fri", "sat", "sun", "total"],
    "top_caller_states": ["caller_state", "calls", "callers", "qualified_rate", "share_of_calls"],
    "top_caller_cities": ["caller_city", "caller_state", "calls", "callers", "qualified_rate", "share_of_calls"],
    "sentiment_by_outcome": ["outcome", "calls", "positive", "neutral", "negative", "no_sentiment"],
    "repeat_callers": [
        "caller_number", "caller_city", "caller_state", "calls", "qualified", "numbers_called",
        "first_call_at", "last_call_at",
    ],
    "media_coverage": ["kind", "calls", "expected", "fetched", "pending", "failed", "unavailable", "coverage",
                       "oldest_pending_since", "oldest_pending_waited"],
    "transcript_search": [
        "call_id", "started_at", "outcome", "sentiment", "number_name", "matching_segments", "first_match",
    ],
    "schema": ["kind", "name", "column", "type", "meaning"],
}
# The sandbox's callers rarely call twice: min_calls=1 makes repeat_callers list everyone.
PARAMS = {"transcript_search": {"phrase": PHRASE}, "repeat_callers": {"min_calls": "1"}}
CALLS = 2_000


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo database (2,000 calls over 20 days, with media), built once for the module."""
    folder = tmp_path_factory.mktemp("demo")
    database = folder / "demo.duckdb"
    summary = demo.run_demo(database, folder / "media", seed=11, calls=CALLS, days=20)
    assert summary.status == "ok", summary.line()
    return database


@pytest.fixture
def db_copy(demo_db: Path, tmp_path: Path) -> Path:
    """A private copy, for tests that lock or alter the file."""
    copy = tmp_path / "copy.duckdb"
    shutil.copyfile(demo_db, copy)
    return copy


def single_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("callsync: error: ")
    return lines[0]


# --- the catalogue ----------------------------------------------------------------------


def test_every_named_query_has_expected_columns_listed():
    assert sorted(query.name for query in analytics.list_queries()) == sorted(EXPECTED_COLUMNS)


@pytest.mark.parametrize("query", analytics.list_queries(), ids=lambda query: query.name)
def test_query_headers_declare_what_the_sql_uses(query: analytics.NamedQuery):
    assert query.description and not query.description.startswith("param:")
    used = set(re.findall(r"\$(\w+)", query.sql))
    assert used == {param.name for param in query.params}
    for param in query.params:
        assert param.description, f"{query.name}: --param {param.name} has no description"


@pytest.mark.parametrize("name", sorted(EXPECTED_COLUMNS))
def test_every_named_query_runs_on_a_demo_database(demo_db: Path, name: str):
    columns, rows = analytics.run_query(demo_db, name, PARAMS.get(name, {}))
    assert columns == EXPECTED_COLUMNS[name]
    assert rows, f"{name} returned no rows"
    assert all(len(row) == len(columns) for row in rows)


# --- what the queries and views say -------------------------------------------------------


def scalar(database: Path, sql: str):
    return analytics.run_query(database, sql)[1][0][0]


def test_the_schema_says_what_every_table_view_and_table_column_holds(demo_db: Path):
    columns, rows = analytics.run_query(demo_db, "schema")
    described = [dict(zip(columns, row)) for row in rows]
    # A DuckLake keeps no comments on a view's columns: the view's own comment covers them.
    undescribed = [(row["name"], row["column"]) for row in described
                   if not row["meaning"] and not (row["kind"] == "view" and row["column"])]
    assert not undescribed, f"no comment on {undescribed}: add one in a migration (sql/migrations/009_schema_comments.sql)"
    assert {row["name"] for row in described if row["column"] is None} >= {"calls", "calls_enriched", "tombstones", "runs"}

    _, calls_only = analytics.run_query(demo_db, "schema", {"name": "calls"})
    assert {row[1] for row in calls_only} == {"calls"} and len(calls_only) == 1 + len(stored_call_columns(demo_db))


def stored_call_columns(database: Path) -> list[str]:
    return [row[0] for row in analytics.run_query(database, "SELECT column_name FROM duckdb_columns() WHERE table_name = 'calls'")[1]]


def test_calls_enriched_keeps_one_row_per_call_and_names_every_number(demo_db: Path):
    assert scalar(demo_db, "SELECT count(*) FROM calls_enriched") == CALLS
    assert scalar(demo_db, "SELECT count(DISTINCT id) FROM calls_enriched") == CALLS
    assert scalar(demo_db, "SELECT count(*) FROM calls_enriched WHERE number_name IS NULL OR flow_name IS NULL") == 0


def test_daily_counts_add_up(demo_db: Path):
    columns, rows = analytics.run_query(demo_db, "daily_calls")
    by_name = [dict(zip(columns, row)) for row in rows]
    assert len(by_name) == 20
    assert sum(day["calls"] for day in by_name) == CALLS
    for day in by_name:
        assert day["qualified"] + day["unqualified"] + day["voicemail"] + day["abandoned"] == day["calls"]
    _, last_week = analytics.run_query(demo_db, "daily_calls", {"days": "7"})
    assert [row[0] for row in last_week] == [day["call_date"] for day in by_name[-7:]]


def test_hour_by_weekday_counts_every_call_in_any_time_zone(demo_db: Path):
    _, utc = analytics.run_query(demo_db, "hour_by_weekday")
    _, eastern = analytics.run_query(demo_db, "hour_by_weekday", {"tz": "America/New_York"})
    assert sum(row[-1] for row in utc) == sum(row[-1] for row in eastern) == CALLS
    assert [row[-1] for row in utc] != [row[-1] for row in eastern]
    assert all(sum(row[1:8]) == row[8] for row in utc)


def test_transcript_search_is_case_insensitive_and_literal(demo_db: Path):
    columns, lower = analytics.run_query(demo_db, "transcript_search", {"phrase": PHRASE, "limit": "100000"})
    _, upper = analytics.run_query(demo_db, "transcript_search", {"phrase": PHRASE.upper(), "limit": "100000"})
    assert lower and lower == upper
    first_match = columns.index("first_match")
    assert all(PHRASE in row[first_match].lower() for row in lower)
    expected = scalar(
        demo_db, f"SELECT count(DISTINCT call_id) FROM transcript_segments WHERE text ILIKE '%{PHRASE}%'"
    )
    assert len(lower) == expected
    assert analytics.run_query(demo_db, "transcript_search", {"phrase": "%"})[1] == []


def test_media_coverage_matches_the_tables(demo_db: Path):
    columns, rows = analytics.run_query(demo_db, "media_coverage")
    coverage = {row[0]: dict(zip(columns, row)) for row in rows}
    assert coverage["recording"]["fetched"] == scalar(demo_db, "SELECT count(*) FROM recordings")
    assert coverage["transcript"]["fetched"] == scalar(
        demo_db, "SELECT count(DISTINCT call_id) FROM transcript_segments"
    )
    assert coverage["recording"]["expected"] == scalar(
        demo_db, "SELECT count(*) FROM calls WHERE recording_url IS NOT NULL"
    )
    oldest = scalar(demo_db, "SELECT min(coalesce(missing_since, first_seen_at)) FROM media_jobs"
                             " WHERE kind = 'transcript' AND status = 'pending'")
    assert oldest is not None, "the demo's sandbox holds some transcripts back"
    assert coverage["transcript"]["oldest_pending_since"] == oldest
    assert timedelta(0) <= coverage["transcript"]["oldest_pending_waited"] < timedelta(days=1)
    assert coverage["recording"]["oldest_pending_since"] is None and coverage["recording"]["pending"] == 0


def test_repeat_callers_respect_min_calls_and_limit(demo_db: Path):
    callers = scalar(demo_db, "SELECT count(DISTINCT caller_number) FROM calls")
    columns, everyone = analytics.run_query(demo_db, "repeat_callers", {"min_calls": "1", "limit": "100000"})
    assert len(everyone) == callers
    assert sum(row[columns.index("calls")] for row in everyone) == CALLS
    _, repeat = analytics.run_query(demo_db, "repeat_callers")
    assert repeat == [row for row in everyone if row[columns.index("calls")] >= 2][:50]
    assert len(analytics.run_query(demo_db, "repeat_callers", {"min_calls": "1", "limit": "5"})[1]) == 5


# --- parameters and errors (library) -------------------------------------------------------


def test_parameters_are_checked_before_anything_runs(demo_db: Path):
    with pytest.raises(UsageError, match="missing parameter: --param phrase"):
        analytics.run_query(demo_db, "transcript_search")
    with pytest.raises(UsageError, match="unknown parameter colour"):
        analytics.run_query(demo_db, "daily_calls", {"colour": "red"})
    with pytest.raises(UsageError, match="no query named 'nonesuch'"):
        analytics.run_query(demo_db, "nonesuch")
    with pytest.raises(UsageError, match="Conversion Error"):
        analytics.run_query(demo_db, "top_caller_states", {"limit": "many"})


def test_a_database_that_predates_the_views_says_so(db_copy: Path):
    with duckdb.connect(str(db_copy)) as conn:
        conn.execute("DROP VIEW daily_calls")
        conn.execute("DELETE FROM schema_migrations WHERE name = '003_views'")
    with pytest.raises(UsageError, match="predates migration 003_views"):
        analytics.run_query(db_copy, "daily_calls")


def test_parse_params():
    assert analytics.parse_params(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(UsageError, match="NAME=VALUE"):
        analytics.parse_params(["oops"])


# --- callsync query (subprocess) --------------------------------------------------------------


async def test_csv_output_parses(demo_db: Path, tmp_path: Path):
    result = await run_cli("query", "qualified_by_source", "--database", str(demo_db), "--format", "csv", cwd=tmp_path)
    assert result.code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == EXPECTED_COLUMNS["qualified_by_source"]
    assert sum(int(row["calls"]) for row in rows) == CALLS
    assert all(0 <= float(row["qualified_rate"]) <= 1 for row in rows)


async def test_json_output_is_a_list_of_objects(demo_db: Path, tmp_path: Path):
    result = await run_cli(
        "query", "repeat_callers", "--param", "min_calls=1", "--param", "limit=3",
        "--database", str(demo_db), "--format", "json", cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 3 and list(rows[0]) == EXPECTED_COLUMNS["repeat_callers"]
    first = datetime.fromisoformat(rows[0]["first_call_at"])
    assert first.utcoffset().total_seconds() == 0


async def test_table_output_and_parameters(demo_db: Path, tmp_path: Path):
    result = await run_cli(
        "query", "transcript_search", "--param", f"phrase={PHRASE.upper()}", "--param", "limit=2",
        "--database", str(demo_db), cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    assert "first_match" in result.stdout and "(2 rows)" in result.stdout
    assert PHRASE in result.stdout.lower()


async def test_list_shows_every_query_with_its_description(tmp_path: Path):
    result = await run_cli("query", "--list", cwd=tmp_path)
    assert result.code == 0, result.stderr
    for query in analytics.list_queries():
        assert re.search(rf"^{query.name}\s+{re.escape(query.description)}$", result.stdout, re.MULTILINE)
        for param in query.params:
            assert f"--param {param.name}=" in result.stdout


async def test_ad_hoc_sql_with_a_parameter(demo_db: Path, tmp_path: Path):
    result = await run_cli(
        "query", "SELECT count(*) AS n, $who AS who FROM calls_enriched", "--param", "who=me",
        "--database", str(demo_db), "--format", "json", cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout) == [{"n": CALLS, "who": "me"}]


async def test_the_database_comes_from_the_config(demo_db: Path, tmp_path: Path):
    config = write_config(tmp_path, "http://127.0.0.1:9", database={"path": str(demo_db)})
    result = await run_cli("query", "SELECT count(*) AS n FROM calls", "--config", str(config), "--format", "csv",
                           cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert result.stdout == f"n\n{CALLS}\n"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["SELEC * FROM calls"], 2, "Parser Error"),
        (["SELECT nope FROM calls"], 2, "Binder Error"),
        (["SELECT * FROM no_such_table"], 2, "no_such_table"),
        (["DELETE FROM calls"], 2, "read-only"),
        (["nonesuch"], 2, "no query named 'nonesuch'"),
        (["transcript_search"], 2, "missing parameter: --param phrase"),
        (["daily_calls", "--param", "colour=red"], 2, "unknown parameter colour"),
        (["daily_calls", "--param", "oops"], 2, "expected NAME=VALUE"),
    ],
)
async def test_errors_are_one_line(demo_db: Path, tmp_path: Path, args: list[str], code: int, message: str):
    result = await run_cli("query", *args, "--database", str(demo_db), cwd=tmp_path)
    assert result.code == code
    assert message in single_line_error(result.stderr)
    assert result.stdout == ""
    assert scalar(demo_db, "SELECT count(*) FROM calls") == CALLS


async def test_missing_database_or_config_is_one_line(tmp_path: Path):
    missing = await run_cli("query", "daily_calls", "--database", str(tmp_path / "nope.duckdb"), cwd=tmp_path)
    assert missing.code == 1
    assert "does not exist" in single_line_error(missing.stderr)
    unconfigured = await run_cli("query", "daily_calls", cwd=tmp_path)
    assert unconfigured.code == 2
    assert "--database" in single_line_error(unconfigured.stderr)


# --- a writer holding the file ---------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, duckdb
    conn = duckdb.connect(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.readline()
    conn.close()
    """
)


async def hold_lock(database: Path) -> asyncio.subprocess.Process:
    """A child process holding the file read-write until a line arrives on its stdin."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, str(database),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    assert await holder.stdout.readline() == b"locked\n"
    return holder


async def release(holder: asyncio.subprocess.Process) -> None:
    holder.stdin.write(b"go\n")
    await holder.stdin.drain()
    assert await holder.wait() == 0


async def test_a_query_on_a_file_an_analyst_holds_read_write_fails_at_once(db_copy: Path, tmp_path: Path):
    # Only an analyst's read-write session keeps a query out (the next publish replaces the
    # file, see test_snapshot.py): one line, exit 1, no waiting. --wait is accepted and ignored.
    holder = await hold_lock(db_copy)
    try:
        result = await run_cli("query", "daily_calls", "--database", str(db_copy), "--wait", "60", cwd=tmp_path)
    finally:
        await release(holder)
    assert result.code == 1
    assert "another process holds it read-write" in single_line_error(result.stderr)
    with pytest.raises(DatabaseLockedError):
        holder = await hold_lock(db_copy)
        try:
            analytics.run_query(db_copy, "daily_calls")
        finally:
            await release(holder)
    assert analytics.run_query(db_copy, "daily_calls")[1]


async def test_queries_during_a_real_backfill_answer_at_once_from_the_last_publish(tmp_path: Path):
    """`callsync backfill` against a slow sandbox, publishing every 0.2 s: every query
    meanwhile answers at once (no notice, no error) from a snapshot, and some see the
    backfill's own run row, published while it was still running."""
    data = SandboxData.generate(seed=5, calls=2_400, days=12)
    database = tmp_path / "callsync.duckdb"
    load.migrate(FileStore(database))  # so that queries have tables to read from the first moment
    async with run_sandbox(data=data, faults=Faults(latency_ms=300)) as sandbox:
        config = write_config(
            tmp_path, sandbox.base_url, api={"max_concurrency": 2}, database={"publish_interval_s": 0.2}
        )
        backfill = await start_cli(
            "backfill", "--start", data.first_day.isoformat(), "--end", data.today.isoformat(), "--no-media",
            "--config", str(config), cwd=tmp_path,
        )
        seen, results = [], []
        while backfill.returncode is None:
            result = await run_cli(
                "query", "SELECT status FROM runs", "--database", str(database), "--format", "csv", cwd=tmp_path,
            )
            results.append(result)
            seen.extend(result.stdout.split()[1:])
        _, stderr = await backfill.communicate()
    assert backfill.returncode == 0, stderr.decode()
    assert results and all(result.code == 0 and not result.stderr for result in results), [r.stderr for r in results]
    assert "running" in seen
    assert scalar(database, "SELECT count(*) FROM calls") == data.calls_total
