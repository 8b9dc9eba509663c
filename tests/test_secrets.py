"""Secrets stay secret whatever a hostile server answers: the bearer token it echoes back,
the signed query string of a storage link in aiohttp's errors, userinfo in a redirect.
None of them may reach stdout, stderr, the logs or the database."""

from __future__ import annotations

import io
from pathlib import Path

import duckdb
import pytest
from aiohttp import web

from pipeline.client import CallTrackingClient, ClientOptions
from pipeline.errors import RetryableApiError
from tests.conftest import run_cli, serve_app, serve_raw, write_config

DAY = "2026-03-15"
SIGNED = "?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=SIGSECRET0123"
FAST = dict(backoff_initial_s=0.01, backoff_max_s=0.05)

MALFORMED = {
    "bad status line": b"HTTP/1.1 2000 WHAT\r\nContent-Length: 0\r\n\r\n",
    "huge status line": b"HTTP/1.1 200 " + b"A" * 9000 + b"\r\n\r\n",
    "NUL in a header": b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nX-A\x00b: c\r\nContent-Length: 3\r\n\r\nabc",
    "bad chunk size": b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nabc\r\n0\r\n\r\n",
    "two Content-Lengths": b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabc",
}


async def empty_listing(request: web.Request) -> web.Response:
    return web.json_response({"data": [], "meta": {"page": 1, "per_page": 100, "total": 0}})


def api_app(calls, **routes) -> web.Application:
    """An API whose calls listing is ``calls`` (a handler); numbers and flows are empty unless
    ``routes`` (path: handler) says otherwise."""
    app = web.Application()
    listings = {"/api/call-tracking/numbers": empty_listing, "/api/call-tracking/flows": empty_listing}
    for path, handler in {"/api/call-tracking/calls": calls, **listings, **routes}.items():
        app.router.add_get(path, handler)
    return app


def one_call(recording_url: str) -> web.Response:
    call = {"id": "c1", "started_at": f"{DAY}T14:22:00Z", "duration_seconds": 10, "recording_url": recording_url}
    return web.json_response({"data": [call], "meta": {"page": 1, "per_page": 100, "total": 1}})


def rows(database: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def assert_kept_secret(secret: str, folder: Path, *printed: str) -> None:
    """Not in what the run printed, nor in any value of any table, nor anywhere in the bytes
    of the database files (the published one and the working one under .callsync/)."""
    for text in printed:
        assert secret not in text, text
    database = folder / "callsync.duckdb"
    with duckdb.connect(str(database), read_only=True) as conn:
        columns = conn.execute("SELECT table_name, column_name FROM duckdb_columns() WHERE NOT internal").fetchall()
        for table, column in columns:
            found = conn.execute(f'SELECT count(*) FROM "{table}" WHERE CAST("{column}" AS VARCHAR) LIKE ?',
                                 [f"%{secret}%"]).fetchone()[0]
            assert not found, f"{table}.{column} holds it"
    files = [database.resolve(), *(path for path in (folder / ".callsync").rglob("*") if path.is_file())]
    assert len(files) > 1
    for path in files:
        assert secret.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("answer", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_http_is_a_retried_error_that_shows_no_query_string(answer):
    async with serve_raw(answer) as storage:
        async with CallTrackingClient(storage, "tok", ClientOptions(max_retries=1, **FAST)) as client:
            with pytest.raises(RetryableApiError, match="malformed HTTP answer") as raised:
                await client.download(f"{storage}/rec/0.mp3{SIGNED}", io.BytesIO())
            assert client.stats.retries == 1
    message = str(raised.value)
    assert message.startswith(f"GET {storage}/rec/0.mp3: ") and "\n" not in message and len(message) < 400
    assert "X-Amz" not in message and "SIGSECRET" not in message


async def test_a_malformed_answer_from_storage_fails_its_recording_with_the_link_redacted(tmp_path):
    async with serve_raw(MALFORMED["bad chunk size"]) as storage:

        async def calls(request: web.Request) -> web.Response:
            return one_call(f"{request.url.origin()}/rec/c1")

        async def recording(request: web.Request) -> web.Response:
            raise web.HTTPFound(f"{storage}/rec/0.mp3{SIGNED}")

        async with serve_app(api_app(calls, **{"/rec/c1": recording})) as base_url:
            write_config(tmp_path, base_url, api={"max_retries": 1})
            result = await run_cli("backfill", "--start", DAY, "--end", DAY, "--log-format", "json", cwd=tmp_path)
    assert result.code == 1, result.stderr
    assert "malformed HTTP answer" in result.stderr and "unexpected error" not in result.stderr
    database = tmp_path / "callsync.duckdb"
    [(status, error)] = rows(database, "SELECT status, last_error FROM media_jobs")
    assert status == "failed" and error.startswith(f"GET {storage}/rec/0.mp3: malformed HTTP answer"), error
    for text in (result.stdout, result.stderr, error, *rows(database, "SELECT error, CAST(summary AS VARCHAR) FROM runs")[0]):
        assert "SIGSECRET" not in (text or "") and "X-Amz" not in (text or "")


async def test_credentials_in_a_redirect_are_never_stored_or_shown(tmp_path):
    async def calls(request: web.Request) -> web.Response:
        origin = request.url.origin()
        rows = [{"id": call_id, "started_at": f"{DAY}T14:22:00Z", "recording_url": f"{origin}/rec/{call_id}"}
                for call_id in ("c1", "c2")]
        return web.json_response({"data": rows, "meta": {"page": 1, "per_page": 100, "total": 2}})

    async def recording(request: web.Request) -> web.Response:
        port = request.url.port
        if request.match_info["call_id"] == "c1":
            raise web.HTTPFound(f"http://bob:Hunter2Pw@127.0.0.1:{port}/store/c1")
        location = f"http://[127.0.0.1:{port}/store/c2?X-Amz-Signature=SIGSECRET0123"  # not a URL
        return web.Response(status=302, headers={"Location": location})

    async with serve_app(api_app(calls, **{"/rec/{call_id}": recording})) as base_url:
        write_config(tmp_path, base_url)
        result = await run_cli("backfill", "--start", DAY, "--end", DAY, cwd=tmp_path)
    assert result.code == 0, result.stderr
    jobs = dict(rows(tmp_path / "callsync.duckdb", "SELECT call_id, last_error FROM media_jobs WHERE kind = 'recording'"))
    assert jobs["c1"] == f"refused: http://***@127.0.0.1:{base_url.rsplit(':', 1)[1]}/store/c1: carries credentials" \
        " (userinfo before the host); refused"
    assert jobs["c2"].startswith("refused: not a valid URL: 'http://[127.0.0.1:") and "X-Amz" not in jobs["c2"]
    for secret in ("Hunter2Pw", "SIGSECRET0123"):
        assert_kept_secret(secret, tmp_path, result.stdout, result.stderr)


ECHOED = "tok_SECRET_abc123"


async def test_a_token_the_api_echoes_back_is_masked_in_output_logs_and_database(tmp_path):
    """Echoed in a 500's body (numbers), in a redirect's Location (a recording) and in a 401's body."""

    async def calls(request: web.Request) -> web.Response:
        return one_call(f"{request.url.origin()}/rec/c1")

    async def numbers(request: web.Request) -> web.Response:
        return web.Response(status=500, text=f"upstream error; request headers: {dict(request.headers)}")

    async def recording(request: web.Request) -> web.Response:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        raise web.HTTPFound(f"http://127.0.0.1:1/{token}/c1.mp3")  # nothing listens on port 1

    async def rejected(request: web.Request) -> web.Response:
        return web.json_response({"message": f"bad token {request.headers['Authorization']}"}, status=401)

    app = api_app(calls, **{"/rec/c1": recording, "/api/call-tracking/numbers": numbers})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    args = ("backfill", "--start", DAY, "--end", DAY, "-v", "--log-format", "json")
    async with serve_app(app) as base_url:
        write_config(tmp_path / "a", base_url, api={"max_retries": 1})
        failed = await run_cli(*args, cwd=tmp_path / "a", token=ECHOED)
        status = await run_cli("status", cwd=tmp_path / "a", token=ECHOED)
    assert failed.code == 1, failed.stderr
    assert "HTTP 500: upstream error" in failed.stderr and "'Authorization': 'Bearer ***'" in failed.stderr
    [(error,)] = rows(tmp_path / "a" / "callsync.duckdb", "SELECT last_error FROM media_jobs")
    assert error.startswith("GET http://127.0.0.1:1/***/c1.mp3: "), error
    assert_kept_secret(ECHOED, tmp_path / "a", failed.stdout, failed.stderr, status.stdout, status.stderr)

    refusing = web.Application()
    for path in ("calls", "numbers", "flows"):
        refusing.router.add_get(f"/api/call-tracking/{path}", rejected)
    async with serve_app(refusing) as base_url:
        write_config(tmp_path / "b", base_url)
        refused = await run_cli("backfill", "--start", DAY, "--end", DAY, cwd=tmp_path / "b", token=ECHOED)
    assert refused.code == 3, refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        "callsync: error: authentication failed (HTTP 401): the API token was rejected: bad token Bearer ***"
    )
    assert_kept_secret(ECHOED, tmp_path / "b", refused.stdout, refused.stderr)
