"""Benchmark a real `callsync backfill` against the sandbox, each in its own process.

Prints one line per run: calls/s, requests, retries, 429s, wall seconds, peak RSS of
the callsync process, the call listing requests against the minimum the API allows,
and the ratio to the floor that minimum sets:

    minimum = ceil(calls in the range / 100) listing pages + the dimension requests (2)
    floor = minimum x latency / max_concurrency   (no rate limit)
    floor = minimum / rate_limit                  (with --rate-limit)

Listing requests are counted in the sandbox's request log (answered 200; 429s apart).
With --incremental, the second sync's listing requests are set against the minimum
for the lookback days it reads again.

Examples:
    uv run python bench/backfill.py --calls 200000 --days 365 --latency-ms 50
    uv run python bench/backfill.py --calls 200000 --days 365 --latency-ms 0
    uv run python bench/backfill.py --calls 20000 --days 60 --latency-ms 50 --media
    uv run python bench/backfill.py --calls 30000 --days 600 --latency-ms 0 --rate-limit 20
    uv run python bench/backfill.py --calls 200000 --days 365 --incremental
    uv run python bench/backfill.py --calls 1000000 --days 365 --latency-ms 0 --memory-limit 100MB
    uv run python bench/backfill.py --calls 22000 --days 1095 --latency-ms 0 --rate-limit 5
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date, timedelta
from pathlib import Path

import duckdb

TOKEN = "sandbox-token"
LOOKBACK_DAYS = 3  # callsync's default [sync] lookback_days


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="callsync-bench-") as workdir, Sandbox(args) as sandbox:
        workdir = Path(workdir)
        write_config(workdir, sandbox.base_url, args)
        today = date.fromisoformat(sandbox.stats()["today"]) if "today" in sandbox.stats() else date.today()
        start = today - timedelta(days=args.days - 1)
        command = ["sync"] if args.incremental else ["backfill", "--start", start.isoformat(), "--end", today.isoformat()]
        if not args.media:
            command.append("--no-media")
        sandbox_cpu = sandbox.cpu_seconds()
        run = run_callsync(command, workdir)
        run["sandbox_cpu_s"] = sandbox.cpu_seconds() - sandbox_cpu
        report("sync (full)" if args.incremental else "backfill", run, workdir, sandbox, args)
        if args.incremental:
            seen = sandbox.last_seq()
            again = run_callsync(["sync"] + ([] if args.media else ["--no-media"]), workdir)
            listing = sandbox.listing_requests(since=seen)
            first, last = sandbox.days_listed(since=seen)  # lookback_days before the watermark .. today
            lookback = sandbox.calls_between(first, last)
            minimum = max(1, math.ceil(lookback / 100))
            print(
                f"incremental sync: {sandbox.last_seq() - seen} requests, {again['wall_s']:.2f}s wall; "
                f"call listing requests {listing} for {lookback} calls in the {(last - first).days + 1} days "
                f"read again ({first}..{last}), minimum {minimum} ({listing / minimum:.2f}x)"
            )
            print(f"  {again['summary']}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--rate-limit", type=float, default=None, help="sandbox requests/s per token")
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--drift-rate", type=float, default=0.0, help="chance a listing sees a late call land in it")
    parser.add_argument("--concurrency", type=int, default=16, help="[api] max_concurrency")
    parser.add_argument("--media-concurrency", type=int, default=8, help="[media] concurrency")
    parser.add_argument("--window-days", type=int, default=None, help="[sync] window_days (default: callsync's)")
    parser.add_argument("--memory-limit", default=None, help="[database] memory_limit, e.g. 100MB")
    parser.add_argument("--media", action="store_true", help="also download recordings and transcripts")
    parser.add_argument("--incremental", action="store_true", help="a full sync, then a sync right after it")
    return parser.parse_args()


class Sandbox:
    """`callsync sandbox` in a process of its own, so it does not share our CPU accounting."""

    def __init__(self, args: argparse.Namespace):
        self.command = [
            sys.executable, "-m", "pipeline", "sandbox", "--port", "0",
            "--seed", str(args.seed), "--calls", str(args.calls), "--days", str(args.days),
            "--latency-ms", str(args.latency_ms), "--error-rate", str(args.error_rate),
        ]
        if args.drift_rate:
            self.command += ["--drift-rate", str(args.drift_rate)]
        if args.rate_limit:
            self.command += ["--rate-limit", str(args.rate_limit)]

    def __enter__(self) -> Sandbox:
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, text=True)
        for line in self.process.stdout:
            found = re.search(r"at (http://\S+)$", line.strip())
            if found:
                self.base_url = found.group(1)
                return self
        raise SystemExit("the sandbox did not start")

    def __exit__(self, *exc_info: object) -> None:
        self.process.terminate()
        self.process.wait()

    def cpu_seconds(self) -> float:
        """CPU the sandbox has used so far (from /proc), to tell whose CPU a run was bound by."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def last_seq(self) -> int:
        return self.stats()["last_seq"]

    def listing_requests(self, since: int = 0) -> int:
        """Calls listing requests the sandbox answered with a page (200) since request ``since``."""
        return len(self._listings(since))

    def days_listed(self, since: int = 0) -> tuple[date, date]:
        """The first and last day the calls listings since request ``since`` asked for."""
        listings = self._listings(since)
        return (
            min(date.fromisoformat(record["query"]["start_date"]) for record in listings),
            max(date.fromisoformat(record["query"]["end_date"]) for record in listings),
        )

    def _listings(self, since: int) -> list[dict]:
        with urllib.request.urlopen(f"{self.base_url}/_admin/requests?since={since}") as response:
            records = json.load(response)
        return [record for record in records if record["path"].endswith("/calls") and record["status"] == 200]

    def calls_between(self, start: date, end: date) -> int:
        query = f"start_date={start.isoformat()}&end_date={end.isoformat()}"
        with urllib.request.urlopen(f"{self.base_url}/_admin/calls?{query}") as response:
            return len(json.load(response))

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.base_url}/_admin/stats") as response:
            stats = json.load(response)
        stats["requests_total"] = sum(stats.get("requests", {}).values())
        return stats


def write_config(workdir: Path, base_url: str, args: argparse.Namespace) -> None:
    first_day = date.today() - timedelta(days=args.days - 1)
    (workdir / "callsync.toml").write_text(
        f'[api]\nbase_url = "{base_url}"\nmax_concurrency = {args.concurrency}\n'
        f"[sync]\nstart_date = {first_day.isoformat()}\n"
        + (f"window_days = {args.window_days}\n" if args.window_days else "")
        + f"lookback_days = {LOOKBACK_DAYS}\n"
        f'[database]\npath = "bench.duckdb"\n'
        + (f'memory_limit = "{args.memory_limit}"\n' if args.memory_limit else "")
        + f'[media]\ndir = "media"\nconcurrency = {args.media_concurrency}\n'
    )


def run_callsync(command: list[str], workdir: Path) -> dict:
    env = {**os.environ, "CALLSYNC_TOKEN": TOKEN}
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *command], cwd=workdir, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    stdout, stderr = process.stdout.read(), process.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"callsync {' '.join(command)} exited {code}:\n{stdout}{stderr}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "summary": stdout.strip(),
    }


def report(label: str, run: dict, workdir: Path, sandbox: Sandbox, args: argparse.Namespace) -> None:
    with duckdb.connect(str(workdir / "bench.duckdb"), read_only=True) as conn:
        calls = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
        per_window = conn.execute("SELECT row_count FROM sync_windows").fetchall()
        requests, retries, limited, elapsed, summary = conn.execute(
            "SELECT requests, retries, rate_limited, epoch(finished_at - started_at), summary "
            "FROM runs ORDER BY started_at LIMIT 1"
        ).fetchone()
    expected = sandbox.stats()["calls_total"]
    status = "exact" if calls == expected else f"MISMATCH: {calls} stored, {expected} served"
    listing = sandbox.listing_requests()
    minimum = max(1, math.ceil(expected / 100))
    one_day_windows = sum(max(1, math.ceil(rows / 100)) for (rows,) in per_window) if len(per_window) == args.days else None
    pages = minimum + 2  # + numbers and flows
    if args.rate_limit:
        floor = pages / args.rate_limit
    else:
        floor = pages * args.latency_ms / 1000 / args.concurrency
    print(
        f"{label}: {calls} calls ({status}) over {args.days} days, latency {args.latency_ms:g} ms, "
        f"concurrency {args.concurrency}{f', rate limit {args.rate_limit:g}/s' if args.rate_limit else ''}"
    )
    ratio = f"{elapsed / floor:.2f}x floor ({floor:.2f}s)" if floor else "no floor (no latency)"
    if args.media:
        ratio = "the run includes media: its floor is on the media line"
    print(
        f"  {calls / elapsed:,.0f} calls/s, {requests} requests, {retries} retries, {limited} 429s, "
        f"{elapsed:.2f}s in run ({run['wall_s']:.2f}s wall with start-up), peak RSS {run['peak_rss_mb']:.0f} MB, {ratio}"
    )
    print(
        f"  call listing requests {listing} (answered 200), minimum {minimum} = ceil({expected} / 100): "
        f"{listing / minimum:.3f}x; {len(per_window)} windows"
        + (f" (one a day: {one_day_windows} pages)" if one_day_windows else "")
        + (f"; 429s {limited / (requests or 1):.1%} of requests" if args.rate_limit else "")
        + (f"; {json.loads(summary).get('refetches', 0)} windows refetched" if args.drift_rate else "")
    )
    if "sandbox_cpu_s" in run:
        print(f"  CPU: callsync {run['cpu_s']:.1f}s, sandbox {run['sandbox_cpu_s']:.1f}s (2 cores shared)")
    media = json.loads(summary).get("media") or {}
    if args.media and media:
        files = media.get("downloaded", 0)
        media_s = media.get("elapsed_s") or elapsed
        floor_media = files * args.latency_ms / 1000 / args.media_concurrency
        print(
            f"  media: {files} files, {media.get('bytes', 0) / 1e6:.1f} MB in {media_s:.2f}s: "
            f"{files / media_s:,.0f} files/s, {media.get('bytes', 0) / 1e6 / media_s:.1f} MB/s"
            + (f", {media_s / floor_media:.2f}x floor ({floor_media:.2f}s)" if floor_media else "")
        )


if __name__ == "__main__":
    main()
