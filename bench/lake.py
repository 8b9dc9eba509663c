"""Benchmark a backfill into a DuckLake (PostgreSQL catalog, local folder) beside the same backfill
into a DuckDB file, in one sitting, alternating (file, lake, file, lake, ...) on a noisy host.

Each run is a real `callsync backfill` in its own process against its own sandbox process. The
lake's catalog is a PostgreSQL cluster this script starts in a temp dir (tests/lake/pgcluster.py,
fsync on). After the last lake run, `callsync compact` runs and the data files per table are
printed before and after it.

Needs the lake extra (both backends then run on its duckdb):
    uv run --extra lake python bench/lake.py --calls 200000 --days 365 --latency-ms 0
    uv run --extra lake python bench/lake.py --calls 200000 --days 365 --latency-ms 50 --rounds 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402

from backfill import TOKEN, Sandbox, run_callsync  # noqa: E402
from pipeline.lake import LakeStore  # noqa: E402
from tests.lake.pgcluster import PG_PASSWORD, running_postgres  # noqa: E402


def main() -> None:
    args = parse_args()
    os.environ["PGPASSWORD"] = PG_PASSWORD  # the callsync processes' libpq reads it, as in a deployment
    results: dict[str, list[dict]] = {"file": [], "lake": []}
    with running_postgres(fsync=True) as cluster, tempfile.TemporaryDirectory(prefix="callsync-lake-bench-") as root:
        for round_number in range(args.rounds):
            for backend in ("file", "lake"):
                workdir = Path(root) / f"{backend}-{round_number}"
                workdir.mkdir()
                catalog = cluster.catalog(cluster.create_database()) if backend == "lake" else None
                run = backfill(workdir, args, catalog)
                results[backend].append(run)
                print(f"{backend} round {round_number + 1}: {run['calls']} calls in {run['elapsed_s']:.2f}s run"
                      f" ({run['wall_s']:.2f}s wall), {run['calls'] / run['elapsed_s']:,.0f} calls/s,"
                      f" CPU {run['cpu_s']:.1f}s, peak RSS {run['peak_rss_mb']:.0f} MB", flush=True)
        compact_report(workdir, catalog)
    file_s = statistics.median(run["elapsed_s"] for run in results["file"])
    lake_s = statistics.median(run["elapsed_s"] for run in results["lake"])
    print(f"median run time: file {file_s:.2f}s, lake {lake_s:.2f}s: the lake takes {lake_s / file_s:.2f}x the file's"
          f" (duckdb {duckdb.__version__}, {args.calls} calls over {args.days} days, latency {args.latency_ms:g} ms)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=16, help="[api] max_concurrency")
    parser.add_argument("--rounds", type=int, default=2, help="file, lake pairs to run")
    # What backfill.Sandbox reads.
    parser.set_defaults(rate_limit=None, error_rate=0.0, drift_rate=0.0)
    return parser.parse_args()


def write_config(workdir: Path, base_url: str, args: argparse.Namespace, catalog: str | None) -> None:
    database = (
        f'lake_catalog = "{catalog}"\nlake_data_path = "data"\nschema = "bench"\n' if catalog else 'path = "bench.duckdb"\n'
    )
    (workdir / "callsync.toml").write_text(
        f'[api]\nbase_url = "{base_url}"\nmax_concurrency = {args.concurrency}\n'
        f"[database]\n{database}"
        '[media]\ndir = "media"\n'
    )


def backfill(workdir: Path, args: argparse.Namespace, catalog: str | None) -> dict:
    with Sandbox(args) as sandbox:
        write_config(workdir, sandbox.base_url, args, catalog)
        stats = sandbox.stats()
        today = date.fromisoformat(stats["today"]) if "today" in stats else date.today()
        start = today - timedelta(days=args.days - 1)
        run = run_callsync(["backfill", "--start", start.isoformat(), "--end", today.isoformat(), "--no-media"], workdir)
        expected = sandbox.stats()["calls_total"]
    with reader(workdir, catalog) as conn:
        run["calls"], distinct = conn.execute("SELECT count(*), count(DISTINCT id) FROM calls").fetchone()
        (run["elapsed_s"],) = conn.execute("SELECT epoch(finished_at - started_at) FROM runs").fetchone()
    if run["calls"] != expected or distinct != expected:
        raise SystemExit(f"MISMATCH: {run['calls']} rows, {distinct} ids stored, {expected} served")
    return run


def reader(workdir: Path, catalog: str | None):
    if catalog is None:
        return duckdb.connect(str(workdir / "bench.duckdb"), read_only=True)
    return LakeStore(catalog, f"{workdir / 'data'}/", "bench").read_only()


def compact_report(workdir: Path, catalog: str) -> None:
    store = LakeStore(catalog, f"{workdir / 'data'}/", "bench")
    with store.read_only() as conn:
        before = store.data_files(conn)
    env = {**os.environ, "CALLSYNC_TOKEN": TOKEN}
    done = subprocess.run([sys.executable, "-m", "pipeline", "compact"], cwd=workdir, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"callsync compact exited {done.returncode}: {done.stderr}")
    with store.read_only() as conn:
        after = store.data_files(conn)
    print(f"{done.stdout.strip()}")
    print("live data files per table, after the backfill -> after compact:")
    for table in sorted(before):
        print(f"  {table:<20} {before[table][0]:>4} -> {after.get(table, (0, 0))[0]:>4}"
              f"  ({after.get(table, (0, 0))[1] / 1e6:.1f} MB)")
    print(f"  Parquet files on disk now: {len(list((workdir / 'data').rglob('*.parquet')))}"
          " (files a merge replaced stay until lake_orphans_after_s has passed)")


if __name__ == "__main__":
    main()
