"""Recordings and transcripts against the real sandbox: byte-exact files, incremental runs,
not-ready transcripts, redirects and foreign hosts, hostile ids, disk failures, kill -9, --verify."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from pipeline import load, media, report, state, sync
from pipeline.media import Job
from pipeline import mediafiles
from pipeline.mediafiles import file_stem, recording_path
from pipeline.config import load_settings
from pipeline.sandbox import Faults, SandboxData, run_sandbox
from pipeline.store import FileStore
from tests.conftest import TOKEN, run_cli, start_cli, write_config
from tests.dbcheck import scalar


@pytest.fixture
def small_data() -> SandboxData:
    return SandboxData.generate(seed=11, calls=120, days=3)


def rows(settings, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(settings.database.path), read_only=True) as conn:
        return conn.execute(sql, params).fetchall()


def job_counts(settings) -> dict[tuple[str, str], int]:
    return {(kind, status): count for kind, status, count in rows(
        settings, "SELECT kind, status, count(*) FROM media_jobs GROUP BY ALL")}


def requests_to(sandbox, suffix: str, host: str | None = None) -> list:
    return [r for r in sandbox.requests if r.path.endswith(suffix) and (host is None or r.host == host)]


def recorded_calls(data: SandboxData) -> list[dict]:
    return [call for call in data.calls_between(None, None) if call["recording_url"]]


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def assert_recordings_match(settings, data: SandboxData, *, complete: bool = True) -> dict[str, tuple]:
    """Every stored recording is on disk, byte-exact; every done job has its file. Returns the rows."""
    media_dir = settings.media.dir
    stored = {row[0]: row[1:] for row in rows(settings, "SELECT call_id, path, size_bytes, sha256 FROM recordings")}
    done = {row[0] for row in rows(settings, "SELECT call_id FROM media_jobs WHERE kind = 'recording' AND status = 'done'")}
    assert done == set(stored), "a recording job is done without its stored row, or the reverse"
    for call_id, (path, size, digest) in stored.items():
        content = (media_dir / path).read_bytes()
        expected = data.recording_bytes(call_id)
        assert content == expected and digest == sha256(expected) and size == len(expected)
    if complete:
        assert set(stored) == {call["id"] for call in recorded_calls(data)}
    return stored


def final_files(settings) -> list[Path]:
    return sorted((settings.media.dir / "recordings").rglob("*.mp3"))


async def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    """Wait on server state (the sandbox runs in this event loop), never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


# --- end to end, in process ---------------------------------------------------------------


async def test_backfill_stores_every_recording_and_ready_transcript_and_a_rerun_downloads_nothing(
    sandbox, make_settings
):
    data = sandbox.data
    settings = make_settings(sandbox.base_url)
    summary = await sync.backfill(settings, data.first_day, data.today)
    assert summary.status == "ok", summary.error
    recorded = recorded_calls(data)
    pending = [call["id"] for call in recorded if data.transcript_pending(call["id"])]
    assert pending, "the sandbox should hold some transcripts back"

    stored = assert_recordings_match(settings, data)
    for call in recorded:
        day = datetime.fromisoformat(call["started_at"].replace("Z", "+00:00"))
        assert stored[call["id"]][0] == f"recordings/{day:%Y/%m/%d}/{call['id']}.mp3"
    segments = rows(settings, "SELECT call_id, segment_index, speaker, text, \"timestamp\" FROM transcript_segments")
    by_call: dict[str, list] = {}
    for call_id, _index, speaker, text, stamp in sorted(segments):
        by_call.setdefault(call_id, []).append({"speaker": speaker, "text": text, "timestamp": stamp})
    ready = [call["id"] for call in recorded if call["id"] not in pending]
    assert set(by_call) == set(ready)
    for call_id in ready:
        assert by_call[call_id] == data.transcript(call_id)["segments"]
    full_text = rows(settings, "SELECT full_text FROM call_transcripts WHERE call_id = ?", [ready[0]])[0][0]
    assert data.transcript(ready[0])["segments"][0]["text"] in full_text

    assert summary.media["recordings"] == len(recorded) and summary.media["transcripts"] == len(ready)
    assert summary.media["bytes"] == sum(len(data.recording_bytes(call["id"])) for call in recorded)
    assert summary.media["pending"] == len(pending) and summary.media["failed"] == 0
    assert f"media {len(recorded) + len(ready)} downloaded / {len(pending)} pending" in summary.line()
    assert not list((settings.media.dir / ".tmp").iterdir())

    asked_before = len(sandbox.requests)
    again = await sync.sync(settings, today=data.today)
    assert again.status == "ok" and again.media["downloaded"] == 0
    later = sandbox.requests[asked_before:]
    assert not [r for r in later if r.path.endswith("/recording")]
    assert sorted(r.path.split("/")[-2] for r in later if r.path.endswith("/transcript")) == sorted(pending)


async def test_transcripts_ready_later_are_fetched_by_a_later_run(sandbox, make_settings):
    data = sandbox.data
    settings = make_settings(sandbox.base_url)
    await sync.backfill(settings, data.first_day, data.today)
    pending = {job[0] for job in rows(settings, "SELECT call_id FROM media_jobs WHERE status = 'pending'")}
    assert pending and rows(settings, "SELECT count(*) FROM media_jobs WHERE status = 'pending' AND last_error LIKE 'not ready yet%'")[0][0] == len(pending)

    assert set(data.make_transcripts_ready()) >= pending
    summary = await sync.sync(settings, today=data.today)
    assert summary.media["transcripts"] == len(pending) and summary.media["pending"] == 0
    assert job_counts(settings).get(("transcript", "pending"), 0) == 0
    fetched = {row[0] for row in rows(settings, "SELECT DISTINCT call_id FROM transcript_segments")}
    assert pending <= fetched


async def test_a_transcript_fetched_again_replaces_its_segments(sandbox, make_settings):
    data = sandbox.data
    settings = make_settings(sandbox.base_url, media={"recordings": False})
    await sync.backfill(settings, data.first_day, data.today)
    call_id = rows(settings, "SELECT call_id FROM media_jobs WHERE kind = 'transcript' AND status = 'done' LIMIT 1")[0][0]
    with FileStore(settings.database.path).session() as conn:  # as if the vendor had re-transcribed the call
        conn.execute("INSERT INTO transcript_segments VALUES (?, 999, 'ai', 'stale', 1.0)", [call_id])
        conn.execute("UPDATE media_jobs SET status = 'pending' WHERE call_id = ? AND kind = 'transcript'", [call_id])
    summary = await sync.media(settings)
    assert summary.media["transcripts"] == 1
    stored = rows(settings, "SELECT speaker, text, \"timestamp\" FROM transcript_segments WHERE call_id = ? ORDER BY segment_index",
                  [call_id])
    assert [dict(zip(("speaker", "text", "timestamp"), row)) for row in stored] == data.transcript(call_id)["segments"]
    assert not final_files(settings) and not rows(settings, "SELECT * FROM media_jobs WHERE kind = 'recording'")


def callsync_time(data: SandboxData, *, days: float = 0, hours: float = 0) -> str:
    """callsync's clock ($CALLSYNC_NOW) past the sandbox's calls: 20 days after its last day, so all
    of them are older than max_age_days (14)."""
    base = datetime(data.today.year, data.today.month, data.today.day, 9, tzinfo=timezone.utc)
    return (base + timedelta(days=20 + days, hours=hours)).isoformat()


def clocks_at(data: SandboxData, *, days: float = 0, hours: float = 0) -> str:
    """Move the sandbox's clock to callsync_time, and return it for $CALLSYNC_NOW."""
    moment = callsync_time(data, days=days, hours=hours)
    data.set_now(datetime.fromisoformat(moment))
    return moment


def transcript_jobs(settings) -> dict[str, tuple]:
    return {row[0]: row[1:] for row in rows(
        settings, "SELECT call_id, status, misses, missing_since, last_error FROM media_jobs WHERE kind = 'transcript'")}


async def test_a_backfill_of_old_calls_keeps_asking_for_late_transcripts_and_a_later_sync_stores_them(
    sandbox, tmp_path, make_settings
):
    data = sandbox.data
    config = cli_config(tmp_path, sandbox)  # max_age_days 14; the calls are 20+ days old by callsync's clock
    settings = make_settings(sandbox.base_url)
    backfill = await run_cli("backfill", "--config", str(config), "--start", str(data.first_day),
                             "--end", str(data.today), cwd=tmp_path, env={"CALLSYNC_NOW": clocks_at(data)})
    assert backfill.code == 0, backfill.stderr
    late = {call["id"] for call in recorded_calls(data) if data.transcript_pending(call["id"])}
    assert late, "the sandbox should hold some transcripts back"
    jobs = transcript_jobs(settings)
    first_miss = datetime.fromisoformat(callsync_time(data))
    assert {call_id for call_id, job in jobs.items() if job[0] != "done"} == late
    assert all(jobs[call_id][:3] == ("pending", 1, first_miss) for call_id in late), "asked once, not given up"

    assert set(data.make_transcripts_ready()) >= late  # the vendor finishes them, a while later
    later = await run_cli("sync", "--config", str(config), cwd=tmp_path,
                          env={"CALLSYNC_NOW": clocks_at(data, hours=5)})
    assert later.code == 0, later.stderr
    assert {status for status, *_ in transcript_jobs(settings).values()} == {"done"}
    stored = {row[0] for row in rows(settings, "SELECT DISTINCT call_id FROM transcript_segments")}
    assert stored == {call["id"] for call in recorded_calls(data)}


async def test_not_ready_media_becomes_unavailable_only_after_max_age_days_since_its_first_miss(
    sandbox, make_settings, monkeypatch
):
    data = sandbox.data
    settings = make_settings(sandbox.base_url, media={"max_age_days": 2, "recordings": False})

    async def media_run_at(days: float):
        monkeypatch.setenv("CALLSYNC_NOW", clocks_at(data, days=days))
        asked_before = len(sandbox.requests)
        summary = await sync.media(settings)
        assert summary.exit_code == 0, "media that is not there is not a failure"
        return summary, len([r for r in sandbox.requests[asked_before:] if r.path.endswith("/transcript")])

    monkeypatch.setenv("CALLSYNC_NOW", clocks_at(data))
    await sync.backfill(settings, data.first_day, data.today)
    late = {call_id for call_id, job in transcript_jobs(settings).items() if job[0] == "pending"}
    assert late

    summary, asked = await media_run_at(days=3)  # past max_age_days since the first miss, asked twice
    assert asked == len(late) and summary.media["unavailable"] == 0 and summary.media["pending"] == len(late)
    assert {transcript_jobs(settings)[call_id][:2] for call_id in late} == {("pending", 2)}

    _, asked = await media_run_at(days=3.05)  # after a day of misses, not asked again at once
    assert asked == 0
    facts = report.status(settings.database.path)  # by callsync's clock, 3.05 days after the first miss
    assert facts["media_oldest_pending"]["waiting_since"] == datetime.fromisoformat(callsync_time(data))
    assert facts["media_oldest_pending"]["waiting_s"] == int(timedelta(days=3.05).total_seconds())
    assert "waiting:    oldest pending media waited 3d 1h (transcript of call_" in report.render_status(facts)
    assert "2 not-ready answers)" in report.render_status(facts)

    summary, asked = await media_run_at(days=4)
    assert asked == len(late) and summary.media["unavailable"] == len(late) and summary.media["pending"] == 0
    for call_id in late:
        status, misses, _since, error = transcript_jobs(settings)[call_id]
        assert (status, misses) == ("unavailable", 3)
        assert error.startswith("still not ready 4 days after the first miss, 3 requests (media.max_age_days = 2)")

    data.make_transcripts_ready()
    _, asked = await media_run_at(days=5)
    assert asked == 0, "unavailable is no longer asked for"
    assert report.status(settings.database.path)["media_oldest_pending"] is None
    assert "waiting:" not in report.render_status(report.status(settings.database.path))


async def test_migration_005_reopens_the_jobs_the_old_max_age_rule_closed_and_the_next_run_asks_again(
    sandbox, make_settings
):
    data = sandbox.data
    refused_call = recorded_calls(data)[0]["id"]
    data.override_call(refused_call, recording_url="ftp://127.0.0.1/recording.mp3")
    settings = make_settings(sandbox.base_url)
    await sync.backfill(settings, data.first_day, data.today)
    late = {call_id for call_id, job in transcript_jobs(settings).items() if job[0] == "pending"}
    assert late
    with FileStore(settings.database.path).session() as conn:  # as the previous version left it
        conn.execute("DELETE FROM schema_migrations WHERE name LIKE '005%'")
        conn.execute("ALTER TABLE media_jobs DROP COLUMN misses")
        conn.execute("""UPDATE media_jobs SET status = 'unavailable', missing_since = NULL, next_attempt_at = NULL,
                        last_error = 'still not available 14 days after the call: GET ' || url
                                     || ': HTTP 404 not found: transcript not ready'
                        WHERE status = 'pending'""")
    refused_before = rows(settings, "SELECT status, attempts, last_error FROM media_jobs WHERE call_id = ? AND kind = 'recording'",
                          [refused_call])
    assert refused_before[0][0] == "unavailable" and refused_before[0][2].startswith("refused: ")

    load.migrate(FileStore(settings.database.path))
    reopened = transcript_jobs(settings)
    for call_id in late:
        status, misses, missing_since, error = reopened[call_id]
        assert (status, misses, missing_since) == ("pending", 0, None)
        assert error.startswith("reopened (closed by the old max_age_days rule): still not available 14 days")
    refused_after = rows(settings, "SELECT status, attempts, last_error FROM media_jobs WHERE call_id = ? AND kind = 'recording'",
                         [refused_call])
    assert refused_after == refused_before, "unavailable for another reason: left as it was"

    data.make_transcripts_ready()
    asked_before = len(sandbox.requests)
    again = await sync.media(settings)
    assert again.exit_code == 0 and again.media["transcripts"] == len(late)
    asked = sorted(r.path.split("/")[-2] for r in sandbox.requests[asked_before:] if r.path.endswith("/transcript"))
    assert asked == sorted(late)
    assert {status for status, *_ in transcript_jobs(settings).values()} == {"done"}
    assert rows(settings, "SELECT status FROM media_jobs WHERE call_id = ? AND kind = 'recording'", [refused_call]) == [
        ("unavailable",)]


def test_not_ready_is_asked_every_run_for_a_day_then_with_growing_gaps():
    now = datetime(2026, 3, 20, 12, tzinfo=timezone.utc)
    call = now - timedelta(days=3)

    def miss(missing_for: timedelta | None):
        since = None if missing_for is None else now - missing_for
        return media.not_ready(Job("c", "transcript", "u", call, since, 0), now, 14, "HTTP 404")

    first = miss(None)
    assert (first.status, first.missing_since, first.next_attempt_at) == ("pending", now, None)
    assert miss(timedelta(hours=23)).next_attempt_at is None
    gaps = [miss(timedelta(days=days)).next_attempt_at - now for days in (1, 2, 4, 8)]
    assert gaps == sorted(gaps) and gaps[0] > timedelta(0) and gaps[-1] == timedelta(days=1)

    a_year_old = Job("c", "transcript", "u", now - timedelta(days=365), None, 0)
    first_miss = media.not_ready(a_year_old, now, 14, "HTTP 404")
    assert first_miss.status == "pending" and first_miss.misses == 1, "the call's age plays no part"

    def missing(days: float, misses: int):
        job = Job("c", "transcript", "u", call, now - timedelta(days=days), 0, misses)
        return media.not_ready(job, now, 14, "HTTP 404")

    assert missing(13.9, 30).status == "pending"
    assert missing(20, 1).status == "pending", "not given up before MIN_MISSES requests"
    given_up = missing(14, media.MIN_MISSES - 1)
    assert given_up.status == "unavailable" and given_up.misses == media.MIN_MISSES
    assert given_up.last_error.startswith("still not ready 14 days after the first miss, 3 requests")
    assert media.not_ready(Job("c", "t", "u", call, now, 0, 1), now, 0, "HTTP 404").status == "pending"
    assert media.not_ready(Job("c", "t", "u", call, now, 0, 2), now, 0, "HTTP 404").status == "unavailable"
    streak = media.failed(Job("c", "recording", "u", call, now - timedelta(days=3), 0, 5), now, "HTTP 503")
    assert (streak.missing_since, streak.misses) == (now - timedelta(days=3), 5), "a failure keeps the streak"

    failures = [media.failed(Job("c", "recording", "u", call, None, n), now, "HTTP 503") for n in range(10)]
    assert failures[0].next_attempt_at == now, "the first failure is retried on the next run"
    gaps = [outcome.next_attempt_at - now for outcome in failures]
    assert gaps == sorted(gaps) and gaps[-1] == timedelta(days=1)


async def test_failed_downloads_fail_the_run_and_are_retried_by_the_next(sandbox, make_settings):
    data = sandbox.data
    settings = make_settings(sandbox.base_url, api={"max_retries": 1})
    await sync.backfill(settings, data.first_day, data.today, with_media=False)
    sandbox.faults.error_rate = 1.0
    broken = await sync.media(settings)
    assert broken.status == "failed" and broken.exit_code == 1
    assert broken.media["failed"] == len(recorded_calls(data)) + len(recorded_calls(data))
    assert job_counts(settings) == {("recording", "failed"): len(recorded_calls(data)),
                                    ("transcript", "failed"): len(recorded_calls(data))}
    assert all("HTTP 50" in row[0] for row in rows(settings, "SELECT last_error FROM media_jobs"))
    assert not final_files(settings)

    sandbox.faults.error_rate = 0.0
    fixed = await sync.media(settings)
    assert fixed.status == "ok" and fixed.media["failed"] == 0
    assert_recordings_match(settings, data)


async def test_a_spent_request_budget_pauses_cleanly_and_the_next_run_continues(sandbox, make_settings):
    data = sandbox.data
    settings = make_settings(sandbox.base_url, api={"max_requests_per_run": 60}, media={"transcripts": False})
    await sync.backfill(make_settings(sandbox.base_url), data.first_day, data.today, with_media=False)
    paused = await sync.media(settings)
    assert paused.status == "paused" and paused.exit_code == 0
    assert 0 < paused.media["recordings"] <= 60
    assert_recordings_match(settings, data, complete=False)
    for _run in range(10):
        if (await sync.media(settings)).status == "ok":
            break
    else:
        raise AssertionError("later runs never finished the media")
    assert_recordings_match(settings, data)


class RecordedProgress(sync.Progress):
    """What a run tells its progress bar, in order."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def media_jobs_due(self, jobs: int) -> None:
        self.events.append(("due", jobs))

    def media_job_done(self) -> None:
        self.events.append("done")


async def test_a_run_tells_its_progress_how_many_media_jobs_are_due_before_the_first(sandbox, make_settings):
    data = sandbox.data
    settings = make_settings(sandbox.base_url)
    progress = RecordedProgress()
    await sync.backfill(settings, data.first_day, data.today, progress=progress)
    jobs = 2 * len(recorded_calls(data))
    assert progress.events == [("due", jobs)] + ["done"] * jobs

    progress = RecordedProgress()
    await sync.media(settings, progress=progress)
    pending = rows(settings, "SELECT count(*) FROM media_jobs WHERE status = 'pending'")[0][0]
    assert pending and progress.events == [("due", pending)] + ["done"] * pending


def test_the_media_progress_bar_shows_the_jobs_due_and_an_eta():
    from rich.console import Console

    from pipeline import cli

    bar = cli._ProgressBar(True)
    bar.media_jobs_due(40)
    for _ in range(10):
        bar.media_job_done()
    console = Console(record=True, width=120)
    console.print(bar._progress.make_tasks_table(bar._progress.tasks))
    shown = console.export_text()
    assert "media" in shown and "10/40" in shown and "eta" in shown


# --- broken answers the client must catch --------------------------------------------------


@pytest.mark.parametrize(
    ("knob", "first_status", "caught_as"),
    [
        ("cut_recordings", 0, "Not enough data to satisfy content length header"),
        ("html_recordings", 200, "expected audio, got Content-Type 'text/html"),
        ("short_recordings", 200, "Not enough data to satisfy content length header"),
    ],
)
async def test_a_broken_recording_answer_is_retried_and_the_file_ends_byte_exact(
    sandbox, make_settings, caplog, knob, first_status, caught_as
):
    data = sandbox.data
    setattr(sandbox.faults, knob, True)  # each recording's first answer is broken, the next one whole
    settings = make_settings(sandbox.base_url, media={"transcripts": False})
    with caplog.at_level(logging.INFO, logger="callsync.client"):
        summary = await sync.backfill(settings, data.first_day, data.today)
    assert summary.status == "ok" and summary.exit_code == 0 and summary.media["failed"] == 0
    recorded = recorded_calls(data)
    for call in recorded:
        answers = [r.status for r in requests_to(sandbox, f"/calls/{call['id']}/recording")]
        assert answers == [first_status, 200]
    retries = [r for r in caplog.records if getattr(r, "event", None) == "retry_scheduled"]
    assert len(retries) == len(recorded) == summary.retries
    assert all(caught_as in r.error for r in retries), {r.error for r in retries}

    assert_recordings_match(settings, data)
    files = final_files(settings)
    assert len(files) == len(recorded)
    assert all(path.read_bytes() == data.recording_bytes(path.stem) for path in files), "nothing partial"
    assert not list((settings.media.dir / ".tmp").iterdir())


# --- safety -------------------------------------------------------------------------------------


async def test_recordings_redirected_to_the_storage_host_arrive_without_the_token(sandbox, make_settings):
    data = sandbox.data
    sandbox.faults.redirect_recordings = True
    settings = make_settings(sandbox.base_url, media={"transcripts": False})
    await sync.backfill(settings, data.first_day, data.today)
    assert_recordings_match(settings, data)
    storage = [r for r in sandbox.requests if r.host == "storage"]
    assert len(storage) == len(recorded_calls(data))
    assert all(r.authorization is None for r in storage)
    assert all(r.authorization == f"Bearer {TOKEN}" for r in sandbox.requests if r.host == "api")


async def test_foreign_recording_urls_are_fetched_without_credentials_or_refused(sandbox, make_settings):
    data = sandbox.data
    sandbox.faults.foreign_recording_urls = True
    refusing = make_settings(sandbox.base_url, media={"allow_foreign_hosts": False})
    summary = await sync.backfill(refusing, data.first_day, data.today)
    recorded = len(recorded_calls(data))
    assert summary.status == "ok" and summary.media["unavailable"] == recorded and summary.media["transcripts"] > 0
    errors = rows(refusing, "SELECT status, last_error FROM media_jobs WHERE kind = 'recording'")
    assert all(status == "unavailable" and "allow_foreign_hosts is false" in error for status, error in errors)
    assert not [r for r in sandbox.requests if r.host == "storage"]

    allowing = make_settings(sandbox.base_url, media={"allow_foreign_hosts": True})
    again = await sync.media(allowing)
    assert again.media["recordings"] == recorded
    assert_recordings_match(allowing, data)
    storage = [r for r in sandbox.requests if r.host == "storage"]
    assert len(storage) == recorded and all(r.authorization is None for r in storage)


HOSTILE_IDS = [
    "../../../escaped",
    "/etc/cron.d/evil",
    "..",
    ".hidden",
    "call\x00nul",
    "a" * 5_000,
    "sub/dir/../../../../x",
    "..\\..\\windows",
]


def test_file_names_from_ids_are_safe():
    stems = [file_stem(call_id) for call_id in HOSTILE_IDS]
    assert len(set(stems)) == len(stems)
    for stem in stems:
        assert "/" not in stem and "\\" not in stem and "\x00" not in stem and not stem.startswith(".")
        assert 0 < len(stem) <= mediafiles.MAX_STEM + 17
    assert file_stem("call_abc123") == "call_abc123"
    assert file_stem("a_b") != file_stem("a/b") and file_stem("a/b") != file_stem("a?b")
    started = datetime(2026, 3, 15, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert recording_path("call_1", started) == "recordings/2026/03/16/call_1.mp3"


async def test_hostile_call_ids_never_write_outside_the_media_folder(sandbox, make_settings, tmp_path):
    data = sandbox.data
    victims = recorded_calls(data)[: len(HOSTILE_IDS)]
    for call, hostile in zip(victims, HOSTILE_IDS):
        data.override_call(call["id"], id=hostile)
    not_http = recorded_calls(data)[len(HOSTILE_IDS): len(HOSTILE_IDS) + 2]
    data.override_call(not_http[0]["id"], recording_url="file:///etc/passwd")
    data.override_call(not_http[1]["id"], recording_url="ftp://127.0.0.1/recording.mp3")
    settings = make_settings(sandbox.base_url)
    summary = await sync.backfill(settings, data.first_day, data.today)
    assert summary.status == "ok", summary.failures
    refused = rows(settings, "SELECT status, last_error FROM media_jobs WHERE call_id IN (?, ?) AND kind = 'recording'",
                   [call["id"] for call in not_http])
    assert len(refused) == 2 and all(status == "unavailable" and "refused" in error for status, error in refused)

    media_dir = settings.media.dir.resolve()
    stored = dict(rows(settings, "SELECT call_id, path FROM recordings"))
    for call, hostile in zip(victims, HOSTILE_IDS):
        path = (media_dir / stored[hostile]).resolve()
        assert path.is_relative_to(media_dir / "recordings") and path.name == file_stem(hostile) + ".mp3"
        assert path.read_bytes() == data.recording_bytes(call["id"])
    outside = [path for path in tmp_path.rglob("*") if path.is_file() and not path.resolve().is_relative_to(media_dir)]
    databases = [path for path in outside if path.parent.name == ".callsync"]  # working, snapshot, the one replaced
    assert all(path.name.startswith("callsync.duckdb") for path in databases) and len(databases) <= 3
    assert sorted(str(path.relative_to(tmp_path)) for path in outside if path not in databases) == [
        "callsync.duckdb", "callsync.duckdb.lock", "callsync.toml"
    ]
    for escaped in (Path("/etc/cron.d/evil.mp3"), tmp_path / "escaped.mp3", tmp_path.parent / "escaped.mp3"):
        assert not escaped.exists()
    assert len(final_files(settings)) == len(recorded_calls(data)) - len(not_http)


async def test_a_temp_folder_that_leads_outside_the_media_folder_is_refused(sandbox, tmp_path):
    # Temp files are written in .tmp, and those of killed runs removed from it: through a
    # symlink, that would be another folder's files.
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "sub").mkdir(parents=True)
    (elsewhere / "important.txt").write_text("keep me")
    (elsewhere / "sub" / "notes.txt").write_text("and me")
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / ".tmp").symlink_to(elsewhere)
    data = sandbox.data
    cli_config(tmp_path, sandbox)
    result = await run_cli("backfill", "--start", str(data.first_day), "--end", str(data.today), cwd=tmp_path)
    assert result.code == 1, result.stderr
    [error] = [line for line in result.stderr.splitlines() if " INFO " not in line]
    assert error.startswith("callsync: error: ") and "outside the media folder; refused" in error
    assert sorted(str(path.relative_to(elsewhere)) for path in elsewhere.rglob("*")) == ["important.txt", "sub", "sub/notes.txt"]
    assert not list((tmp_path / "media").rglob("*.mp3"))
    assert scalar(tmp_path / "callsync.duckdb", "SELECT count(*) FROM calls") == data.calls_total  # the calls are kept


# --- the command line: process boundaries ---------------------------------------------------------


def cli_config(tmp_path: Path, sandbox, **sections) -> Path:
    return write_config(tmp_path, sandbox.base_url, **sections)


async def test_media_command_records_a_run_verifies_and_shows_in_status(sandbox, tmp_path, make_settings):
    data = sandbox.data
    config = cli_config(tmp_path, sandbox)
    settings = make_settings(sandbox.base_url)
    await sync.backfill(settings, data.first_day, data.today, with_media=False)
    result = await run_cli("media", "--config", str(config), cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert result.stdout.startswith("media ok:") and " downloaded / " in result.stdout
    assert rows(settings, "SELECT command, status FROM runs ORDER BY started_at")[-1] == ("media", "ok")
    stored = assert_recordings_match(settings, data)

    deleted, corrupted = sorted(stored)[:2]
    (settings.media.dir / stored[deleted][0]).unlink()
    corrupt = settings.media.dir / stored[corrupted][0]
    corrupt.write_bytes(b"\0" * corrupt.stat().st_size)
    asked_before = len(sandbox.requests)
    verified = await run_cli("media", "--config", str(config), "--verify", cwd=tmp_path)
    assert verified.code == 0, verified.stderr
    refetched = [r.path for r in sandbox.requests[asked_before:] if r.path.endswith("/recording")]
    assert sorted(refetched) == sorted(f"/api/call-tracking/calls/{call_id}/recording" for call_id in (deleted, corrupted))
    assert_recordings_match(settings, data)

    facts = report.status(settings.database.path)
    expected_bytes = sum(len(data.recording_bytes(call["id"])) for call in recorded_calls(data))
    assert facts["media"]["recordings"] == len(stored) and facts["media"]["bytes"] == expected_bytes
    assert set(facts["media"]) >= {"downloaded", "pending", "failed", "unavailable", "bytes"}
    media_line = next(line for line in report.render_status(facts).splitlines() if line.startswith("media:"))
    assert f"recordings {len(stored)}" in media_line and f"bytes {expected_bytes}" in media_line


async def test_media_command_takes_the_run_lock(sandbox, tmp_path):
    config = cli_config(tmp_path, sandbox)
    with state.RunLock(tmp_path / "callsync.duckdb"):
        result = await run_cli("media", "--config", str(config), cwd=tmp_path)
    assert result.code == 75 and "another callsync run" in result.stderr


async def test_disk_failure_is_one_line_exit_1_and_nothing_is_marked_done(sandbox, tmp_path, make_settings):
    data = sandbox.data
    config = cli_config(tmp_path, sandbox)
    settings = make_settings(sandbox.base_url)
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "recordings").write_text("not a folder")  # mkdir under it fails, as on a broken disk
    result = await run_cli("backfill", "--config", str(config), "--start", str(data.first_day), "--end", str(data.today),
                           cwd=tmp_path)
    assert result.code == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("callsync: error: ") and "cannot write media" in errors[0]
    assert "Not a directory" in errors[0] and "Traceback" not in result.stderr
    assert rows(settings, "SELECT count(*) FROM calls")[0][0] == data.calls_total, "the calls are kept"
    assert rows(settings, "SELECT count(*) FROM media_jobs WHERE kind = 'recording' AND status = 'done'")[0][0] == 0
    assert rows(settings, "SELECT count(*) FROM recordings")[0][0] == 0
    assert rows(settings, "SELECT status FROM runs")[-1][0] == "failed"
    assert not list((tmp_path / "media" / ".tmp").iterdir())


async def test_killed_during_downloads_leaves_no_partial_file_and_the_next_run_completes(
    sandbox, tmp_path, make_settings
):
    data = sandbox.data
    config = cli_config(tmp_path, sandbox, media={"concurrency": 4, "transcripts": False})
    settings = make_settings(sandbox.base_url, media={"transcripts": False})
    sandbox.faults.latency_ms = 20  # downloads are in flight whenever the kill lands
    process = await start_cli("backfill", "--config", str(config), "--start", str(data.first_day),
                              "--end", str(data.today), cwd=tmp_path)
    recordings = lambda: requests_to(sandbox, "/recording")  # noqa: E731
    await wait_for(lambda: len(recordings()) >= 30 and any(r.finished == 0 for r in recordings()) or
                   process.returncode is not None, what="downloads in flight")
    assert process.returncode is None, "the run ended before the kill"
    in_flight = [r for r in recordings() if r.finished == 0]
    process.send_signal(signal.SIGKILL)
    await process.wait()
    assert in_flight and len(recordings()) < len(recorded_calls(data))

    for path in final_files(settings):  # nothing partial under a final name
        call_id = path.stem
        assert path.read_bytes() == data.recording_bytes(call_id)
    assert_recordings_match(settings, data, complete=False)  # nothing done without its file

    leftover = settings.media.dir / ".tmp" / "999-1.part"  # as a killed run leaves a spilled download
    leftover.write_bytes(b"ID3 partial")
    sandbox.faults.latency_ms = 0
    rerun = await sync.media(settings)
    assert rerun.status == "ok" and rerun.media["temp_files_removed"] >= 1
    assert_recordings_match(settings, data)
    assert not list((settings.media.dir / ".tmp").iterdir())
    assert rows(settings, "SELECT status FROM runs ORDER BY started_at")[0][0] == "interrupted", "the killed run"


@pytest.mark.parametrize(
    "syncfs",
    [
        pytest.param(True, marks=pytest.mark.skipif(mediafiles._load_syncfs() is None, reason="no syncfs(2) here")),
        False,
    ],
    ids=["syncfs", "fsync-per-file"],
)
def test_a_batch_places_what_it_can_and_reports_each_failure(tmp_path, syncfs):
    folder = mediafiles.MediaFolder(tmp_path / "media", syncfs=syncfs)
    folder.prepare()
    (tmp_path / "media" / "recordings").mkdir()
    (tmp_path / "media" / "recordings" / "2026").write_text("a file where a folder should be")

    def spool(data: bytes, limit: int = 1 << 20) -> mediafiles.Spool:
        made = mediafiles.Spool(folder.new_temp(), limit)
        made.write(data)
        return made

    placements = [
        (spool(b"first"), "recordings/2025/01/02/a.mp3"),
        (spool(b"escapes"), "../outside.mp3"),
        (spool(b"blocked"), "recordings/2026/01/02/b.mp3"),
        (spool(b"spilled to its temp file", limit=4), "recordings/2025/01/02/c.mp3"),
    ]
    results = folder.place_all(placements)

    assert results[0] is None and results[3] is None
    assert isinstance(results[1], mediafiles.MediaError)
    assert isinstance(results[2], OSError)
    day = tmp_path / "media" / "recordings" / "2025" / "01" / "02"
    assert (day / "a.mp3").read_bytes() == b"first"
    assert (day / "c.mp3").read_bytes() == b"spilled to its temp file"
    assert not (tmp_path / "outside.mp3").exists()
    # failed ones leave no temp file; the run's owner file stays until the run is over
    assert [path.name for path in (tmp_path / "media" / ".tmp").iterdir()] == [f"{folder.owner}.owner"]


@pytest.mark.skipif(mediafiles._load_syncfs() is None, reason="no syncfs(2) here")
def test_a_batch_whose_media_folder_is_gone_fails_file_by_file(tmp_path):
    folder = mediafiles.MediaFolder(tmp_path / "media", syncfs=True)
    folder.prepare()
    spools = [mediafiles.Spool(folder.new_temp(), 1 << 20) for _ in range(2)]
    for spool in spools:
        spool.write(b"ID3")
    shutil.rmtree(tmp_path / "media")

    results = folder.place_all([(spools[0], "recordings/2026/01/02/a.mp3"), (spools[1], "recordings/2026/01/02/b.mp3")])

    assert [type(result) for result in results] == [FileNotFoundError, FileNotFoundError]
    assert not (tmp_path / "media").exists()



# --- two databases, one media folder ---------------------------------------------------------


def test_a_run_removes_only_the_temp_files_whose_owner_is_gone(tmp_path):
    root = tmp_path / "media"

    def spilled(folder: mediafiles.MediaFolder, data: bytes) -> Path:
        spool = mediafiles.Spool(folder.new_temp(), 4)
        spool.write(data)  # over the limit: in its temp file, on disk
        spool.close()
        return spool.temp

    live, killed = mediafiles.MediaFolder(root), mediafiles.MediaFolder(root)
    live.prepare()
    killed.prepare()
    writing, left = spilled(live, b"being written by a live run"), spilled(killed, b"left by a killed run")
    os.close(killed._owner_file)  # as kill -9 does: the kernel lets go of the flock, the files stay
    killed._owner_file = None
    older = root / ".tmp" / "4242-1.part"  # the previous version named temp files <pid>-<n>.part
    older.write_bytes(b"ID3 partial")

    starting = mediafiles.MediaFolder(root)
    assert starting.prepare() == 2
    assert writing.exists() and (root / ".tmp" / f"{live.owner}.owner").exists()
    assert not left.exists() and not older.exists() and not (root / ".tmp" / f"{killed.owner}.owner").exists()

    starting.clean_temp()
    assert writing.exists(), "the end of a run removes only its own"
    live.clean_temp()
    assert list((root / ".tmp").iterdir()) == []


async def test_two_databases_one_media_folder_one_run_killed_mid_download(tmp_path, monkeypatch):
    """Two real CLI runs (two accounts, two databases) write one media folder; one is killed
    while both have downloads in their temp files. ~10 s: two CLI processes at once."""
    monkeypatch.setenv("CALLSYNC_TOKEN", TOKEN)
    day = datetime.now(timezone.utc).date() - timedelta(days=1)
    media_dir = tmp_path / "media"
    temp = media_dir / ".tmp"

    def account(seed: int) -> SandboxData:
        data = SandboxData.generate(seed=seed, calls=8, days=1, today=day)
        data.recording_bytes_per_second = 16_000  # a real MP3's size: downloads spill to their temp files
        return data

    def configured(name: str, api) -> Path:
        (tmp_path / name).mkdir()
        return write_config(tmp_path / name, api.base_url, media={"dir": str(media_dir), "transcripts": False})

    def temp_files(process) -> set[Path]:
        return set(temp.glob(f"{process.pid}-*.part"))

    async def backfill(config: Path):
        return await start_cli("backfill", "--config", str(config), "--start", str(day), "--end", str(day),
                               cwd=config.parent)

    survivor_data, victim_data = account(3), account(5)
    async with run_sandbox(data=survivor_data, faults=Faults(hold_recordings=True)) as survivor_api, \
            run_sandbox(data=victim_data, faults=Faults(hold_recordings=True)) as victim_api:
        survivor_config, victim_config = configured("survivor", survivor_api), configured("victim", victim_api)
        survivor = await backfill(survivor_config)
        await wait_for(lambda: temp_files(survivor) or survivor.returncode is not None, timeout=60,
                       what="the survivor's downloads in its temp files")
        writing = temp_files(survivor)
        assert writing and survivor.returncode is None

        victim = await backfill(victim_config)  # its start cleans the shared temp folder
        await wait_for(lambda: temp_files(victim) or victim.returncode is not None, timeout=60,
                       what="the victim's downloads in its temp files")
        assert all(path.exists() for path in writing), "a live run's temp files are left alone"
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        left = temp_files(victim)
        assert left

        survivor_api.faults.hold_recordings = False
        _, stderr = await survivor.communicate()
        assert survivor.returncode == 0, stderr.decode()
        survivor_settings = load_settings(survivor_config)
        assert_recordings_match(survivor_settings, survivor_data)
        assert all(path.exists() for path in left), "the survivor removes only its own temp files"
        assert not temp_files(survivor)

        victim_api.faults.hold_recordings = False
        again = await sync.media(load_settings(victim_config))
        assert again.exit_code == 0 and again.media["temp_files_removed"] == len(left)
        assert not any(path.exists() for path in left), "the killed run's temp files, cleaned by its next run"
        assert list(temp.iterdir()) == []
        assert_recordings_match(load_settings(victim_config), victim_data)
        assert_recordings_match(survivor_settings, survivor_data)
