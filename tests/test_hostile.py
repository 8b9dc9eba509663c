"""A broken or hostile API (issue #22), one fault at a time, through the real CLI.

Each run must finish, stay under PEAK_RSS_MB, write nothing over the caps, show no
traceback, exit with its documented code, and store everything the fault did not touch
exactly as the sandbox serves it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from pipeline.sandbox import Faults, SandboxData, run_sandbox
from tests.conftest import TOKEN, CliResult, write_config
from tests.dbcheck import sandbox_calls, scalar, stored_calls

PEAK_RSS_MB = 300

# Runs the command given as its arguments and writes its child's peak RSS (KB) to $PEAK_RSS_FILE:
# RUSAGE_CHILDREN of a process whose only child is the CLI is the CLI's own peak.
_MEASURE = """
import os, resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
with open(os.environ["PEAK_RSS_FILE"], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


class Measured(CliResult):
    peak_rss_mb: float

    def __init__(self, code: int, stdout: str, stderr: str, peak_rss_mb: float):
        super().__init__(code, stdout, stderr)
        self.peak_rss_mb = peak_rss_mb


async def start_measured(*args: str, cwd: Path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("CALLSYNC_")}
    env.update(CALLSYNC_TOKEN=TOKEN, PEAK_RSS_FILE=str(cwd / "peak_rss"))
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", _MEASURE, sys.executable, "-m", "pipeline", *args,
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def finish_measured(process, cwd: Path) -> Measured:
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    peak = int((cwd / "peak_rss").read_text()) / 1024
    result = Measured(process.returncode, stdout.decode(), stderr.decode(), peak)
    assert "Traceback" not in result.stderr, result.stderr
    assert peak < PEAK_RSS_MB, f"peak RSS {peak:.0f} MB"
    return result


async def run_measured(*args: str, cwd: Path) -> Measured:
    return await finish_measured(await start_measured(*args, cwd=cwd), cwd)


def backfill_args(data: SandboxData, *more: str) -> tuple[str, ...]:
    return ("backfill", "--start", data.first_day.isoformat(), "--end", data.today.isoformat(), *more)


@pytest.fixture
def data() -> SandboxData:
    return SandboxData.generate(seed=22, calls=90, days=4)


def rows(database: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(sql, params or []).fetchall()


def recorded(data: SandboxData) -> list[str]:
    return [call["id"] for call in data.calls_between(None, None) if call["recording_url"]]


def ready_transcripts(data: SandboxData) -> list[str]:
    return [call_id for call_id in recorded(data) if not data.transcript_pending(call_id)]


def assert_media_exact(database: Path, media_dir: Path, data: SandboxData, *, except_call: str | None = None,
                       except_recording: str | None = None) -> None:
    """Every recording and ready transcript but ``except_call``'s is stored byte-exact, and nothing else."""
    stored = {row[0]: row[1:] for row in rows(database, "SELECT call_id, path, size_bytes FROM recordings")}
    expected = [call_id for call_id in recorded(data) if call_id not in (except_call, except_recording)]
    assert sorted(stored) == sorted(expected)
    for call_id in expected:
        path, size = stored[call_id]
        assert (media_dir / path).read_bytes() == data.recording_bytes(call_id) and size == len(data.recording_bytes(call_id))
    segments: dict[str, list] = {}
    for call_id, speaker, text, stamp in rows(
        database, 'SELECT call_id, speaker, text, "timestamp" FROM transcript_segments ORDER BY call_id, segment_index'
    ):
        segments.setdefault(call_id, []).append({"speaker": speaker, "text": text, "timestamp": stamp})
    transcripts = [call_id for call_id in ready_transcripts(data) if call_id != except_call]
    assert sorted(segments) == sorted(transcripts)
    for call_id in transcripts:
        assert segments[call_id] == data.transcript(call_id)["segments"]


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()] if folder.exists() else []


# --- bounded bodies ----------------------------------------------------------------------


async def test_a_gzip_bomb_listing_page_fails_its_window_alone(data, tmp_path):
    bomb_day = data.first_day + timedelta(days=1)
    faults = Faults(fault_day=bomb_day.isoformat(), page_gzip_bomb_mb=128)
    async with run_sandbox(data=data, faults=faults) as sandbox:
        write_config(tmp_path, sandbox.base_url)
        result = await run_measured(*backfill_args(data, "--no-media"), cwd=tmp_path)
        bomb_requests = [r for r in sandbox.requests if r.path.endswith("/calls") and r.query["start_date"] == str(bomb_day)]
    assert result.code == 1, result.stderr
    assert result.stdout.startswith("backfill failed:") and "1 failed" in result.stdout
    assert f"window {bomb_day} failed" in result.stderr and "over the 16 MB cap" in result.stderr
    assert len({r.query["end_date"] for r in bomb_requests}) == len(bomb_requests), "a body over its cap is not asked for again"
    database = tmp_path / "callsync.duckdb"
    expected = {call_id: call for call_id, call in sandbox_calls(data).items() if not call["started_at"].startswith(str(bomb_day))}
    assert stored_calls(database) == expected
    assert scalar(database, "SELECT count(*) FROM tracking_numbers") == len(data.numbers)


async def test_a_gzip_bomb_recording_fails_that_recording_and_writes_no_more_than_the_cap(data, tmp_path):
    bomb = recorded(data)[0]
    faults = Faults(fault_call=bomb, recording_gzip_bomb_mb=64)
    async with run_sandbox(data=data, faults=faults) as sandbox:
        write_config(tmp_path, sandbox.base_url, media={"max_recording_mb": 4})
        result = await run_measured(*backfill_args(data), cwd=tmp_path)
        bomb_requests = [r for r in sandbox.requests if r.path.endswith(f"/{bomb}/recording")]
    assert result.code == 1, result.stderr
    assert "1 failed" in result.stdout
    database, media_dir = tmp_path / "callsync.duckdb", tmp_path / "media"
    status, error = rows(database, "SELECT status, last_error FROM media_jobs WHERE call_id = ? AND kind = 'recording'", [bomb])[0]
    assert status == "failed" and "over the 4 MB cap" in error
    assert len(bomb_requests) == 1
    assert not files_under(media_dir / ".tmp")
    assert all(path.stat().st_size <= 4 << 20 for path in files_under(media_dir))
    assert_media_exact(database, media_dir, data, except_recording=bomb)
    assert stored_calls(database) == sandbox_calls(data)


async def test_recordings_gzip_compressed_anyway_download_byte_exact(data, tmp_path):
    async with run_sandbox(data=data, faults=Faults(gzip_recordings=True, redirect_recordings=True)) as sandbox:
        write_config(tmp_path, sandbox.base_url)
        result = await run_measured(*backfill_args(data), cwd=tmp_path)
        retries = [r for r in sandbox.requests if r.path.endswith(".mp3") and r.status != 200]
    assert result.code == 0, result.stderr
    assert result.stdout.startswith("backfill ok") and "(0 retries" in result.stdout
    assert not retries
    assert_media_exact(tmp_path / "callsync.duckdb", tmp_path / "media", data)


# --- no tracebacks, ever -------------------------------------------------------------------


@pytest.mark.parametrize(
    "broken, shape, message",
    [
        ("numbers", "array", "malformed numbers listing"),
        ("numbers", "wrong_types", "malformed numbers listing"),
        ("flows", "data_object", "malformed flows listing: data is an object, not a list"),
        ("flows", "wrong_types", "malformed flows listing"),
    ],
)
async def test_a_wrong_shaped_numbers_or_flows_listing_fails_alone(data, tmp_path, broken, shape, message):
    async with run_sandbox(data=data, faults=Faults(**{f"{broken}_shape": shape})) as sandbox:
        write_config(tmp_path, sandbox.base_url)
        result = await run_measured(*backfill_args(data, "--no-media"), cwd=tmp_path)
    assert result.code == 1, result.stderr
    assert result.stdout.startswith("backfill failed:")
    assert message in result.stderr, result.stderr
    database = tmp_path / "callsync.duckdb"
    assert stored_calls(database) == sandbox_calls(data)
    numbers = scalar(database, "SELECT count(*) FROM tracking_numbers")
    flows = scalar(database, "SELECT count(*) FROM call_flows")
    if broken == "numbers":
        assert (numbers, flows) == (0, len(data.flows))
    else:
        assert (numbers, flows) == (len(data.numbers), 0)
    assert rows(database, "SELECT status FROM runs") == [("failed",)]


@pytest.mark.parametrize("shape", ["array", "data_object", "wrong_types"])
async def test_a_wrong_shaped_calls_page_fails_its_window_alone(data, tmp_path, shape):
    broken_day = data.first_day + timedelta(days=2)
    async with run_sandbox(data=data, faults=Faults(fault_day=str(broken_day), calls_shape=shape)) as sandbox:
        write_config(tmp_path, sandbox.base_url, api={"max_retries": 1})
        result = await run_measured(*backfill_args(data, "--no-media"), cwd=tmp_path)
    assert result.code == 1, result.stderr  # its window is halved down to the day, which fails alone
    assert "1 failed" in result.stdout and f"window {broken_day} failed" in result.stderr
    assert "malformed calls listing" in result.stderr
    database = tmp_path / "callsync.duckdb"
    expected = {call_id: call for call_id, call in sandbox_calls(data).items() if not call["started_at"].startswith(str(broken_day))}
    assert stored_calls(database) == expected


async def test_a_wrong_shaped_transcript_fails_that_transcript(data, tmp_path):
    broken = ready_transcripts(data)[0]
    async with run_sandbox(data=data, faults=Faults(fault_call=broken, transcript_shape="data_object")) as sandbox:
        write_config(tmp_path, sandbox.base_url)
        result = await run_measured(*backfill_args(data), cwd=tmp_path)
    assert result.code == 1, result.stderr
    database = tmp_path / "callsync.duckdb"
    status, error = rows(database, "SELECT status, last_error FROM media_jobs WHERE call_id = ? AND kind = 'transcript'", [broken])[0]
    assert status == "failed" and error.startswith("malformed transcript")
    stored = {row[0] for row in rows(database, "SELECT DISTINCT call_id FROM transcript_segments")}
    assert stored == set(ready_transcripts(data)) - {broken}


async def test_urls_with_credentials_are_refused_and_stored_redacted(data, tmp_path):
    target = recorded(data)[0]
    async with run_sandbox(data=data, faults=Faults(fault_call=target, userinfo_urls=True)) as sandbox:
        write_config(tmp_path, sandbox.base_url)
        result = await run_measured(*backfill_args(data), cwd=tmp_path)
        asked = [r for r in sandbox.requests if f"/{target}" in r.path]
    assert result.code == 0, result.stderr  # unavailable is not a failure
    assert "2 unavailable" in result.stdout
    assert not asked, "nothing is sent to a URL with credentials"
    database, media_dir = tmp_path / "callsync.duckdb", tmp_path / "media"
    jobs = rows(database, "SELECT kind, status, last_error FROM media_jobs WHERE call_id = ? ORDER BY kind", [target])
    assert [(kind, status) for kind, status, _ in jobs] == [("recording", "unavailable"), ("transcript", "unavailable")]
    assert all("carries credentials" in error and "pass" not in error for _, _, error in jobs)
    urls = rows(database, "SELECT recording_url, transcript_url FROM calls WHERE id = ?", [target])[0]
    assert all("://***@127.0.0.1" in url for url in urls)
    assert scalar(database, "SELECT count(*) FROM calls WHERE recording_url LIKE '%pass%' OR transcript_url LIKE '%pass%'") == 0
    expected = sandbox_calls(data)
    stored = stored_calls(database)
    stored[target].update(recording_url=expected[target]["recording_url"], transcript_url=expected[target]["transcript_url"])
    assert stored == expected
    assert_media_exact(database, media_dir, data, except_call=target)


# --- big transcripts -----------------------------------------------------------------------


async def test_a_transcript_of_300k_segments_is_stored_within_the_memory_bound(data, tmp_path):
    big = ready_transcripts(data)[0]
    async with run_sandbox(data=data, faults=Faults(fault_call=big, huge_transcript_segments=300_000)) as sandbox:
        write_config(tmp_path, sandbox.base_url)
        result = await run_measured(*backfill_args(data), cwd=tmp_path)
    assert result.code == 0, result.stderr
    database = tmp_path / "callsync.duckdb"
    count, first, last = rows(
        database, "SELECT count(*), min(segment_index), max(segment_index) FROM transcript_segments WHERE call_id = ?", [big]
    )[0]
    assert (count, first, last) == (300_000, 0, 299_999)
    assert rows(database, 'SELECT DISTINCT speaker, text, "timestamp" FROM transcript_segments WHERE call_id = ?', [big]) == [
        ("caller", "I would like to hear about pricing, please.", 1.5)
    ]
    others = {row[0] for row in rows(database, "SELECT DISTINCT call_id FROM transcript_segments")} - {big}
    assert others == set(ready_transcripts(data)) - {big}


async def test_a_transcript_over_its_cap_is_refused(data, tmp_path):
    big = ready_transcripts(data)[0]
    async with run_sandbox(data=data, faults=Faults(fault_call=big, huge_transcript_segments=100_000)) as sandbox:
        write_config(tmp_path, sandbox.base_url, media={"max_transcript_mb": 4})
        result = await run_measured(*backfill_args(data), cwd=tmp_path)
    assert result.code == 1, result.stderr
    database = tmp_path / "callsync.duckdb"
    status, error = rows(database, "SELECT status, last_error FROM media_jobs WHERE call_id = ? AND kind = 'transcript'", [big])[0]
    assert status == "failed" and "over the 4 MB cap" in error
    assert scalar(database, "SELECT count(*) FROM transcript_segments WHERE call_id = ?", [big]) == 0


# --- the pieces, directly ------------------------------------------------------------------


def test_the_inflater_stops_at_its_cap_and_reads_every_encoding_it_accepts():
    import gzip
    import zlib

    from pipeline.bodies import Inflater
    from pipeline.errors import ApiError, BodyTooLargeError

    content = os.urandom(5000) * 20
    raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    bodies = {
        "gzip": gzip.compress(content[:50_000]) + gzip.compress(content[50_000:]),  # two members
        "deflate": zlib.compress(content),
        "identity": content,
    }
    bodies["raw-deflate"] = raw_deflate.compress(content) + raw_deflate.flush()
    for encoding, body in bodies.items():
        inflater = Inflater("deflate" if encoding == "raw-deflate" else encoding, len(content), "test")
        out = b"".join(piece for i in range(0, len(body), 1000) for piece in inflater.feed(body[i : i + 1000]))
        inflater.finish()
        assert out == content and inflater.size == len(content) and inflater.wire_bytes == len(body), encoding
        with pytest.raises(BodyTooLargeError):
            small = Inflater("deflate" if encoding == "raw-deflate" else encoding, len(content) - 1, "test")
            list(small.feed(body))
            small.finish()
    with pytest.raises(ApiError, match="unsupported Content-Encoding 'br'"):
        Inflater("br", 10, "test")
    truncated = Inflater("gzip", len(content), "test")
    list(truncated.feed(bodies["gzip"][:100]))
    with pytest.raises(ApiError, match="ends early"):
        truncated.finish()


def test_urls_are_redacted_before_they_are_stored():
    from pipeline.client import redact_url

    assert redact_url("https://user:pw@host.example/a?b=c@d") == "https://***@host.example/a?b=c@d"
    assert redact_url("https://host.example/a@b") == "https://host.example/a@b"
    assert redact_url("HTTP://:secret@10.0.0.1:8080/") == "HTTP://***@10.0.0.1:8080/"


def test_transcripts_of_any_wrong_shape_are_a_clear_error_on_both_paths():
    from pipeline import columns
    from pipeline.client import parse_transcript
    from pipeline.errors import ApiError

    for body in (b"[]", b'{"segments": {"speaker": "ai"}}', b'{"segments": [{"speaker": 1, "text": ["no"]}]}', b"nul"):
        with pytest.raises(ApiError, match="malformed transcript"):
            parse_transcript(body)
        with pytest.raises(ApiError, match="malformed transcript"):
            columns.transcript_to_arrow("c", body)


# --- stalls ----------------------------------------------------------------------------------


async def test_a_recording_streaming_forever_is_abandoned_and_holds_back_nothing(data, tmp_path):
    """The others are committed (on the timer: the run's log says when) while it still
    streams; it is abandoned after timeout_s without enough progress, and the run exits 1."""
    endless = recorded(data)[0]
    async with run_sandbox(data=data, faults=Faults(fault_call=endless, endless_recordings=True)) as sandbox:
        write_config(tmp_path, sandbox.base_url, api={"timeout_s": 8, "max_retries": 0})
        database = tmp_path / "callsync.duckdb"
        process = await start_measured(*backfill_args(data, "--log-format", "json", "-v"), cwd=tmp_path)
        others = len(recorded(data)) - 1 + len(ready_transcripts(data))
        committed = 0
        while committed < others:
            line = await asyncio.wait_for(process.stderr.readline(), timeout=60)
            assert line, "the run ended before the others were committed"
            event = json.loads(line)
            if event.get("event") == "media_committed":
                committed += event["jobs"]
        endless_request = next(r for r in sandbox.requests if r.path.endswith(f"/{endless}/recording"))
        assert endless_request.finished == 0.0, "committed while the endless download still runs"
        result = await finish_measured(process, tmp_path)
    assert result.code == 1, result.stderr
    status, error = rows(database, "SELECT status, last_error FROM media_jobs WHERE call_id = ? AND kind = 'recording'", [endless])[0]
    assert status == "failed" and "stalled" in error
    assert not files_under(tmp_path / "media" / ".tmp")
    assert_media_exact(database, tmp_path / "media", data, except_recording=endless)



# --- no reach inside the network -------------------------------------------------------------


def test_addresses_are_ranked_by_how_internal_they_are():
    from pipeline.addresses import Reach, reach_of

    cases = {
        "93.184.216.34": Reach.PUBLIC, "2606:2800:220:1::1": Reach.PUBLIC,
        "10.1.2.3": Reach.PRIVATE, "172.16.0.1": Reach.PRIVATE, "192.168.1.1": Reach.PRIVATE,
        "100.64.0.1": Reach.PRIVATE, "fd00::2": Reach.PRIVATE, "::ffff:10.0.0.1": Reach.PRIVATE,
        "127.0.0.1": Reach.LOOPBACK, "127.0.0.2": Reach.LOOPBACK, "::1": Reach.LOOPBACK,
        "::ffff:127.0.0.1": Reach.LOOPBACK, "64:ff9b::7f00:1": Reach.LOOPBACK,
        "169.254.169.254": Reach.NEVER, "fe80::1%eth0": Reach.NEVER, "::ffff:169.254.169.254": Reach.NEVER,
        "224.0.0.1": Reach.NEVER, "ff02::1": Reach.NEVER, "0.0.0.0": Reach.NEVER, "::": Reach.NEVER,
        "240.0.0.1": Reach.NEVER, "255.255.255.255": Reach.NEVER,
    }
    assert {address: reach_of(address) for address in cases} == cases


def test_a_host_may_not_be_more_internal_than_the_api():
    from pipeline.addresses import AddressPolicy, Reach

    public, private, loopback, metadata = "93.184.216.34", "10.0.0.5", "127.0.0.1", "169.254.169.254"
    allowed = {
        Reach.PUBLIC: {public},
        Reach.PRIVATE: {public, private},
        Reach.LOOPBACK: {public, private, loopback},
    }
    for api_reach, expected in allowed.items():
        policy = AddressPolicy(api_reach)
        assert {a for a in (public, private, loopback, metadata) if policy.refusal(a) is None} == expected
        opened = AddressPolicy(api_reach, allow_private=True)
        assert {a for a in (public, private, loopback, metadata) if opened.refusal(a) is None} == {public, private, loopback}
    assert "more internal than the API's (public)" in AddressPolicy(Reach.PUBLIC).refusal(loopback)
    assert "always refused" in AddressPolicy(Reach.LOOPBACK, allow_private=True).refusal(metadata)


class NamesResolver:
    """A resolver that knows a few names (as a hostile DNS would answer), for the client's connector."""

    def __init__(self, names: dict[str, list[str]]):
        self.names = names

    async def resolve(self, host, port=0, family=0):
        import socket

        addresses = self.names.get(host)
        if addresses is None:
            raise OSError(f"unknown host {host}")
        return [{"hostname": host, "host": address, "port": port, "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                 "proto": 0, "flags": 0} for address in addresses]

    async def close(self):
        pass


async def test_names_are_judged_by_the_addresses_they_resolve_to():
    from pipeline.addresses import AddressGuard, GuardedResolver, Reach
    from pipeline.errors import UnsafeUrlError

    names = NamesResolver({"storage.example.com": ["127.0.0.1"], "mixed.example.com": ["10.0.0.1", "93.184.216.34"],
                           "metadata.example.com": ["169.254.169.254"]})
    public_api = GuardedResolver(AddressGuard("api.example.com", allow_private=False, api_reach=Reach.PUBLIC, resolver=names))
    with pytest.raises(UnsafeUrlError, match="storage.example.com resolves to 127.0.0.1 is a loopback address"):
        await public_api.resolve("storage.example.com", 80)
    assert [entry["host"] for entry in await public_api.resolve("mixed.example.com", 80)] == ["93.184.216.34"]
    loopback_api = GuardedResolver(AddressGuard("localhost", allow_private=False, api_reach=Reach.LOOPBACK, resolver=names))
    assert [entry["host"] for entry in await loopback_api.resolve("storage.example.com", 80)] == ["127.0.0.1"]
    opened = GuardedResolver(AddressGuard("api.example.com", allow_private=True, api_reach=Reach.PUBLIC, resolver=names))
    with pytest.raises(UnsafeUrlError, match="always refused"):
        await opened.resolve("metadata.example.com", 80)


async def test_a_redirect_from_a_public_looking_api_to_loopback_is_refused(data):
    """The sandbox's API stands for a public one (api_reach): its redirect to the storage host on
    127.0.0.2, and a name that resolves to loopback, are refused before any connection."""
    import io

    from pipeline.addresses import Reach
    from pipeline.client import CallTrackingClient, ClientOptions
    from pipeline.errors import UnsafeUrlError

    call_id = recorded(data)[0]
    async with run_sandbox(data=data, faults=Faults(redirect_recordings=True), storage_host="127.0.0.2") as sandbox:
        recording = f"{sandbox.base_url}/api/call-tracking/calls/{call_id}/recording"
        storage_port = sandbox.storage_url.rsplit(":", 1)[1]
        names = NamesResolver({"cdn.example.com": ["127.0.0.2"]})
        public = ClientOptions(max_retries=0, api_reach=Reach.PUBLIC, resolver=names)
        async with CallTrackingClient(sandbox.base_url, TOKEN, public) as client:
            with pytest.raises(UnsafeUrlError, match="127.0.0.2 is a loopback address, more internal than the API's"):
                await client.download(recording, io.BytesIO())
            with pytest.raises(UnsafeUrlError, match="cdn.example.com resolves to 127.0.0.2 is a loopback address"):
                await client.download(f"http://cdn.example.com:{storage_port}/recordings/{call_id}.mp3", io.BytesIO())
        assert not [r for r in sandbox.requests if r.host == "storage"], "no connection to the refused host"
        async with CallTrackingClient(sandbox.base_url, TOKEN, ClientOptions(max_retries=0)) as client:  # a loopback API
            sink = io.BytesIO()
            await client.download(recording, sink)
        assert sink.getvalue() == data.recording_bytes(call_id)


async def test_media_urls_at_the_cloud_metadata_address_are_refused_and_recorded_unavailable(data, tmp_path):
    async with run_sandbox(data=data, faults=Faults(media_url_host="http://169.254.169.254")) as sandbox:
        write_config(tmp_path, sandbox.base_url, media={"allow_private_addresses": True})
        result = await run_measured(*backfill_args(data), cwd=tmp_path)
    assert result.code == 0, result.stderr
    media = len(recorded(data)) + len(recorded(data))
    assert f"0 downloaded / 0 pending / 0 failed / {media} unavailable" in result.stdout
    database = tmp_path / "callsync.duckdb"
    errors = {row[0] for row in rows(database, "SELECT last_error FROM media_jobs")}
    assert errors == {"refused: 169.254.169.254 is a link-local/multicast/reserved address; always refused"}
    assert scalar(database, "SELECT count(*) FROM transcript_segments") == 0 and not files_under(tmp_path / "media" / "recordings")
    stored, expected = stored_calls(database), sandbox_calls(data)
    for call_id in recorded(data):
        assert stored[call_id]["recording_url"] == f"http://169.254.169.254/recordings/{call_id}.mp3"
        stored[call_id].update(recording_url=expected[call_id]["recording_url"], transcript_url=expected[call_id]["transcript_url"])
    assert stored == expected


def _own_private_address() -> str | None:
    """This machine's address on its network, if it has one (no packet is sent)."""
    import socket

    from pipeline.addresses import Reach, reach_of

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return address if reach_of(address) is Reach.PRIVATE else None


async def test_an_api_on_a_private_address_may_not_lead_to_loopback_unless_allowed(data, tmp_path):
    address = _own_private_address()
    if address is None:
        pytest.skip("this machine has no private address to serve the API on")
    async with run_sandbox(data=data, faults=Faults(redirect_recordings=True), host=address,
                           storage_host="127.0.0.1") as sandbox:
        write_config(tmp_path, sandbox.base_url)
        refused = await run_measured(*backfill_args(data), cwd=tmp_path)
        assert not [r for r in sandbox.requests if r.host == "storage"]
        write_config(tmp_path, sandbox.base_url, media={"allow_private_addresses": True})
        allowed = await run_measured("media", cwd=tmp_path)
    assert refused.code == 0, refused.stderr
    assert f"{len(recorded(data))} unavailable" in refused.stdout
    assert allowed.code == 0 and allowed.stdout.startswith("media ok"), allowed.stderr
    assert_media_exact(tmp_path / "callsync.duckdb", tmp_path / "media", data)
