"""Rate limits, caps and the request budget, checked against the sandbox's own request log."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta, timezone

import pytest
from aiohttp import web

from pipeline import sync
from pipeline.client import parse_retry_after
from pipeline.config import ApiSettings
from pipeline.sandbox import Faults, SandboxData, run_sandbox
from tests.conftest import run_cli, serve_app, write_config
from tests.dbcheck import assert_same_calls, scalar
from tests.test_client import client_for


@pytest.fixture
def year_of_calls() -> SandboxData:
    return SandboxData.generate(seed=3, calls=8_000, days=120)


def api_log(sandbox):
    return [r for r in sandbox.requests if r.host == "api"]


async def test_a_429_storm_pauses_everyone_together_then_recovers(year_of_calls, make_settings):
    limit = 40
    async with run_sandbox(data=year_of_calls, faults=Faults(rate_limit=limit)) as sandbox:
        settings = make_settings(sandbox.base_url, api={"max_concurrency": 8})
        data = year_of_calls
        summary = await sync.backfill(settings, data.today - timedelta(days=119), data.today, with_media=False)
        log = api_log(sandbox)
    assert summary.status == "ok" and summary.rate_limited > 0
    assert_same_calls(settings.database.path, data)

    first_429 = next(r for r in log if r.status == 429)
    pause = float(first_429.retry_after)
    answered = first_429.finished
    # Slack at the start of the pause for requests already past the throttle when the 429 arrived.
    sent_during_pause = [r for r in log if answered + 0.25 < r.started < answered + pause - 0.05]
    assert not sent_during_pause, _debug(log)

    rate_limited = sum(1 for r in log if r.status == 429)
    assert rate_limited / len(log) < 0.10, f"{rate_limited} of {len(log)} were 429s"
    after_pause = [r for r in log if r.started >= answered + pause and r.status == 200]
    span = after_pause[-1].finished - after_pause[0].started
    assert len(after_pause) / span >= 0.75 * limit, "throughput recovers close to the limit"


async def test_the_rate_settles_under_the_limit_measured_between_two_429s(small_data):
    # A cap twice the server's limit: the cap draws a 429 when the server's bucket runs dry,
    # the cut rate (still over the limit) a second one, and from the time between them the
    # throttle knows the limit; no third 429 comes. 32 requests waiting at 20/s have turns
    # booked 1.6 s ahead, past the 1 s pause: they must book again after it.
    limit = 10
    async with run_sandbox(data=small_data, faults=Faults(rate_limit=limit)) as sandbox:
        async with client_for(sandbox, max_concurrency=32, requests_per_second=2 * limit) as client:
            await asyncio.gather(*(client.list_numbers(per_page=1) for _ in range(70)))
        log = api_log(sandbox)
    limited = [r for r in log if r.status == 429]
    pauses = [(r.finished, r.finished + float(r.retry_after)) for r in limited]
    assert len(limited) == 2 and pauses[1][0] > pauses[0][1], _debug(log)
    for _, end in pauses:
        after = [r for r in log if end <= r.started < end + 0.5]
        assert len(after) <= 0.5 * 2 * limit + 1, "turns booked before a pause came on top of new ones"
    settled = [r.started for r in log if r.started >= pauses[1][1]]
    rate = (len(settled) - 1) / (settled[-1] - settled[0])
    assert 0.9 * limit <= rate <= limit, f"{rate:.2f}/s after the limit was measured"


async def test_configured_rate_and_concurrency_caps_hold(sandbox, make_settings):
    settings = make_settings(sandbox.base_url, api={"max_concurrency": 3, "requests_per_second": 25})
    data = sandbox.data
    await sync.backfill(settings, data.today - timedelta(days=9), data.today, with_media=False)
    log = api_log(sandbox)
    assert max(r.in_flight for r in log) <= 3
    starts = sorted(r.started for r in log)
    busiest = max(sum(1 for s in starts[i:] if s < start + 1.0) for i, start in enumerate(starts))
    assert busiest <= 25 + 1  # +1: arrival jitter on loopback can pull one start into the window


async def test_request_budget_pauses_cleanly_and_the_next_run_resumes(sandbox, tmp_path):
    data = sandbox.data
    write_config(tmp_path, sandbox.base_url, api={"max_requests_per_run": 12, "max_concurrency": 4})
    args = ("backfill", "--start", (data.today - timedelta(days=9)).isoformat(), "--end", data.today.isoformat(), "--no-media")
    runs = []
    for _ in range(10):
        result = await run_cli(*args, cwd=tmp_path)
        assert result.code == 0, result.stderr
        runs.append(result.stdout.strip())
        if "backfill ok" in result.stdout:
            break
    assert "paused" in runs[0] and "request budget" in (runs[0] + str(runs))
    assert runs[-1].startswith("backfill ok")
    database = tmp_path / "callsync.duckdb"
    assert_same_calls(database, data)
    assert scalar(database, "SELECT count(*) FROM runs WHERE status = 'paused'") == len(runs) - 1
    status = await run_cli("status", cwd=tmp_path)
    assert "paused" in status.stdout
    listing_requests = [r for r in api_log(sandbox) if r.path.endswith("/calls") and r.status == 200]
    days_fetched = {
        date.fromisoformat(r.query["start_date"]) + timedelta(days=offset)
        for r in listing_requests
        for offset in range((date.fromisoformat(r.query["end_date"]) - date.fromisoformat(r.query["start_date"])).days + 1)
    }
    assert len(days_fetched) == 10
    assert len(runs) < 10, "each budgeted run must make progress"
    assert all(r.status != 429 for r in api_log(sandbox))


def _debug(log):
    """The requests around the first 429, for the failure message."""
    first = next(r for r in log if r.status == 429)
    return [
        (r.seq, round(r.started - first.finished, 3), r.status, r.in_flight)
        for r in log
        if -0.2 < r.started - first.finished < 1.2
    ]


async def test_hourly_request_budget_counts_earlier_runs_and_resumes_after_the_hour(sandbox, tmp_path):
    data = sandbox.data
    write_config(tmp_path, sandbox.base_url, api={"max_requests_per_hour": 12, "max_concurrency": 4})
    args = ("backfill", "--start", (data.today - timedelta(days=9)).isoformat(), "--end", data.today.isoformat(), "--no-media")
    database = tmp_path / "callsync.duckdb"

    first = await run_cli(*args, cwd=tmp_path)
    assert first.code == 0, first.stderr
    assert first.stdout.startswith("backfill paused: request budget")
    assert "12 requests allowed by max_requests_per_hour = 12" in first.stderr
    sent = len(api_log(sandbox))
    assert sent == 12

    # Within the hour the budget is spent: the next run pauses before sending anything.
    second = await run_cli(*args, cwd=tmp_path)
    assert second.code == 0, second.stderr
    assert second.stdout.startswith("backfill paused: request budget")
    assert "0 requests allowed by max_requests_per_hour = 12, runs in the past hour sent 12" in second.stderr
    assert len(api_log(sandbox)) == sent

    # Two hours later each time (callsync's clock pinned), the backfill goes on and completes.
    for later in range(1, 11):
        now = datetime.now(timezone.utc) + timedelta(hours=2 * later)
        result = await run_cli(*args, cwd=tmp_path, env={"CALLSYNC_NOW": now.isoformat()})
        assert result.code == 0, result.stderr
        assert len(api_log(sandbox)) - sent <= 12
        sent = len(api_log(sandbox))
        if "backfill ok" in result.stdout:
            break
    assert result.stdout.startswith("backfill ok")
    assert_same_calls(database, data)


def test_the_tighter_of_the_run_and_hourly_budgets_applies():
    api = ApiSettings(max_requests_per_run=5, max_requests_per_hour=12)
    assert sync.request_budget(api, 0) == sync.RequestBudget(5, "max_requests_per_run")
    assert sync.request_budget(api, 10).limit == 2
    assert sync.request_budget(api, 30).limit == 0
    assert sync.request_budget(ApiSettings(), 30) == sync.RequestBudget()


def test_retry_after_is_seconds_or_an_http_date_and_nothing_else():
    assert parse_retry_after("120") == 120.0 and parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("Thu, 01 Jan 2015 00:00:00 GMT") == 0.0  # a date gone by: at once
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT") > 1e9
    for garbage in ("inf", "Infinity", "nan", "-5", "1e400", "1_000", "\u0661\u0662", "soon", "", None, "Fri, 99 Foo 2026"):
        assert parse_retry_after(garbage) is None, garbage


def rate_limited_api(retry_after: str, answered: asyncio.Event | None = None) -> web.Application:
    """An API whose calls listing always answers 429 with ``retry_after``; numbers and flows are empty."""

    async def calls(request: web.Request) -> web.Response:
        if answered is not None:
            answered.set()
        return web.json_response({"message": "slow down"}, status=429, headers={"Retry-After": retry_after})

    async def empty(request: web.Request) -> web.Response:
        return web.json_response({"data": [], "meta": {"page": 1, "per_page": 100, "total": 0}})

    app = web.Application()
    app.router.add_get("/api/call-tracking/calls", calls)
    app.router.add_get("/api/call-tracking/numbers", empty)
    app.router.add_get("/api/call-tracking/flows", empty)
    return app


@pytest.mark.parametrize("retry_after", ["99999999", "Fri, 31 Dec 9999 23:59:59 GMT"])
async def test_a_retry_after_longer_than_give_up_after_s_stops_the_run_at_once(tmp_path, retry_after):
    async with serve_app(rate_limited_api(retry_after)) as base_url:
        write_config(tmp_path, base_url, api={"give_up_after_s": 30})
        result = await asyncio.wait_for(
            run_cli("backfill", "--start", "2026-03-15", "--end", "2026-03-15", "--no-media", cwd=tmp_path), timeout=30
        )
    assert result.code == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"callsync: error: giving up: the API at {base_url} asked to wait"), lines
    assert "longer than [api] give_up_after_s = 30" in lines[0] and "Traceback" not in result.stderr
    assert result.stdout.startswith("backfill aborted:") and "(0 retries, 1 429s)" in result.stdout
    assert scalar(tmp_path / "callsync.duckdb", "SELECT status FROM runs") == "failed"


async def test_a_retry_after_that_is_not_a_number_counts_as_none(tmp_path):
    async with serve_app(rate_limited_api("inf")) as base_url:
        write_config(tmp_path, base_url, api={"max_retries": 1})
        result = await asyncio.wait_for(
            run_cli("backfill", "--start", "2026-03-15", "--end", "2026-03-15", "--no-media", cwd=tmp_path), timeout=60
        )
    assert result.code == 1, result.stderr
    assert "window 2026-03-15 failed" in result.stderr and "HTTP 429 rate limited" in result.stderr
    assert "(1 retries, 2 429s)" in result.stdout
