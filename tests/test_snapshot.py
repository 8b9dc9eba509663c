"""The published snapshot, with real processes: analysts' sessions (read-only and
read-write) beside real runs, logs they leave, kill -9, the upgrade of an older
layout, a full disk (a small tmpfs in a private mount namespace)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from conftest import REPO, TOKEN, run_cli, start_cli, write_config
from pipeline import load, report
from pipeline.sandbox import Faults, SandboxData, run_sandbox
from pipeline.store import FileStore
from tests.dbcheck import assert_same_calls, scalar

ANALYST = textwrap.dedent(
    """
    import sys, duckdb
    conn = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "ro")
    print("open", flush=True)
    for line in sys.stdin:
        rows = conn.execute(line).fetchall()
        print(rows[0][0] if rows else "ok", flush=True)
    """
)


class Analyst:
    """A notebook-like session in a process of its own, left open between runs."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process

    @classmethod
    async def open(cls, database: Path, mode: str) -> Analyst:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", ANALYST, str(database), mode,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        assert await process.stdout.readline() == b"open\n"
        return cls(process)

    async def ask(self, sql: str) -> str:
        self.process.stdin.write(sql.encode() + b"\n")
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        assert line, "the analyst's session died"
        return line.decode().strip()

    async def close(self) -> None:
        self.process.stdin.close()
        assert await self.process.wait() == 0

    async def kill(self) -> None:
        self.process.kill()
        await self.process.wait()


def days(data: SandboxData) -> tuple[str, str]:
    return data.first_day.isoformat(), data.today.isoformat()


async def test_analyst_sessions_never_make_a_run_wait_and_keep_their_snapshot(tmp_path):
    data = SandboxData.generate(seed=3, calls=600, days=6)
    database = tmp_path / "callsync.duckdb"
    first, last = days(data)
    async with run_sandbox(data=data) as sandbox:
        write_config(tmp_path, sandbox.base_url, sync={"start_date": first})
        half = (data.first_day + (data.today - data.first_day) / 2).isoformat()
        assert (await run_cli("backfill", "--start", first, "--end", half, "--no-media", cwd=tmp_path)).code == 0
        early_calls = scalar(database, "SELECT count(*) FROM calls")
        reader = await Analyst.open(database, "ro")

        full = await run_cli("backfill", "--start", first, "--end", last, "--no-media", cwd=tmp_path)
        assert full.code == 0, full.stderr
        writer = await Analyst.open(database, "rw")  # on the newer snapshot; DBeaver's default
        await writer.ask("CREATE TABLE my_notes AS SELECT 1 AS n")
        await writer.ask("DELETE FROM calls")  # into its own log, beside its own snapshot

        data.add_calls(25, data.today)
        for _ in range(2):
            run = await run_cli("sync", "--no-media", cwd=tmp_path)
            assert run.code == 0, run.stderr
            assert "locked" not in run.stderr
        assert await reader.ask("SELECT count(*) FROM calls") == str(early_calls)
        assert await writer.ask("SELECT count(*) FROM my_notes") == "1"
        assert await writer.ask("SELECT count(*) FROM calls") == "0"
        assert_same_calls(database, data)  # a new connection: the newest snapshot, none of the analyst's writes
        assert scalar(database, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'my_notes'") == 0

        status = await run_cli("status", "--database", str(database), "--format", "json", cwd=tmp_path)
        snapshot = json.loads(status.stdout)["snapshot"]
        assert status.code == 0 and snapshot["behind_s"] == 0
        assert snapshot["published_bytes"] > 0 and snapshot["working_bytes"] > 0
        await reader.close()
        await writer.close()


async def test_a_log_an_analyst_leaves_is_never_applied_to_a_newer_snapshot(tmp_path):
    # The pattern that got a log replayed onto the next byte copy: a read-write session
    # writes, checkpoints (reaching the working database's checkpoint iteration), writes
    # again, and dies, leaving its log.
    data = SandboxData.generate(seed=4, calls=300, days=3)
    database = tmp_path / "callsync.duckdb"
    first, last = days(data)
    async with run_sandbox(data=data) as sandbox:
        write_config(tmp_path, sandbox.base_url, sync={"start_date": first})
        assert (await run_cli("backfill", "--start", first, "--end", last, "--no-media", cwd=tmp_path)).code == 0
        for ending in ("killed", "still open"):
            analyst = await Analyst.open(database, "rw")
            await analyst.ask("SET checkpoint_threshold = '1GB'")
            await analyst.ask("DELETE FROM calls WHERE id IN (SELECT id FROM calls LIMIT 10)")
            await analyst.ask("CHECKPOINT")
            await analyst.ask("DELETE FROM calls")
            if ending == "killed":
                await analyst.kill()
            run = await run_cli("sync", "--no-media", cwd=tmp_path)
            assert run.code == 0, run.stderr
            if ending == "still open":
                await analyst.ask("DELETE FROM tracking_numbers")
                await analyst.ask("CHECKPOINT")
                await analyst.ask("DELETE FROM call_flows")
            with duckdb.connect(str(database), read_only=True) as conn:  # a new session
                assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == data.calls_total
                assert conn.execute("SELECT count(*) FROM tracking_numbers").fetchone()[0] > 0
            with duckdb.connect(str(database)) as conn:  # a new read-write session, too
                assert conn.execute("SELECT count(*) FROM call_flows").fetchone()[0] > 0
            if ending == "still open":
                await analyst.close()
        assert_same_calls(database, data)


async def test_sigkill_at_random_moments_leaves_a_valid_snapshot_and_a_rerun_ends_equal(tmp_path):
    data = SandboxData.generate(seed=6, calls=2_000, days=10)
    database = tmp_path / "callsync.duckdb"
    first, last = days(data)
    chance = random.Random(23)
    async with run_sandbox(data=data, faults=Faults(latency_ms=20)) as sandbox:
        write_config(tmp_path, sandbox.base_url, api={"max_concurrency": 2}, database={"publish_interval_s": 0.05})
        during_publish = 0
        for attempt in range(4):
            backfill = await start_cli("backfill", "--start", first, "--end", last, "--no-media", cwd=tmp_path)
            if attempt == 0:  # the moment a publish has begun its copy: kill from a thread, at once
                during_publish += await asyncio.to_thread(_kill_once_publishing, backfill.pid, database)
            else:
                target = len(sandbox.log.since(0)) + chance.randint(3, 25)
                while backfill.returncode is None and len(sandbox.log.since(0)) < target:
                    await asyncio.sleep(0.005)  # poll the server's recorded requests
                during_publish += _publishing(database)
                if backfill.returncode is None:
                    backfill.send_signal(signal.SIGKILL)
            await backfill.wait()
            if database.exists():
                assert scalar(database, "SELECT count(*) FROM calls") <= data.calls_total
                assert scalar(database, "SELECT count(*) FROM schema_migrations") > 0
        torn = _leave_what_a_killed_publish_leaves(tmp_path)
        final = await run_cli("backfill", "--start", first, "--end", last, "--no-media", cwd=tmp_path)
    assert final.code == 0, final.stderr
    assert not torn.exists() and not list(tmp_path.glob(".callsync-publish-*"))
    assert_same_calls(database, data)
    current = os.readlink(database).split("/")[-1]
    left = sorted(path.name for path in (tmp_path / ".callsync").iterdir())
    assert left[0] == "callsync.duckdb" and current in left and len(left) == 3  # and the one it replaced
    print(f"kills that landed while a snapshot was being written: {during_publish} of 4")


def _leave_what_a_killed_publish_leaves(folder: Path) -> Path:
    """A kill in the middle of a copy (a torn snapshot file), and one between the new
    symlink and its rename (a stray symlink): too quick to hit reliably with a real kill."""
    working = folder / ".callsync" / "callsync.duckdb"
    torn = folder / ".callsync" / "callsync.duckdb.snapshot-ffffffffffff"
    torn.write_bytes(working.read_bytes()[: working.stat().st_size // 2])
    os.symlink(".callsync/callsync.duckdb.snapshot-ffffffffffff", folder / ".callsync-publish-callsync.duckdb-1")
    return torn


def _kill_once_publishing(pid: int, database: Path) -> int:
    """Watch for a publish's new snapshot file (a second one beside the current), then
    SIGKILL the run; gives up when the run ends first."""
    while os.path.exists(f"/proc/{pid}") and not _publishing(database):
        pass
    landed = _publishing(database)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return landed


def _publishing(database: Path) -> int:
    folder = database.parent / ".callsync"
    snapshots = [name for name in os.listdir(folder) if ".snapshot-" in name and not name.endswith(".wal")] if folder.exists() else []
    first_publish = not database.exists() and snapshots
    return int(len(snapshots) > 1 or bool(first_publish) or bool(list(database.parent.glob(".callsync-publish-*"))))


@pytest.mark.parametrize("layout", ["one file", "a symlink of the user's"])
async def test_a_database_from_the_current_layout_is_taken_over_without_resyncing(tmp_path, layout):
    data = SandboxData.generate(seed=9, calls=400, days=8)
    database = tmp_path / "callsync.duckdb"
    first, last = days(data)
    async with run_sandbox(data=data) as sandbox:
        write_config(tmp_path, sandbox.base_url, sync={"start_date": first, "lookback_days": 1})
        assert (await run_cli("sync", "--no-media", cwd=tmp_path)).code == 0
        _back_to_one_file(database)
        target = database
        if layout == "a symlink of the user's":  # to a file on another disk, say
            target = tmp_path / "olddisk" / "calls.duckdb"
            target.parent.mkdir()
            database.rename(target)
            database.symlink_to(target)
        # An older run killed after a commit it had not checkpointed: its log is beside the
        # file (DuckDB names it after the file a symlink leads to).
        _commit_and_die(database, "INSERT INTO sync_state VALUES ('marker', 'kept', now())")
        assert Path(f"{target}.wal").exists() and database.is_symlink() == (target != database)

        before = len(sandbox.log.since(0))
        again = await run_cli("sync", "--no-media", cwd=tmp_path)
        assert again.code == 0, again.stderr
        assert "0 new / 0 updated" in again.stdout
        assert len(sandbox.log.since(0)) - before < 8  # the lookback windows, numbers, flows: not 8 days again
        if target != database:
            assert f"took over {target}" in again.stderr and "stays where it is" in again.stderr
    assert os.path.realpath(database).startswith(str(tmp_path / ".callsync")) and not Path(f"{database}.wal").exists()
    assert scalar(database, "SELECT value FROM sync_state WHERE key = 'marker'") == "kept"
    assert_same_calls(database, data)


async def test_a_database_callsync_did_not_make_is_never_taken_over(tmp_path):
    database = tmp_path / "callsync.duckdb"
    write_config(tmp_path, "http://127.0.0.1:9")  # refused before any request
    with duckdb.connect(str(database)) as conn:  # e.g. [database] path set to an analyst's own file
        conn.execute("CREATE TABLE notes AS SELECT 1 AS n")
    for command in (["sync", "--no-media"], ["status"]):
        result = await run_cli(*command, cwd=tmp_path)
        [line] = result.stderr.splitlines()
        assert line.startswith("callsync: error: ") and "not" in line and "callsync" in line and "Traceback" not in result.stderr
        assert result.code == (2 if command[0] == "sync" else 1)
    assert not database.is_symlink() and scalar(database, "SELECT count(*) FROM notes") == 1
    assert not (tmp_path / ".callsync" / "callsync.duckdb").exists()


def _back_to_one_file(database: Path) -> None:
    """The layout before snapshots: callsync's own database at path, nothing beside it."""
    working = database.parent / ".callsync" / database.name
    database.unlink()
    shutil.copyfile(working, database)
    shutil.rmtree(database.parent / ".callsync")


def _commit_and_die(database: Path, sql: str) -> None:
    script = (
        "import duckdb, os, sys; conn = duckdb.connect(sys.argv[1]);"
        " conn.execute(\"SET checkpoint_threshold = '1GB'\"); conn.execute(sys.argv[2]); os._exit(9)"
    )
    assert subprocess.run([sys.executable, "-c", script, str(database), sql]).returncode == 9


def test_a_session_opening_path_during_a_publish_still_finds_the_snapshot_it_resolved(tmp_path):
    # DuckDB resolves the symlink, then opens the file it names (several times). A publish
    # in between used to remove that file: read-only got an error, read-write a new empty
    # database. The replaced snapshot now stays until the next publish.
    store = FileStore(tmp_path / "p.duckdb")
    load.migrate(store)
    with store.lock():
        conn = store.open()
        try:
            resolved = store.path.resolve()  # a session, as DuckDB does
            replacing = store.publish(conn)
            assert store.path.resolve() != resolved and resolved.exists()
            for read_only in (True, False):
                with duckdb.connect(str(resolved), read_only=read_only) as session:
                    assert session.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] > 0
            status = store.describe(conn)["snapshot"]
            assert status["previous_bytes"] == resolved.stat().st_size
            kept = store.path.resolve()
            store.publish(conn)
            assert not resolved.exists() and kept.exists()  # the one before: gone; the one replaced: kept
        finally:
            conn.close()
    assert replacing.method != "rewrite"
    store.rewrite(lambda conn: None)  # after an erasure nothing older may stay
    snapshots = [name for name in os.listdir(store.working.parent) if ".snapshot-" in name]
    assert snapshots == [store.path.resolve().name]


def test_status_dates_a_publish_by_its_symlink_not_by_what_an_analyst_wrote_since(tmp_path):
    store = FileStore(tmp_path / "s.duckdb")
    load.migrate(store)
    an_hour_ago = time.time() - 3600
    os.utime(store.path, (an_hour_ago, an_hour_ago), follow_symlinks=False)  # published then
    with store.lock():  # a run that committed and was killed before its publish
        conn = store.open()
        conn.execute("INSERT INTO sync_state VALUES ('later', 'x', now())")
        conn.close()
    with duckdb.connect(str(store.path)) as analyst:  # then an analyst writes into the snapshot
        analyst.execute("CREATE TABLE notes AS SELECT 1 AS n")
        analyst.execute("CHECKPOINT")
    facts = report.status(store)
    snapshot = facts["snapshot"]
    assert abs(snapshot["published_at"].timestamp() - an_hour_ago) < 1
    assert snapshot["behind_s"] > 3500 and not snapshot["run_going"]
    assert "no run holds the lock: the last run died or could not publish" in report.render_status(facts)
    with store.lock():
        assert report.status(store)["snapshot"]["run_going"]


def test_a_rewritten_snapshot_leaves_erased_rows_behind(tmp_path):
    # What #19's erasure calls: only live rows reach a rewritten snapshot; views come too.
    store = FileStore(tmp_path / "e.duckdb")
    load.migrate(store)
    secret = "+1555" + "0199" * 4
    with store.lock():
        conn = store.open()
        try:
            conn.execute("CREATE TABLE notes AS SELECT ? || range AS phone FROM range(20000)", [secret])
            conn.execute("CHECKPOINT")
            conn.execute("DELETE FROM notes")
            byte_copy = store.publish(conn)
            rewritten = store.publish(conn, rewrite=True)
        finally:
            conn.close()
    assert (byte_copy.method, rewritten.method) != (byte_copy.method, byte_copy.method)
    assert secret.encode() not in store.path.read_bytes()
    assert scalar(store.path, "SELECT count(*) FROM notes") == 0
    assert scalar(store.path, "SELECT count(*) FROM calls_enriched") == 0  # a view, copied over
    assert scalar(store.path, "SELECT count(*) FROM schema_migrations") == len(list((load.sql_dir() / "migrations").glob("*.sql")))


FULL_DISK = textwrap.dedent(
    """
    set -e
    mount -t tmpfs -o size=24m tmpfs "$DIR"
    cd "$DIR"
    printf '%s' "$CONFIG" > callsync.toml
    python -m pipeline backfill --start "$FIRST" --end "$LAST" --no-media > first.out 2>&1 || { cat first.out; exit 10; }
    python - <<'EOF'
    import os, shutil
    current = os.path.realpath("callsync.duckdb")
    older = [f for f in os.listdir(".callsync") if ".snapshot-" in f and os.path.realpath(".callsync/" + f) != current]
    free = shutil.disk_usage(".").free + sum(os.path.getsize(".callsync/" + f) for f in older)  # a publish removes them first
    need = os.path.getsize(".callsync/callsync.duckdb")
    with open("filler", "wb") as out:
        out.write(b"x" * max(0, free - need // 2))
    EOF
    set +e
    python -m pipeline sync --no-media > full.out 2> full.err
    echo "code=$?" >> full.out
    python -c "import duckdb; print('snapshot', duckdb.connect('callsync.duckdb', read_only=True).execute('SELECT count(*) FROM runs').fetchone()[0])" >> full.out
    rm filler
    python -m pipeline sync --no-media >> full.out 2>&1
    echo "code=$?" >> full.out
    python -c "import duckdb; print('snapshot', duckdb.connect('callsync.duckdb', read_only=True).execute('SELECT count(*) FROM runs').fetchone()[0])" >> full.out
    cat full.out; echo "stderr: $(cat full.err)"
    """
)


async def test_a_publish_without_space_is_one_line_and_keeps_both_databases(tmp_path):
    if shutil.which("unshare") is None or subprocess.run(
        ["unshare", "-rm", "true"], capture_output=True
    ).returncode != 0:
        pytest.skip("needs unshare -rm (a private mount namespace) to mount a small tmpfs")
    data = SandboxData.generate(seed=10, calls=3_000, days=4)
    first, last = days(data)
    mount = tmp_path / "small"
    mount.mkdir()
    async with run_sandbox(data=data) as sandbox:
        config = write_config(tmp_path, sandbox.base_url).read_text()
        env = {
            **{key: value for key, value in os.environ.items() if not key.startswith("CALLSYNC_")},
            "CALLSYNC_TOKEN": TOKEN, "DIR": str(mount), "CONFIG": config, "FIRST": first, "LAST": last,
            "PYTHONPATH": str(REPO), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }
        process = await asyncio.create_subprocess_exec(
            "unshare", "-rm", "sh", "-c", FULL_DISK, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output = (await process.communicate())[0].decode()
    assert process.returncode == 0, output
    lines = output.splitlines()
    error = lines[-1].removeprefix("stderr: ")
    assert error.startswith("callsync: error: ") and "no space left" in error and "previous snapshot" in error, output
    assert "\n" not in error and "Traceback" not in output
    assert lines[0:2] == ["code=1", "snapshot 1"], output  # the old snapshot: the first run only
    assert "code=0" in lines and lines[-2] == "snapshot 3", output  # the working database kept the failed run's row


@pytest.mark.parametrize("command", [["query", "select 1", "--format", "csv"], ["status"]])
async def test_the_read_only_commands_load_nothing_of_the_sync(tmp_path, command):
    # They start fast (`query "select 1"` under 0.5 s with bytecode cached) because they
    # never import the client, aiohttp, pydantic or NumPy.
    database = tmp_path / "r.duckdb"
    load.migrate(FileStore(database))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "importtime", "-m", "pipeline", *command, "--database", str(database),
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    imported = {line.split("|")[-1].strip() for line in stderr.decode().splitlines() if line.startswith("import time:")}
    assert not imported & {"aiohttp", "pydantic", "pipeline.client", "pipeline.config", "numpy", "pyarrow"}
