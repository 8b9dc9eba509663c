"""A calls listing that cannot be true, through the real CLI: the day that lies fails at
once with one line, the rest of the run goes on and is stored exactly."""

from __future__ import annotations

import asyncio
import resource
from datetime import timedelta

import pytest

from pipeline.sandbox import Faults, SandboxData, run_sandbox
from tests.conftest import run_cli, write_config
from tests.dbcheck import sandbox_calls, scalar, stored_calls


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ({"impossible_total": True}, "meta.total of 1,000,000,000 calls cannot be true"),
        ({"oversized_pages": 300}, "more than its meta.per_page of 10"),
        ({"repeated_ids": True}, "calls already listed on other pages"),
        ({"growing_total": True}, "but paging it again found none beyond"),
    ],
    ids=["impossible total", "pages over per_page", "repeated ids", "growing total"],
)
async def test_a_listing_that_cannot_be_true_fails_its_day_alone(fault, says, tmp_path):
    data = SandboxData.generate(seed=31, calls=1_500, days=10)
    first, bad_day = data.first_day, data.today - timedelta(days=4)
    async with run_sandbox(data=data, faults=Faults(listing_fault_day=bad_day.isoformat(), **fault)) as sandbox:
        write_config(tmp_path, sandbox.base_url, sync={"per_page": 20})
        args = ("backfill", "--start", first.isoformat(), "--end", data.today.isoformat(), "--no-media")
        result = await asyncio.wait_for(run_cli(*args, cwd=tmp_path), timeout=120)
        listing_requests = sum(1 for r in sandbox.requests if r.path.endswith("/calls"))

    assert result.code == 1, result.stderr
    assert "Traceback" not in result.stderr
    failed = [line for line in result.stderr.splitlines() if "failed" in line and says in line]
    assert failed and all(f"window {bad_day}:" in line for line in failed), result.stderr
    assert result.stdout.startswith("backfill failed:") and "1 failed" in result.stdout
    # Every other day, and the numbers and flows, are stored exactly; nothing of the bad day.
    database = tmp_path / "callsync.duckdb"
    assert stored_calls(database) == {
        **sandbox_calls(data, first, bad_day - timedelta(days=1)),
        **sandbox_calls(data, bad_day + timedelta(days=1), data.today),
    }
    assert scalar(database, "SELECT count(*) FROM tracking_numbers") == len(data.numbers)
    assert scalar(database, "SELECT count(*) FROM call_flows") == len(data.flows)
    # Fast and small: the ~75 pages of the range and a few more, whatever the API claimed.
    assert listing_requests < 150
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 300 * 1024  # KB: any CLI run so far
