"""Benchmark publishing the snapshot: time and bytes for a database of N calls with its
media tables filled as `callsync demo` fills them.

1. A real `callsync demo` of a few thousand calls (recordings and transcripts fetched).
2. A real `callsync backfill --no-media` of N calls from the sandbox.
3. The media tables of the N calls filled from the demo's rows, call i taking the
   media of demo call i mod (demo calls): the same share of calls with recordings and
   transcripts, the same segments per transcript and the same texts.
4. Publishes on the working database, as the writer makes them: a byte copy
   (reflink / copy_file_range / copy: the fastest the filesystem offers) a few times,
   then a rewrite (ATTACH + COPY FROM DATABASE, what an erasure publishes).

Examples:
    uv run python bench/publish.py --calls 200000
    uv run python bench/publish.py --calls 1000000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backfill import TOKEN, Sandbox  # noqa: E402
from pipeline.store import FileStore  # noqa: E402

FILL_MEDIA = """
CREATE TEMP TABLE media_of AS
SELECT c.id AS call_id, d.id AS demo_id
FROM (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM calls) AS c
JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM demo.calls) AS d
  ON c.n % (SELECT count(*) FROM demo.calls) = d.n;
INSERT INTO media_jobs
SELECT m.call_id, j.kind, replace(j.url, j.call_id, m.call_id), j.status, j.attempts, j.failures, j.last_error,
       j.first_seen_at, j.missing_since, j.last_attempt_at, j.next_attempt_at, j.done_at
FROM media_of AS m JOIN demo.media_jobs AS j ON j.call_id = m.demo_id;
INSERT INTO recordings
SELECT m.call_id, replace(r.path, r.call_id, m.call_id), r.size_bytes, r.sha256, r.content_type, r.fetched_at
FROM media_of AS m JOIN demo.recordings AS r ON r.call_id = m.demo_id;
INSERT INTO transcript_segments
SELECT m.call_id, s.segment_index, s.speaker, s.text, s."timestamp"
FROM media_of AS m JOIN demo.transcript_segments AS s ON s.call_id = m.demo_id;
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--demo-calls", type=int, default=3_000)
    parser.add_argument("--copies", type=int, default=3, help="byte-copy publishes to time")
    parser.add_argument("--keep", type=Path, help="build in this (new) folder and keep it, instead of a temp one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="callsync-publish-") as temp:
        workdir = args.keep or Path(temp)
        workdir.mkdir(parents=True, exist_ok=True)
        demo = workdir / "demo.duckdb"
        callsync("demo", "--calls", str(args.demo_calls), "--days", "30", "--database", str(demo),
                 "--media-dir", str(workdir / "demo-media"), "--no-progress", cwd=workdir)
        backfill(args, workdir)
        store = FileStore(workdir / "bench.duckdb")
        with store.lock():
            conn = store.open()
            try:
                fill_media(conn, demo)
                print(f"{args.calls} calls: " + ", ".join(f"{table} {count:,}" for table, count in counts(conn)))
                for _ in range(args.copies):
                    report(store.publish(conn))
                report(store.publish(conn, rewrite=True))
            finally:
                conn.close()


def callsync(*command: str, cwd: Path) -> None:
    env = {**os.environ, "CALLSYNC_TOKEN": TOKEN}
    subprocess.run([sys.executable, "-m", "pipeline", *command], cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)


def backfill(args: argparse.Namespace, workdir: Path) -> None:
    sandbox_args = argparse.Namespace(
        seed=42, calls=args.calls, days=args.days, latency_ms=0.0, error_rate=0.0, rate_limit=None
    )
    with Sandbox(sandbox_args) as sandbox:
        today = date.fromisoformat(sandbox.stats()["today"]) if "today" in sandbox.stats() else date.today()
        (workdir / "callsync.toml").write_text(f'[api]\nbase_url = "{sandbox.base_url}"\n[database]\npath = "bench.duckdb"\n')
        start = today - timedelta(days=args.days - 1)
        callsync("backfill", "--start", start.isoformat(), "--end", today.isoformat(), "--no-media", cwd=workdir)


def fill_media(conn, demo: Path) -> None:
    conn.execute("ATTACH ? AS demo (READ_ONLY)", [str(demo)])
    conn.execute("BEGIN TRANSACTION")
    for statement in FILL_MEDIA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("COMMIT")
    conn.execute("DETACH demo")
    conn.execute("CHECKPOINT")


def counts(conn) -> list[tuple[str, int]]:
    tables = ("calls", "media_jobs", "recordings", "transcript_segments")
    return [(table, conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]) for table in tables]


def report(published) -> None:
    megabytes = published.bytes / 1e6
    print(
        f"  publish ({published.method}): {megabytes:,.1f} MB in {published.seconds:.2f}s"
        f" ({megabytes / published.seconds:,.0f} MB/s)"
    )


if __name__ == "__main__":
    main()
