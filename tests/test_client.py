"""The real client against the real sandbox over loopback: endpoints, paging, faults, auth."""

from __future__ import annotations

import asyncio
import hashlib
import io
import socket
from datetime import timedelta

import pytest
from aiohttp import web

from pipeline.client import CallTrackingClient, ClientOptions
from pipeline.errors import (
    ApiError,
    ApiTimeoutError,
    ApiUnreachableError,
    AuthError,
    NotFoundError,
    RetryableApiError,
    UncertainWriteError,
    UnsafeUrlError,
)
from pipeline.sandbox import run_sandbox
from tests.conftest import TOKEN, serve_app

FAST = dict(backoff_initial_s=0.01, backoff_max_s=0.05)


def client_for(sandbox, token: str = TOKEN, **options) -> CallTrackingClient:
    return CallTrackingClient(sandbox.base_url, token, ClientOptions(**{**FAST, **options}))


def api_requests(sandbox, path_suffix: str = ""):
    return [r for r in sandbox.requests if r.host == "api" and r.path.endswith(path_suffix)]


async def test_list_calls_pages_a_window_exactly_once(sandbox):
    today = sandbox.data.today
    start = today - timedelta(days=3)
    expected = {call["id"] for call in sandbox.data.calls_between(start, today)}
    async with client_for(sandbox) as client:
        first = await client.list_calls(start, today, per_page=100)
        assert first.meta.total == len(expected)
        pages = -(-first.meta.total // first.meta.per_page)
        seen = [call["id"] for call in first.calls]
        for page in range(2, pages + 1):
            seen += [call["id"] for call in (await client.list_calls(start, today, page=page, per_page=100)).calls]
    assert sorted(seen) == sorted(expected)


async def test_calls_match_the_reference_shape(sandbox):
    async with client_for(sandbox) as client:
        listing = await client.list_calls(sandbox.data.today - timedelta(days=9), sandbox.data.today, per_page=5)
    call = listing.calls[0]
    raw = sandbox.data.call(call["id"])
    assert call["started_at"].tzinfo is not None
    assert call["started_at"].strftime("%Y-%m-%dT%H:%M:%SZ") == raw["started_at"]
    assert {k: v for k, v in call.items() if k != "started_at"} == {k: v for k, v in raw.items() if k != "started_at"}
    assert listing.meta.page == 1 and listing.meta.per_page == 5


async def test_per_page_above_100_is_clamped_and_meta_says_so(sandbox):
    async with client_for(sandbox) as client:
        listing = await client.list_calls(sandbox.data.today - timedelta(days=9), sandbox.data.today, per_page=500)
    assert listing.meta.per_page == 100
    assert len(listing.calls) == 100


async def test_filters_are_sent(sandbox):
    async with client_for(sandbox) as client:
        listing = await client.list_calls(
            sandbox.data.today - timedelta(days=9), sandbox.data.today, outcome="voicemail", per_page=100
        )
    assert listing.calls and {call["outcome"] for call in listing.calls} == {"voicemail"}


async def test_numbers_purchase_and_flows(sandbox):
    async with client_for(sandbox) as client:
        numbers = await client.all_numbers(per_page=5)
        assert len(numbers) == len(sandbox.data.numbers)
        assert all(number.created_at.tzinfo for number in numbers)
        bought = await client.purchase_number("local", area_code="415", display_name="SF Office Line")
        assert bought.type == "local" and bought.phone_number.startswith("+1415")
        assert len(await client.all_numbers()) == len(numbers) + 1

        flows = await client.list_flows()
        assert flows and all(flow.raw["id"] == flow.id for flow in flows)
        created = await client.create_flow({"name": "After hours", "steps": [{"type": "voicemail"}]})
        updated = await client.update_flow(created.id, {"name": "After hours v2"})
        assert updated.name == "After hours v2" and updated.raw["steps"] == [{"type": "voicemail"}]
        await client.delete_flow(created.id)
        assert created.id not in {flow.id for flow in await client.list_flows()}
        with pytest.raises(NotFoundError):
            await client.delete_flow(created.id)


async def test_recording_streams_to_a_file_byte_exact(sandbox, tmp_path):
    call = next(c for c in sandbox.data.calls_between(sandbox.data.today - timedelta(days=9), sandbox.data.today) if c["recording_url"])
    target = tmp_path / "r.mp3"
    async with client_for(sandbox) as client:
        with target.open("wb") as sink:
            download = await client.download(call["recording_url"], sink)
    expected = sandbox.data.recording_bytes(call["id"])
    assert target.read_bytes() == expected
    assert download.sha256 == hashlib.sha256(expected).hexdigest()
    assert download.content_type == "audio/mpeg"


async def test_transcript_pending_then_ready(sandbox):
    calls = sandbox.data.calls_between(sandbox.data.today - timedelta(days=9), sandbox.data.today)
    ready = next(c for c in calls if c["transcript_url"])
    async with client_for(sandbox) as client:
        outcomes = {}
        for call in (c for c in calls if c["transcript_url"]):
            try:
                await client.get_transcript(call["transcript_url"])
                outcomes[call["id"]] = "ready"
            except NotFoundError:
                outcomes[call["id"]] = "pending"
        assert "pending" in outcomes.values(), "the sandbox should hold some transcripts back"
        pending = [call_id for call_id, outcome in outcomes.items() if outcome == "pending"]
        sandbox.data.make_transcripts_ready()
        transcript = await client.get_transcript(client.transcript_url(pending[0]))
        assert transcript.call_id == pending[0] and transcript.segments
        assert all(segment.text for segment in transcript.segments)
        assert (await client.get_transcript(ready["transcript_url"])).segments


async def test_bad_token_is_an_auth_error_and_never_echoed(sandbox):
    secret = "not-a-real-token-123"
    async with client_for(sandbox, token=secret) as client:
        with pytest.raises(AuthError) as caught:
            await client.list_calls()
    assert "401" in str(caught.value) and "token" in str(caught.value)
    assert secret not in str(caught.value) and secret not in repr(client)
    assert len(api_requests(sandbox, "/calls")) == 1, "a 401 is never retried"


async def test_missing_scope_names_the_scope(sandbox):
    async with client_for(sandbox, token="sandbox-readonly") as client:
        with pytest.raises(AuthError, match="calls:write"):
            await client.create_flow({"name": "x"})
    async with client_for(sandbox, token="sandbox-noscope") as client:
        with pytest.raises(AuthError, match="calls:read"):
            await client.list_calls()


async def test_other_4xx_are_not_retried(sandbox):
    async with client_for(sandbox) as client:
        with pytest.raises(ApiError) as caught:
            await client.purchase_number("satellite")
    assert caught.value.status == 400
    assert len([r for r in api_requests(sandbox, "/numbers") if r.method == "POST"]) == 1


async def test_server_errors_and_dropped_connections_are_retried(sandbox):
    sandbox.faults.error_rate = 0.3
    sandbox.faults.drop_rate = 0.1
    async with client_for(sandbox, max_retries=20) as client:
        for _ in range(20):
            listing = await client.list_calls(sandbox.data.today, sandbox.data.today, per_page=10)
            assert listing.meta.total == len(sandbox.data.calls_between(sandbox.data.today, sandbox.data.today))
        assert client.stats.retries > 0
    statuses = {r.status for r in api_requests(sandbox, "/calls")}
    assert statuses & {500, 502, 503}


@pytest.mark.parametrize("max_retries", [0, 2])
async def test_retries_give_up_after_max_retries(sandbox, max_retries):
    # The first attempt runs outside tenacity: its failure must still count as attempt 1.
    sandbox.faults.error_rate = 1.0
    async with client_for(sandbox, max_retries=max_retries) as client:
        with pytest.raises(RetryableApiError, match="HTTP 50"):
            await client.list_calls()
        assert client.stats.retries == max_retries
    assert len(api_requests(sandbox, "/calls")) == max_retries + 1


async def test_retry_after_is_honoured(sandbox):
    sandbox.faults.rate_limit = 1.0
    sandbox.faults.rate_burst = 1
    async with client_for(sandbox, max_concurrency=1) as client:
        for _ in range(3):
            await client.list_calls(sandbox.data.today, sandbox.data.today, per_page=10)
        assert client.stats.rate_limited >= 1
    log = api_requests(sandbox, "/calls")
    for limited, following in zip(log, log[1:]):
        if limited.status == 429:
            retry_after = float(limited.retry_after)
            assert following.started - limited.finished >= retry_after - 0.05


async def test_redirect_to_storage_host_drops_the_token(sandbox, tmp_path):
    sandbox.faults.redirect_recordings = True
    call = next(c for c in sandbox.data.calls_between(sandbox.data.today - timedelta(days=9), sandbox.data.today) if c["recording_url"])
    async with client_for(sandbox) as client:
        sink = io.BytesIO()
        await client.download(call["recording_url"], sink)
    assert sink.getvalue() == sandbox.data.recording_bytes(call["id"])
    storage = [r for r in sandbox.requests if r.host == "storage"]
    assert storage, "the recording should have come from the storage host"
    assert all(r.authorization is None for r in storage)
    assert api_requests(sandbox, "/recording")[0].authorization == f"Bearer {TOKEN}"


async def test_foreign_hosts_can_be_refused(sandbox):
    foreign = f"{sandbox.storage_url}/recordings/call_x.mp3"
    async with client_for(sandbox, allow_foreign_hosts=False) as client:
        with pytest.raises(UnsafeUrlError, match="allow_foreign_hosts"):
            await client.download(foreign, io.BytesIO())
        with pytest.raises(UnsafeUrlError):
            await client.download("file:///etc/passwd", io.BytesIO())
    assert not sandbox.requests


async def test_requests_per_second_cap_holds(sandbox):
    async with client_for(sandbox, requests_per_second=20, max_concurrency=8) as client:
        import asyncio

        await asyncio.gather(*(client.list_calls(sandbox.data.today, sandbox.data.today, per_page=1) for _ in range(30)))
    starts = sorted(r.started for r in api_requests(sandbox, "/calls"))
    for index, start in enumerate(starts):
        in_one_second = [s for s in starts[index:] if s < start + 1.0]
        assert len(in_one_second) <= 21
    assert starts[-1] - starts[0] >= 29 / 20 - 0.1


# --- a POST is sent again only when the API did not act on it ------------------------------


def posts(sandbox, path_suffix: str):
    return [r for r in api_requests(sandbox, path_suffix) if r.method == "POST"]


async def test_a_post_dropped_after_the_server_acted_is_not_sent_again(sandbox):
    sandbox.faults.drop_after_post_rate = 1.0
    before = len(sandbox.data.numbers)
    async with client_for(sandbox) as client:
        with pytest.raises(UncertainWriteError, match="may or may not have taken effect"):
            await client.purchase_number("local")
        with pytest.raises(UncertainWriteError):
            await client.create_flow({"name": "Lost answer"})
    assert [r.status for r in posts(sandbox, "/numbers")] == [0], "dropped: no answer, and never sent again"
    assert len(sandbox.data.numbers) == before + 1, "the server did act on it"
    assert [r.status for r in posts(sandbox, "/flows")] == [0]


async def test_a_post_answered_with_a_5xx_is_not_sent_again(sandbox):
    sandbox.faults.error_rate = 1.0
    async with client_for(sandbox) as client:
        with pytest.raises(UncertainWriteError, match="HTTP 5"):
            await client.purchase_number("local")
    assert len(posts(sandbox, "/numbers")) == 1


async def test_a_post_that_timed_out_is_not_sent_again(sandbox):
    sandbox.faults.latency_ms = 600  # the sandbox acts at once and holds the answer this long
    before = len(sandbox.data.numbers)
    async with client_for(sandbox, timeout_s=0.1) as client:
        with pytest.raises(UncertainWriteError, match="Timeout"):
            await client.purchase_number("toll_free")
    assert len(posts(sandbox, "/numbers")) == 1
    assert len(sandbox.data.numbers) == before + 1


async def test_a_rate_limited_post_is_sent_again(sandbox):
    sandbox.faults.update(rate_limit=2.0, rate_burst=1)  # one token, then 429 with Retry-After: 1
    async with client_for(sandbox) as client:
        await client.all_numbers()
        bought = await client.purchase_number("local")
    assert [r.status for r in posts(sandbox, "/numbers")] == [429, 201]
    assert sum(number["id"] == bought.id for number in sandbox.data.numbers) == 1


async def test_a_post_whose_connection_failed_before_sending_is_sent_again(small_data):
    with socket.socket() as probe:  # a port nobody listens on yet: connecting is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Refused until the sandbox starts: keep the circuit breaker from calling the API gone.
    options = ClientOptions(backoff_initial_s=0.01, backoff_max_s=0.02, max_retries=500, max_connection_failures=10_000)
    async with CallTrackingClient(f"http://127.0.0.1:{port}", TOKEN, options) as client:
        purchase = asyncio.create_task(client.purchase_number("local", display_name="Once"))
        while client.stats.retries == 0 and not purchase.done():  # refused at least once
            await asyncio.sleep(0.005)
        async with run_sandbox(data=small_data, port=port) as sandbox:
            bought = await purchase
    assert client.stats.retries >= 1 and [r.status for r in posts(sandbox, "/numbers")] == [201]
    assert [n["id"] for n in sandbox.data.numbers if n["display_name"] == "Once"] == [bought.id]


async def test_patch_and_delete_are_still_retried(sandbox):
    flow_id = next(iter(sandbox.data.flows))
    sandbox.faults.error_rate = 1.0
    async with client_for(sandbox, max_retries=2) as client:
        with pytest.raises(RetryableApiError) as caught:
            await client.update_flow(flow_id, {"name": "x"})
        assert not isinstance(caught.value, UncertainWriteError)
        with pytest.raises(RetryableApiError):
            await client.delete_flow(flow_id)
    methods = [r.method for r in api_requests(sandbox, f"/flows/{flow_id}")]
    assert methods == ["PATCH"] * 3 + ["DELETE"] * 3


async def test_a_host_that_never_answers_trips_the_breaker_after_give_up_after_s(sandbox):
    sandbox.faults.latency_ms = 60_000  # connections open, no answer
    async with client_for(sandbox, timeout_s=60, give_up_after_s=0.5) as client:
        with pytest.raises(ApiUnreachableError, match="no answer for"):
            await asyncio.gather(*(client.list_calls(page=page) for page in (1, 2)))  # slow start: 2 at once
        with pytest.raises(ApiUnreachableError):  # and it stays open for the rest of the run
            await client.list_numbers()
    assert len(api_requests(sandbox, "/calls")) == 2 and not api_requests(sandbox, "/numbers")


async def test_a_request_that_times_out_twice_gives_up_without_spending_every_retry(sandbox):
    sandbox.faults.latency_ms = 2_000
    async with client_for(sandbox, timeout_s=0.2, max_retries=6) as client:
        with pytest.raises(ApiTimeoutError):
            await client.list_calls()
    assert len(api_requests(sandbox, "/calls")) == 2


async def test_a_refused_connection_trips_the_breaker_after_a_few_tries():
    async with CallTrackingClient("http://127.0.0.1:9", TOKEN, ClientOptions(**FAST)) as client:
        with pytest.raises(ApiUnreachableError, match=r"127\.0\.0\.1:9 is unreachable: 4 connection failures"):
            await client.list_calls()
        assert client.stats.requests == 4


DEEP_JSON = b"[" * 60_000  # nesting past the JSON parser's recursion limit, within the error body's 64 KB cap


async def test_a_deeply_nested_error_body_leaves_the_status_its_meaning():
    """A 500 is still retried and a 404 is still not found, whatever JSON their bodies hold."""
    answered: list[int] = []

    async def calls(request: web.Request) -> web.Response:
        status = 500 if not answered else 200
        answered.append(status)
        if status == 500:
            return web.Response(status=500, body=DEEP_JSON, content_type="application/json")
        return web.json_response({"data": [], "meta": {"page": 1, "per_page": 100, "total": 0}})

    async def transcript(request: web.Request) -> web.Response:
        return web.Response(status=404, body=DEEP_JSON, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/call-tracking/calls", calls)
    app.router.add_get("/api/call-tracking/calls/c1/transcript", transcript)
    async with serve_app(app) as base_url:
        async with CallTrackingClient(base_url, TOKEN, ClientOptions(**FAST)) as client:
            listing = await client.list_calls()
            with pytest.raises(NotFoundError, match="HTTP 404 not found"):
                await client.get_transcript(f"{base_url}/api/call-tracking/calls/c1/transcript")
    assert listing.calls == [] and answered == [500, 200]


async def test_an_error_body_reaches_the_message_without_control_characters():
    async def calls(request: web.Request) -> web.Response:
        return web.Response(status=404, text="\x1b]0;owned\x07\x1b[2J gone\r\nX-Injected: 1")

    app = web.Application()
    app.router.add_get("/api/call-tracking/calls", calls)
    async with serve_app(app) as base_url:
        async with CallTrackingClient(base_url, TOKEN, ClientOptions(**FAST)) as client:
            with pytest.raises(NotFoundError) as raised:
                await client.list_calls()
    message = str(raised.value)
    assert "gone X-Injected: 1" in message and not any(ord(character) < 32 for character in message)
