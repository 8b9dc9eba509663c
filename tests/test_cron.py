"""What cron relies on, through real CLI processes: dates past today, outages, signals, logs."""

from __future__ import annotations

from datetime import date, datetime, timezone

from pipeline.sandbox import Faults, SandboxData, run_sandbox
from tests.conftest import run_cli, write_config
from tests.dbcheck import assert_same_calls, scalar

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
