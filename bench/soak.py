"""Soak callsync's promise of nothing lost and nothing duplicated: a real `callsync backfill`
with media, against a sandbox that fails 5% of requests, drops 2% of connections and lets
late calls land while it pages, killed (SIGKILL, or SIGTERM one time in five) at a random
moment, --rounds times. After each kill the published snapshot must open and hold no id
twice. Then the faults are turned off, the backfill finishes, and its calls, media rows
and recording files are compared with a reference backfill of the same sandbox made
without interruption.

Prints one line per round and the comparison; exits 1 if anything differs. Not a timing:
a check that runs longer than the test suite's own kills (tests/test_snapshot.py).

Examples:
    uv run python bench/soak.py --rounds 40                              # kills over the whole run
    uv run python bench/soak.py --rounds 25 --kill-after 2 9 --seed 2    # mostly while downloading media
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backfill import TOKEN, Sandbox  # noqa: E402

COMPARED_TABLES = ("calls", "recordings", "transcript_segments", "media_jobs", "tracking_numbers", "call_flows")
# When callsync synced a row differs from run to run; what the row says must not.
RUN_COLUMNS = (r"_synced_at$|^last_changed_at$|^fetched_at$|^attempts$|^failures$|^last_error$|^first_seen_at$"
               r"|^missing_since$|^last_attempt_at$|^next_attempt_at$|^done_at$|^misses$")


def main() -> None:
    args = parse_args()
    rng = random.Random(args.seed)
    env = {**os.environ, "CALLSYNC_TOKEN": TOKEN}
    with tempfile.TemporaryDirectory(prefix="callsync-soak-") as workdir, Sandbox(args) as sandbox:
        workdir = Path(workdir)
        set_faults(sandbox.base_url, drop_rate=0.02)
        today = datetime.now(timezone.utc).date()  # the sandbox's last day
        days = (today - timedelta(days=args.days - 1), today)
        soaked = make_checkout(workdir / "soaked", sandbox.base_url)
        outcomes: Counter[str] = Counter()
        for round_number in range(args.rounds):
            outcomes[kill_at_random(soaked, days, env, rng, args.kill_after)] += 1
            calls = snapshot_calls(soaked)
            print(f"round {round_number}: {calls} calls in the snapshot", flush=True)
        print("outcomes:", dict(outcomes))
        set_faults(sandbox.base_url, error_rate=0, drop_rate=0, drift_rate=0)
        finish(soaked, days, env, "soaked")
        reference = make_checkout(workdir / "reference", sandbox.base_url)
        finish(reference, days, env, "reference")
        differences = compare(soaked, reference)
    print("equal to the uninterrupted backfill" if not differences else f"{differences} differences")
    sys.exit(1 if differences else 0)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-after", type=float, nargs=2, default=(0.05, 4.0), metavar=("MIN", "MAX"),
                        help="seconds after the start, drawn at random between MIN and MAX")
    args = parser.parse_args()
    # What bench.backfill.Sandbox reads: a faulty API, with late calls landing while it pages.
    args.latency_ms, args.error_rate, args.drift_rate, args.rate_limit = 3, 0.05, 0.03, None
    return args


def make_checkout(folder: Path, base_url: str) -> Path:
    folder.mkdir()
    (folder / "callsync.toml").write_text(
        f'[api]\nbase_url = "{base_url}"\nmax_retries = 3\n'
        f'[database]\npath = "callsync.duckdb"\npublish_interval_s = 0.5\n[media]\ndir = "media"\n'
    )
    return folder


def backfill(folder: Path, days: tuple[date, date], env: dict[str, str]) -> subprocess.Popen:
    start, end = days
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "backfill", "--start", start.isoformat(), "--end", end.isoformat()],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def kill_at_random(folder: Path, days: tuple[date, date], env: dict[str, str], rng: random.Random,
                   kill_after: tuple[float, float]) -> str:
    """One backfill, killed at a random moment unless it ends first; what became of it."""
    process = backfill(folder, days, env)
    try:
        _, stderr = process.communicate(timeout=rng.uniform(*kill_after))
        outcome = f"ended, exit {process.returncode}"
    except subprocess.TimeoutExpired:
        sent = signal.SIGKILL if rng.random() < 0.8 else signal.SIGTERM
        process.send_signal(sent)
        _, stderr = process.communicate()
        outcome = f"{sent.name}, exit {process.returncode}"
    if "Traceback" in stderr:
        print(stderr, file=sys.stderr)
        outcome += " with a traceback"
    return outcome


def snapshot_calls(folder: Path) -> int | None:
    """The published snapshot's calls; it must open, and hold each id once."""
    path = folder / "callsync.duckdb"
    if not path.exists():
        return None
    with duckdb.connect(str(path), read_only=True) as conn:
        rows, ids = conn.execute("SELECT count(*), count(DISTINCT id) FROM calls").fetchone()
    if rows != ids:
        raise SystemExit(f"the snapshot holds {rows - ids} duplicated calls")
    return rows


def set_faults(base_url: str, **faults: float) -> None:
    request = urllib.request.Request(
        f"{base_url}/_admin/faults", data=json.dumps(faults).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request).close()


def finish(folder: Path, days: tuple[date, date], env: dict[str, str], label: str) -> None:
    stdout, stderr = backfill(folder, days, env).communicate()
    print(f"{label}: {stdout.strip() or stderr.strip()}")


def compare(soaked: Path, reference: Path) -> int:
    """Rows of each table that one database has and the other has not, and recording
    files that differ; printed, and counted."""
    differences = 0
    with duckdb.connect() as conn:
        conn.execute(f"ATTACH '{soaked / 'callsync.duckdb'}' AS soaked (READ_ONLY)")
        conn.execute(f"ATTACH '{reference / 'callsync.duckdb'}' AS reference (READ_ONLY)")
        for table in COMPARED_TABLES:
            columns = ", ".join(
                name for (name,) in conn.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE database_name = 'reference' AND table_name = ?"
                    " AND NOT regexp_matches(column_name, ?) ORDER BY column_index", [table, RUN_COLUMNS],
                ).fetchall()
            )
            only = [
                conn.execute(f"SELECT count(*) FROM (FROM {a}.{table} SELECT {columns} EXCEPT ALL"
                             f" FROM {b}.{table} SELECT {columns})").fetchone()[0]
                for a, b in (("soaked", "reference"), ("reference", "soaked"))
            ]
            print(f"{table}: {only[0]} rows only in the soaked database, {only[1]} only in the reference")
            differences += sum(only)
    soaked_files, reference_files = file_digests(soaked / "media"), file_digests(reference / "media")
    differing = {name for name in soaked_files.keys() | reference_files.keys()
                 if soaked_files.get(name) != reference_files.get(name)}
    print(f"media files: {len(soaked_files)} soaked, {len(reference_files)} reference, {len(differing)} differ")
    return differences + len(differing)


def file_digests(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in root.rglob("*") if path.is_file()}


if __name__ == "__main__":
    main()
