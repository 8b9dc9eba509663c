"""Benchmark the sandbox's own costs, which every backfill benchmark stands on: the time
to generate N calls, the peak memory that takes, and the time to serve one 100-row
listing page at offsets through a wide range.

The figures are medians over --runs generations (each in a fresh process, so memory is
measured from zero) and over --pages pages per offset.

Examples:
    uv run python bench/sandbox.py --calls 1000000 --days 365
    uv run python bench/sandbox.py --calls 200000 --days 365
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

OFFSETS = (0, 30_000, 300_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a single measured run
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.calls, args.days, args.pages)))
        return
    figures = [measure_in_a_process(args) for _ in range(args.runs)]
    generation = [figure["generate_s"] for figure in figures]
    print(f"generate {args.calls} calls over {args.days} days: median {statistics.median(generation):.2f}s"
          f" ({min(generation):.2f}-{max(generation):.2f}) over {len(figures)} runs,"
          f" peak RSS {max(figure['peak_rss_mb'] for figure in figures):.0f} MB")
    for offset in OFFSETS:
        pages = [ms for figure in figures for ms in figure["page_ms"].get(str(offset), [])]
        if pages:
            print(f"100-row page at offset {offset}: median {statistics.median(pages):.2f} ms"
                  f" ({min(pages):.2f}-{max(pages):.2f}) over {len(pages)} pages")


def measure_in_a_process(args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--one", "--calls", str(args.calls), "--days", str(args.days),
               "--pages", str(args.pages)]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def measure(calls: int, days: int, pages: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from pipeline.sandbox import SandboxData

    started = time.perf_counter()
    data = SandboxData.generate(seed=1, calls=calls, days=days)
    generate_s = time.perf_counter() - started
    page_ms: dict[str, list[float]] = {}
    for offset in OFFSETS:
        for _ in range(pages):
            started = time.perf_counter()
            _, total = data.query_calls(data.today - timedelta(days=days), data.today, offset=offset, limit=100)
            elapsed = time.perf_counter() - started
            if offset < total:
                page_ms.setdefault(str(offset), []).append(elapsed * 1000)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"generate_s": generate_s, "page_ms": page_ms, "peak_rss_mb": peak_rss_mb}


if __name__ == "__main__":
    main()
