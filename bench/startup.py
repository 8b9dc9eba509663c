"""Benchmark callsync's fixed costs: `callsync query "select 1"` start-up, and a 100-call
backfill (imports, migrations, opening, publishing and closing the database).

Runs whatever `python -m pipeline` the running interpreter finds. `--against` names another
checkout's interpreter: its runs alternate with ours, one by one (A B A B), against the same
sandbox, so a noisy host weighs on both alike:
    uv run python bench/startup.py --against /path/to/other/checkout/.venv/bin/python

Prints the median and the range of wall and CPU seconds over --runs runs, and, beside the
backfill, two floors, interleaved too: an interpreter that only imports the libraries a run
needs, plainly; and one that imports them the way a run does (NumPy kept out, the
collector off, aiohttp without its CA loading), which is the floor under a run's start-up:
what a run costs above it is callsync's own modules and its work in DuckDB.

Bytecode must be cached (run once first; CI compiles it with UV_COMPILE_BYTECODE=1).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

TOKEN = "sandbox-token"
# What every run command imports.
LIBRARIES = "asyncio, click, aiohttp, duckdb, pyarrow, pydantic"
FLOORS = {
    f"floor: importing {LIBRARIES}, plainly": f"import {LIBRARIES}",
    "floor: importing them as a run does, nothing else": (
        "from pipeline.cli import _keep_numpy_out, _loading, _tune_process\n"
        "_tune_process()\n"
        "_keep_numpy_out()\n"
        "with _loading():\n"
        "    import asyncio, duckdb, pyarrow.json, pipeline.tls\n"
        "    from pydantic import BaseModel, TypeAdapter\n"
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--against", help="another checkout's python: its runs alternate with ours")
    args = parser.parse_args()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["CALLSYNC_TOKEN"] = TOKEN
    with tempfile.TemporaryDirectory(prefix="callsync-startup-") as workdir:
        workdir = Path(workdir)
        sandbox = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "sandbox", "--port", "0", "--calls", "100", "--days", "10"],
            stdout=subprocess.PIPE, text=True, env=env,
        )
        try:
            base_url = next(found.group(1) for line in sandbox.stdout if (found := re.search(r"at (http://\S+)$", line.strip())))
            (workdir / "callsync.toml").write_text(f'[api]\nbase_url = "{base_url}"\n[database]\npath = "fixed.duckdb"\n')
            today = date.today()
            backfill = ["backfill", "--start", (today - timedelta(days=9)).isoformat(), "--end", today.isoformat(), "--no-media"]
            pythons = {"this": sys.executable, **({"against": args.against} if args.against else {})}
            for python in pythons.values():
                run([python, "-m", "pipeline", *backfill], workdir, env)  # a database to query, and bytecode cached
            query = ["query", "--database", str(workdir / "fixed.duckdb"), "select 1", "--format", "csv"]
            for label, command in (("query 'select 1'", query), ("100-call backfill", backfill + ["--force"])):
                runs = {name: [] for name in pythons}
                floors = {label: [] for label in FLOORS}
                for _ in range(args.runs):
                    for name, python in pythons.items():
                        runs[name].append(run([python, "-m", "pipeline", *command], workdir, env))
                    if command is not query:  # `query` needs none of aiohttp, pyarrow, pydantic
                        for floor, code in FLOORS.items():
                            floors[floor].append(run([sys.executable, "-c", code], workdir, env))
                for name in pythons:
                    report(f"{label} ({name}: {pythons[name]})", runs[name])
                for floor, runs_of_floor in floors.items():
                    if runs_of_floor:
                        report(floor, runs_of_floor)
                if args.against:
                    ratio = statistics.median(w for w, _ in runs["this"]) / statistics.median(w for w, _ in runs["against"])
                    print(f"{label}: this / against = {ratio:.2f} (wall medians)")
        finally:
            sandbox.terminate()
            sandbox.wait()


def run(argv: list[str], workdir: Path, env: dict[str, str]) -> tuple[float, float]:
    started = time.monotonic()
    process = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {process.stderr.read().decode()}")
    return wall, usage.ru_utime + usage.ru_stime


def report(label: str, runs: list[tuple[float, float]]) -> None:
    walls, cpus = [wall for wall, _ in runs], [cpu for _, cpu in runs]
    print(
        f"{label}: wall median {statistics.median(walls):.2f}s ({min(walls):.2f}-{max(walls):.2f}),"
        f" CPU median {statistics.median(cpus):.2f}s ({min(cpus):.2f}-{max(cpus):.2f}) over {len(runs)} runs"
    )


if __name__ == "__main__":
    main()
