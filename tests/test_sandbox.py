"""The offline sandbox of the Call Tracking API, exercised over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import Counter
from datetime import date, datetime, timedelta, timezone

import aiohttp
import numpy as np
import pytest

from pipeline.sandbox import TOKENS, Faults, SandboxData, run_sandbox
from tests.conftest import run_cli, start_cli

API = "/api/call-tracking"
CALL_FIELDS = [
    "id", "tracking_number", "caller_number", "duration_seconds", "outcome", "campaign_id", "affiliate_id",
    "source", "caller_city", "caller_state", "recording_url", "transcript_url", "sentiment", "started_at",
]
NUMBER_FIELDS = ["id", "phone_number", "display_name", "type", "status", "call_flow_id", "recording_enabled",
                 "created_at"]
ISO_Z = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
E164 = re.compile(r"\+1\d{10}")
AUTH = {"Authorization": "Bearer sandbox-token"}


def small_data(seed: int = 7, calls: int = 3_000, days: int = 30) -> SandboxData:
    return SandboxData.generate(seed=seed, calls=calls, days=days)


@pytest.fixture
async def sb():
    async with run_sandbox(data=small_data(), faults=Faults()) as sandbox:
        yield sandbox


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def get_json(http, url, params=None, token="sandbox-token"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url, params=params, headers=headers) as resp:
        return resp.status, await resp.json()


async def all_pages(http, sb, per_page=100, **params):
    ids, page, total = [], 1, None
    while True:
        status, body = await get_json(http, f"{sb.base_url}{API}/calls",
                                      {**params, "page": str(page), "per_page": str(per_page)})
        assert status == 200
        total = body["meta"]["total"]
        if not body["data"]:
            return ids, total
        ids += [row["id"] for row in body["data"]]
        page += 1


def by_day(calls, first: date, last: date):
    return [c for c in calls if first.isoformat() <= c["started_at"][:10] <= last.isoformat()]


# ----- shapes -----


async def test_numbers_listing_shape(sb, http):
    status, body = await get_json(http, f"{sb.base_url}{API}/numbers")
    assert status == 200
    assert body["meta"] == {"page": 1, "per_page": 20, "total": 12}
    flow_ids = set(sb.data.flows)
    for number in body["data"]:
        assert list(number) == NUMBER_FIELDS
        assert re.fullmatch(r"num_[0-9a-z]{6}", number["id"])
        assert E164.fullmatch(number["phone_number"])
        assert number["type"] in ("local", "toll_free", "vanity")
        assert number["call_flow_id"] in flow_ids and ISO_Z.fullmatch(number["created_at"])
    assert "Google Ads Pool - 1" in {n["display_name"] for n in body["data"]}
    assert len({n["call_flow_id"] for n in body["data"]}) == 4


async def test_purchase_number(sb, http):
    url = f"{sb.base_url}{API}/numbers"
    async with http.post(url, json={"type": "local", "area_code": "415", "display_name": "SF Office"},
                         headers=AUTH) as resp:
        assert resp.status == 201
        created = await resp.json()
    assert list(created) == ["id", "phone_number", "type", "status"]
    assert created["phone_number"].startswith("+1415") and created["status"] == "active"
    assert sb.data.numbers[-1]["display_name"] == "SF Office"
    async with http.post(url, json={"type": "satellite"}, headers=AUTH) as resp:
        assert resp.status == 400 and (await resp.json())["error"] == "bad_request"


async def test_vanity_numbers_run_out_with_a_409(sb, http):
    url = f"{sb.base_url}{API}/numbers"
    statuses = []
    for _ in range(3):  # three vanity words; the seeded account already holds one
        async with http.post(url, json={"type": "vanity"}, headers=AUTH) as resp:
            statuses.append((resp.status, (await resp.json()).get("message")))
    assert [status for status, _ in statuses] == [201, 201, 409]
    assert statuses[-1][1] == "no vanity number is available"


async def test_a_post_can_be_acted_on_and_left_unanswered(sb, http):
    sb.faults.update(drop_after_post_rate=1.0)
    before = len(sb.data.numbers)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.post(f"{sb.base_url}{API}/numbers", json={"type": "local"}, headers=AUTH):
            pass
    assert len(sb.data.numbers) == before + 1
    assert [(r.method, r.status) for r in sb.requests] == [("POST", 0)]
    status, listing = await get_json(http, f"{sb.base_url}{API}/numbers")  # GETs are answered
    assert status == 200 and listing["meta"]["total"] == before + 1


async def test_calls_listing_shape(sb, http):
    status, body = await get_json(http, f"{sb.base_url}{API}/calls")
    assert status == 200 and body["meta"] == {"page": 1, "per_page": 20, "total": sb.data.calls_total}
    for call in body["data"]:
        assert list(call) == CALL_FIELDS
        assert re.fullmatch(r"call_[0-9a-z]+", call["id"])
        assert E164.fullmatch(call["tracking_number"]) and E164.fullmatch(call["caller_number"])
        assert call["outcome"] in ("qualified", "unqualified", "voicemail", "abandoned")
        assert call["sentiment"] in ("positive", "neutral", "negative")
        assert call["campaign_id"].startswith("camp_") and call["affiliate_id"].startswith("aff_")
        assert isinstance(call["duration_seconds"], int) and ISO_Z.fullmatch(call["started_at"])
        if call["recording_url"]:
            assert call["recording_url"] == f"{sb.base_url}{API}/calls/{call['id']}/recording"
            assert call["transcript_url"] == f"{sb.base_url}{API}/calls/{call['id']}/transcript"
        else:
            assert call["transcript_url"] is None
        assert call == sb.data.call(call["id"])


async def test_per_page_default_and_clamp(sb, http):
    _, body = await get_json(http, f"{sb.base_url}{API}/calls", {"per_page": "500"})
    assert body["meta"]["per_page"] == 100 and len(body["data"]) == 100
    _, body = await get_json(http, f"{sb.base_url}{API}/calls", {"per_page": "7", "page": "3"})
    assert body["meta"] == {"page": 3, "per_page": 7, "total": sb.data.calls_total} and len(body["data"]) == 7


async def test_paging_a_window_yields_each_id_once(sb, http):
    first, last = sb.data.today - timedelta(days=9), sb.data.today - timedelta(days=2)
    ids, total = await all_pages(http, sb, start_date=first.isoformat(), end_date=last.isoformat())
    expected = {c["id"] for c in sb.data.calls_between(first, last)}
    assert len(ids) == len(set(ids)) == total == len(expected) and set(ids) == expected


async def test_page_past_the_end_is_empty_with_total(sb, http):
    _, body = await get_json(http, f"{sb.base_url}{API}/calls", {"page": "999", "per_page": "100"})
    assert body["data"] == [] and body["meta"]["total"] == sb.data.calls_total


async def test_reversed_window_is_empty(sb, http):
    params = {"start_date": sb.data.today.isoformat(), "end_date": (sb.data.today - timedelta(days=3)).isoformat()}
    for extra in ({}, {"outcome": "qualified"}):
        status, body = await get_json(http, f"{sb.base_url}{API}/calls", {**params, **extra})
        assert status == 200 and body["data"] == [] and body["meta"]["total"] == 0


async def test_date_filter_is_inclusive_on_both_ends(sb, http):
    everything = sb.data.calls_between(None, None)
    day = sb.data.today - timedelta(days=5)
    ids, total = await all_pages(http, sb, start_date=day.isoformat(), end_date=day.isoformat())
    assert set(ids) == {c["id"] for c in by_day(everything, day, day)} and total > 0
    first, last = day - timedelta(days=3), day
    ids, _ = await all_pages(http, sb, start_date=first.isoformat(), end_date=last.isoformat())
    assert set(ids) == {c["id"] for c in by_day(everything, first, last)}
    _, open_start = await get_json(http, f"{sb.base_url}{API}/calls", {"end_date": day.isoformat()})
    assert open_start["meta"]["total"] == len(by_day(everything, date.min, day))


async def test_filters(sb, http):
    everything = sb.data.calls_between(None, None)
    number = sb.data.numbers[3]
    campaign = everything[0]["campaign_id"]
    cases = [
        ({"number_id": number["id"]}, lambda c: c["tracking_number"] == number["phone_number"]),
        ({"campaign_id": campaign}, lambda c: c["campaign_id"] == campaign),
        ({"outcome": "voicemail"}, lambda c: c["outcome"] == "voicemail"),
        ({"outcome": "qualified", "campaign_id": campaign}, lambda c: c["outcome"] == "qualified"
         and c["campaign_id"] == campaign),
        ({"campaign_id": "camp_nope00"}, lambda c: False),
    ]
    for params, keep in cases:
        ids, total = await all_pages(http, sb, **params)
        assert set(ids) == {c["id"] for c in everything if keep(c)} and total == len(ids), params


# ----- errors -----


@pytest.mark.parametrize("params", [
    {"start_date": "2026-13-01"}, {"end_date": "yesterday"}, {"start_date": "20260301"},
    {"page": "0"}, {"per_page": "abc"}, {"outcome": "maybe"},
])
async def test_malformed_params_are_400(sb, http, params):
    status, body = await get_json(http, f"{sb.base_url}{API}/calls", params)
    assert status == 400 and body["error"] == "bad_request" and body["message"]


async def test_auth_errors(sb, http):
    url = f"{sb.base_url}{API}/calls"
    for token in (None, "wrong-token"):
        status, body = await get_json(http, url, token=token)
        assert status == 401 and body["error"] == "unauthorized" and body["message"]
    status, body = await get_json(http, url, token="sandbox-noscope")
    assert (status, body) == (403, {"error": "forbidden", "message": "missing scope calls:read"})
    status, _ = await get_json(http, url, token="sandbox-readonly")
    assert status == 200
    async with http.post(f"{sb.base_url}{API}/flows", json={"name": "x"},
                         headers={"Authorization": "Bearer sandbox-readonly"}) as resp:
        assert resp.status == 403
        assert await resp.json() == {"error": "forbidden", "message": "missing scope calls:write"}
    assert TOKENS["sandbox-token"] == {"calls:read", "calls:write"}


async def test_unknown_ids_are_404(sb, http):
    for path in ("/calls/call_zzzzzzzz/recording", "/calls/call_zzzzzzzz/transcript", "/calls/nonsense/recording",
                 "/nothing-here"):
        status, body = await get_json(http, f"{sb.base_url}{API}{path}")
        assert status == 404 and body["error"] == "not_found", path
    for method in ("PATCH", "DELETE"):
        async with http.request(method, f"{sb.base_url}{API}/flows/flow_nope00", json={}, headers=AUTH) as resp:
            assert resp.status == 404 and (await resp.json())["error"] == "not_found"


# ----- recordings, transcripts, flows -----


def first_call(data: SandboxData, recorded: bool) -> dict:
    return next(c for c in data.calls_between(None, None) if (c["recording_url"] is not None) == recorded)


async def test_recording(sb, http):
    call = first_call(sb.data, recorded=True)
    async with http.get(call["recording_url"], headers=AUTH) as resp:
        assert resp.status == 200 and resp.content_type == "audio/mpeg"
        body = await resp.read()
    assert body.startswith(b"ID3") and body == sb.data.recording_bytes(call["id"])
    assert len(body) == 2_000 + call["duration_seconds"] * 40
    unrecorded = first_call(sb.data, recorded=False)
    status, error = await get_json(http, f"{sb.base_url}{API}/calls/{unrecorded['id']}/recording")
    assert status == 404 and error["error"] == "not_found"


async def test_transcript_and_pending(sb, http):
    recent = sb.data.calls_between(sb.data.today - timedelta(days=1), sb.data.today)
    pending = [c["id"] for c in recent if sb.data.transcript_pending(c["id"])]
    ready = next(c for c in recent if c["transcript_url"] and c["id"] not in pending)
    assert pending and len(pending) < 0.2 * len(recent)
    status, body = await get_json(http, ready["transcript_url"])
    assert status == 200 and list(body) == ["call_id", "segments"] and body["call_id"] == ready["id"]
    assert 3 <= len(body["segments"]) <= 12
    stamps = [s["timestamp"] for s in body["segments"]]
    assert stamps == sorted(stamps) and all(isinstance(t, float) for t in stamps)
    assert {s["speaker"] for s in body["segments"]} <= {"ai", "caller", "agent"}
    status, body = await get_json(http, f"{sb.base_url}{API}/calls/{pending[0]}/transcript")
    assert (status, body) == (404, {"error": "not_found", "message": "transcript not ready"})
    assert set(sb.data.make_transcripts_ready()) == set(pending)
    status, body = await get_json(http, f"{sb.base_url}{API}/calls/{pending[0]}/transcript")
    assert status == 200 and body["segments"]


def test_transcript_text_mentions_the_business():
    data = small_data(calls=2_000)
    texts = " ".join(s["text"] for c in data.calls_between(None, None)[:300] if (t := data.transcript(c["id"]))
                     for s in t["segments"])
    for phrase in ("pricing", "appointment", "$", "Brightline Home Services"):
        assert phrase in texts


async def test_flows_crud(sb, http):
    url = f"{sb.base_url}{API}/flows"
    status, listing = await get_json(http, url)
    assert status == 200 and listing["meta"]["total"] == 4 and len(listing["data"]) == 4
    assert all(isinstance(f["steps"], list) and f["steps"] for f in listing["data"])
    async with http.post(url, json={"name": "Spanish Line", "steps": [{"type": "greeting"}]}, headers=AUTH) as resp:
        assert resp.status == 201
        flow = await resp.json()
    assert flow["id"].startswith("flow_") and flow["created_at"] == flow["updated_at"]
    async with http.patch(f"{url}/{flow['id']}", json={"description": "es", "id": "hijack"}, headers=AUTH) as resp:
        patched = await resp.json()
    assert resp.status == 200 and patched["id"] == flow["id"] and patched["name"] == "Spanish Line"
    assert patched["description"] == "es" and patched["updated_at"] > flow["updated_at"]
    async with http.delete(f"{url}/{flow['id']}", headers=AUTH) as resp:
        assert resp.status == 204
    _, listing = await get_json(http, url)
    assert flow["id"] not in {f["id"] for f in listing["data"]}
    async with http.post(url, json={"steps": []}, headers=AUTH) as resp:
        assert resp.status == 400


async def test_a_flow_that_numbers_use_cannot_be_deleted(sb, http):
    in_use = sb.data.numbers[0]["call_flow_id"]
    users = [number["id"] for number in sb.data.numbers if number["call_flow_id"] == in_use]
    async with http.delete(f"{sb.base_url}{API}/flows/{in_use}", headers=AUTH) as resp:
        assert resp.status == 409
        body = await resp.json()
    assert body["error"] == "conflict" and in_use in body["message"] and all(u in body["message"] for u in users)
    assert in_use in sb.data.flows


# ----- faults -----


async def test_latency_shows_in_request_log(sb, http):
    sb.faults.latency_ms = 60
    await get_json(http, f"{sb.base_url}{API}/numbers")
    record = sb.requests[-1]
    assert record.host == "api" and record.status == 200 and record.finished - record.started >= 0.06


async def test_latency_holds_an_answer_made_when_the_request_arrived(sb, http):
    # The latency is the API's whole answer time, its own work included. (Made after the
    # wait, the answers to a burst of requests queued behind each other's work on top of
    # it: a 50 ms run of 200k calls took ~6% longer.) A call added while the answer is
    # held is not in it.
    sb.faults.latency_ms = 500
    day = sb.data.today
    calls_before = sb.data.query_calls(day, day)[1]
    params = {"start_date": day.isoformat(), "end_date": day.isoformat(), "per_page": 100}
    asked = asyncio.create_task(get_json(http, f"{sb.base_url}{API}/calls", params))
    while not any(record.path.endswith("/calls") and not record.finished for record in sb.requests):
        await asyncio.sleep(0.005)  # waits on the server's own request log
    sb.data.add_calls(1, day)
    status, listing = await asked
    assert status == 200 and listing["meta"]["total"] == calls_before
    assert sb.data.query_calls(day, day)[1] == calls_before + 1
    record = sb.requests[-1]
    assert record.finished - record.started >= 0.5


async def test_error_rate_answers_5xx(sb, http):
    sb.faults.error_rate = 1.0
    statuses = set()
    for _ in range(12):
        async with http.get(f"{sb.base_url}{API}/numbers", headers=AUTH) as resp:
            statuses.add(resp.status)
            await resp.read()
    assert statuses <= {500, 502, 503} and len(statuses) >= 2


async def test_drop_rate_disconnects(sb, http):
    sb.faults.drop_rate = 1.0
    with pytest.raises(aiohttp.ClientConnectionError):
        await get_json(http, f"{sb.base_url}{API}/numbers")
    assert sb.requests[-1].status == 0 and sb.requests[-1].finished > 0


async def test_rate_limit_per_token(sb, http):
    sb.faults.update(rate_limit=1, rate_burst=2)
    url = f"{sb.base_url}{API}/numbers"
    statuses = [(await get_json(http, url))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    async with http.get(url, headers=AUTH) as resp:
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["error"] == "rate_limited"
    assert (await get_json(http, url, token="sandbox-readonly"))[0] == 200  # separate bucket
    limited = [r for r in sb.requests if r.status == 429]
    assert len(limited) == 2 and all(int(r.retry_after) >= 1 for r in limited)
    status, stats = await get_json(http, f"{sb.base_url}/_admin/stats", token=None)
    assert stats["rate_limited"] == 2 and stats["requests"]["429"] == 2


async def test_redirected_recording_comes_from_the_storage_host(sb, http):
    sb.faults.redirect_recordings = True
    call = first_call(sb.data, recorded=True)
    async with http.get(call["recording_url"], headers=AUTH, allow_redirects=False) as resp:
        assert resp.status == 302
        location = resp.headers["Location"]
    assert location.startswith(f"{sb.storage_url}/recordings/{call['id']}.mp3?sig=")
    async with http.get(location, headers={"Authorization": "Bearer leaked"}) as resp:
        assert resp.status == 200 and resp.content_type == "audio/mpeg"
        assert await resp.read() == sb.data.recording_bytes(call["id"])
    async with http.get(call["recording_url"], headers=AUTH) as resp:  # followed by the client
        assert resp.status == 200 and str(resp.url) == location
    storage = [r for r in sb.requests if r.host == "storage"]
    assert [r.status for r in storage] == [200, 200] and storage[0].authorization == "Bearer leaked"
    assert storage[0].token == "leaked"  # recorded, never checked: storage needs no auth
    async with http.get(f"{sb.storage_url}/recordings/{call['id']}.mp3?sig=forged") as resp:
        assert resp.status == 403


async def test_foreign_recording_urls_point_at_storage(sb, http):
    sb.faults.foreign_recording_urls = True
    _, body = await get_json(http, f"{sb.base_url}{API}/calls", {"per_page": "50"})
    recorded = [c for c in body["data"] if c["recording_url"]]
    assert recorded and all(c["recording_url"].startswith(sb.storage_url) for c in recorded)
    async with http.get(recorded[0]["recording_url"]) as resp:  # no token needed there
        assert resp.status == 200 and (await resp.read()).startswith(b"ID3")


async def test_drift_adds_a_call_inside_the_window(sb, http):
    sb.faults.drift_rate = 1.0
    day = (sb.data.today - timedelta(days=4)).isoformat()
    params = {"start_date": day, "end_date": day, "outcome": "qualified"}
    totals = [(await get_json(http, f"{sb.base_url}{API}/calls", params))[1]["meta"]["total"] for _ in range(3)]
    assert totals[1] == totals[0] + 1 and totals[2] == totals[1] + 1
    ids, _ = await all_pages(http, sb, **params)  # every page adds one more call as we go
    sb.faults.drift_rate = 0.0
    final_ids, final_total = await all_pages(http, sb, **params)
    assert final_total == len(final_ids) == len(set(final_ids)) and set(ids) <= set(final_ids)
    assert all(c["started_at"][:10] == day and c["outcome"] == "qualified" for c in
               (sb.data.call(i) for i in final_ids))


async def test_shuffle_pages(sb, http):
    params = {"per_page": "50", "end_date": (sb.data.today - timedelta(days=1)).isoformat()}

    def key(c):
        return c["started_at"], c["id"]

    sb.faults.shuffle_pages = False
    _, ordered = await get_json(http, f"{sb.base_url}{API}/calls", params)
    assert ordered["data"] == sorted(ordered["data"], key=key)
    sb.faults.shuffle_pages = True
    _, shuffled = await get_json(http, f"{sb.base_url}{API}/calls", params)
    assert shuffled["data"] != ordered["data"] and sorted(shuffled["data"], key=key) == ordered["data"]


async def test_in_flight_counts_concurrent_requests(sb, http):
    sb.faults.latency_ms = 50
    await asyncio.gather(*(get_json(http, f"{sb.base_url}{API}/numbers") for _ in range(4)))
    assert max(r.in_flight for r in sb.requests) >= 2
    assert all(r.token == "sandbox-token" and r.authorization == "Bearer sandbox-token" for r in sb.requests)


# ----- admin hooks -----


async def admin_post(http, sb, path, payload=None):
    async with http.post(f"{sb.base_url}/_admin/{path}", json=payload or {}) as resp:
        return resp.status, await resp.json()


async def test_admin_hooks(sb, http):
    admin = f"{sb.base_url}/_admin"
    await get_json(http, f"{sb.base_url}{API}/numbers")
    status, faults = await admin_post(http, sb, "faults", {"error_rate": 1.0, "latency_ms": 5})
    assert status == 200 and faults["error_rate"] == 1.0 and sb.faults.latency_ms == 5
    assert (await admin_post(http, sb, "faults", {"bogus": 1}))[0] == 400
    status, stats = await get_json(http, f"{admin}/stats", token=None)  # admin ignores faults and auth
    assert status == 200 and stats["calls_total"] == sb.data.calls_total and stats["requests"] == {"200": 1}
    sb.faults.error_rate = 0.0
    before = sb.data.calls_total
    _, added = await admin_post(http, sb, "add_calls", {"count": 5})
    assert len(added["ids"]) == 5 and sb.data.calls_total == before + 5
    _, mutated = await admin_post(http, sb, "mutate", {"count": 3, "within_days": 2})
    assert len(mutated["ids"]) == 3
    _, ready = await admin_post(http, sb, "transcripts_ready")
    assert sb.data.pending_transcript_count == 0 and isinstance(ready["ids"], list)
    day = sb.data.today.isoformat()
    _, calls = await get_json(http, f"{admin}/calls", {"start_date": day, "end_date": day}, token=None)
    assert set(added["ids"]) <= {c["id"] for c in calls} and calls == sb.data.calls_between(sb.data.today,
                                                                                         sb.data.today)
    _, digest = await get_json(http, f"{admin}/recording_sha256/{calls[0]['id']}", token=None)
    recording = sb.data.recording_bytes(calls[0]["id"])
    if recording is not None:
        assert digest["sha256"] == hashlib.sha256(recording).hexdigest()
    _, records = await get_json(http, f"{admin}/requests", {"since": "0"}, token=None)
    assert [r["path"] for r in records] == [f"{API}/numbers"] and records[0]["status"] == 200
    assert len(sb.requests) == 1  # admin requests are not logged


async def test_mutations_show_up_in_the_api(sb, http):
    changed = sb.data.mutate_calls(20, within_days=3)
    assert len(set(changed)) == 20
    since = sb.data.today - timedelta(days=2)
    for call_id in changed:
        assert sb.data.call(call_id)["started_at"][:10] >= since.isoformat()
    _, body = await get_json(http, f"{sb.base_url}{API}/calls", {"start_date": since.isoformat(), "per_page": "100"})
    served = {c["id"]: c for c in body["data"]}
    for call_id in set(changed) & set(served):
        assert served[call_id] == sb.data.call(call_id)


# ----- data store -----


def test_determinism_for_a_seed():
    today = date(2026, 3, 21)
    one = SandboxData.generate(seed=3, calls=2_000, days=20, today=today)
    two = SandboxData.generate(seed=3, calls=2_000, days=20, today=today)
    other = SandboxData.generate(seed=4, calls=2_000, days=20, today=today)
    assert one.calls_between(None, None) == two.calls_between(None, None)
    assert one.numbers == two.numbers and one.flows == two.flows
    assert one.calls_between(None, None) != other.calls_between(None, None)
    call_id = one.calls_between(None, None)[0]["id"]
    assert one.recording_bytes(call_id) == two.recording_bytes(call_id)
    assert one.transcript(call_id) == two.transcript(call_id)
    assert one.mutate_calls(5, 3) == two.mutate_calls(5, 3)


async def test_a_restarted_sandbox_serves_the_same_bytes_for_past_days(http):
    today = date(2026, 12, 1)
    morning, evening = (datetime(2026, 12, 1, hour, tzinfo=timezone.utc) for hour in (6, 21))

    async def past_day_listings(now: datetime, port: int = 0) -> tuple[int, list[bytes]]:
        data = SandboxData.generate(seed=5, calls=1_000, days=10, today=today, now=now)
        async with run_sandbox(data=data, faults=Faults(), port=port) as sandbox:
            bodies = []
            for params in ({"end_date": "2026-11-30"}, {"start_date": "2026-11-27", "end_date": "2026-11-27"}):
                for page in ("1", "2"):
                    url = f"{sandbox.base_url}{API}/calls"
                    async with http.get(url, params={**params, "page": page, "per_page": "100"}, headers=AUTH) as resp:
                        bodies.append(await resp.read())
            return int(sandbox.base_url.rsplit(":", 1)[1]), bodies

    port, before = await past_day_listings(morning)
    _, after = await past_day_listings(evening, port)  # restarted later in the day, on the same port
    assert before == after
    assert SandboxData.generate(seed=5, calls=1_000, days=10, today=today, now=morning).calls_total < \
        SandboxData.generate(seed=5, calls=1_000, days=10, today=today, now=evening).calls_total


async def test_the_sandbox_clock_moves_by_its_admin_hook(http):
    data = SandboxData.generate(seed=5, calls=200, days=5, today=date(2026, 12, 1),
                                now=datetime(2026, 12, 1, 12, tzinfo=timezone.utc))
    with pytest.raises(ValueError):
        data.add_calls(1, date(2026, 12, 2))
    async with run_sandbox(data=data, faults=Faults()) as sandbox:
        async with http.post(f"{sandbox.base_url}/_admin/clock", json={"now": "2026-12-03T01:00:00Z"}) as resp:
            assert resp.status == 200
    ids = data.add_calls(3, date(2026, 12, 2))
    assert all(data.call(call_id)["started_at"].startswith("2026-12-02") for call_id in ids)


def test_generated_calls_are_realistic():
    data = SandboxData.generate(seed=11, calls=20_000, days=60)
    calls = data.calls_between(None, None)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    # Today's calls still to come are not served yet (at most a day's share, ~2%).
    assert len(calls) == data.calls_total == len({c["id"] for c in calls}) and 19_000 < len(calls) <= 20_000
    assert calls[0]["started_at"][:10] >= (data.today - timedelta(days=59)).isoformat()
    assert calls[-1]["started_at"] <= now
    outcomes = Counter(c["outcome"] for c in calls)
    for outcome, share in {"qualified": 0.35, "unqualified": 0.30, "voicemail": 0.15, "abandoned": 0.20}.items():
        assert abs(outcomes[outcome] / len(calls) - share) < 0.03
    no_recording = sum(c["recording_url"] is None for c in calls) / len(calls)
    assert 0.05 < no_recording < 0.15
    weekdays = Counter(datetime.fromisoformat(c["started_at"][:10]).weekday() for c in calls)
    assert min(weekdays[d] for d in range(5)) > max(weekdays[5], weekdays[6])
    eastern_hours = Counter((int(c["started_at"][11:13]) - 5) % 24 for c in calls)
    assert eastern_hours[11] > 5 * eastern_hours[3]
    happy = Counter(c["sentiment"] for c in calls if c["outcome"] == "qualified")
    assert happy["positive"] > happy["negative"] * 4


def test_added_calls_merge_into_paging():
    data = small_data(calls=1_500, days=10)
    generated = data.calls_total  # of the 1,500, those of today still to come are not served
    for offset in (1, 3, 6):
        data.add_calls(25, data.today - timedelta(days=offset))
    for _ in range(30):
        data.insert_late_call(data.today - timedelta(days=8), data.today - timedelta(days=2), outcome="voicemail")
    everything = data._base.started  # ties on started_at with the original calls exercise the (started, id) order
    data._insert(np.array([everything[100]] * 3 + [everything[900]] * 2, dtype=np.int64), {})
    expected = sorted(data.calls_between(None, None), key=lambda c: (c["started_at"], c["id"]))
    assert data.calls_total == generated + 75 + 30 + 5 == len(expected)
    for filters in ({}, {"outcome": "voicemail"}):
        wanted = [c for c in expected if all(c[k] == v for k, v in filters.items())]
        for per_page in (7, 100):
            paged, offset = [], 0
            while rows := data.query_calls(offset=offset, limit=per_page, **filters)[0]:
                paged += rows
                offset += per_page
            assert paged == wanted, (filters, per_page)


def test_add_calls_and_ready_transcripts():
    data = small_data()
    ids = data.add_calls(40)
    assert all(data.call(i)["started_at"][:10] == data.today.isoformat() for i in ids)
    assert all(data.call(i)["started_at"] <= datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
               for i in ids)
    with pytest.raises(ValueError):
        data.add_calls(1, data.today + timedelta(days=2))
    became_ready = data.make_transcripts_ready()
    assert became_ready and not any(data.transcript_pending(i) for i in became_ready)


def test_a_million_calls_are_generated_and_served_deep_into_a_range():
    # How fast: bench/sandbox.py prints it (a test asserts what, not how long).
    data = SandboxData.generate(seed=1, calls=1_000_000, days=365)
    rows, total = data.query_calls(data.today - timedelta(days=200), data.today, offset=30_000, limit=100)
    assert 990_000 < data.calls_total <= 1_000_000 and len(rows) == 100 and total > 30_100
    started_at = [row["started_at"] for row in rows]
    assert started_at == sorted(started_at)


async def test_the_sandbox_command_sets_any_fault_knob(tmp_path):
    process = await start_cli(
        "sandbox", "--port", "0", "--calls", "50", "--days", "3", "--stop-on-eof",
        "--fault", "cut_recordings=true", "--fault", "fault_day=2026-11-30", "--fault", "rate_burst=3",
        "--fault", "drop_after_post_rate=0.25", "--fault", "calls_shape=array",
        cwd=tmp_path, stdin=asyncio.subprocess.PIPE,
    )
    try:
        lines = []
        while not (lines and lines[-1].startswith("config: ")):  # the last line it prints
            line = await process.stdout.readline()
            assert line, f"the sandbox stopped: {lines} {(await process.stderr.read()).decode()}"
            lines.append(line.decode().strip())
        assert ('faults: rate_burst=3, drop_after_post_rate=0.25, cut_recordings=true,'
                ' fault_day="2026-11-30", calls_shape="array"') in lines
        base_url = re.search(r"at (http://\S+)$", lines[0]).group(1)
        async with aiohttp.ClientSession() as session, session.get(f"{base_url}/_admin/stats") as answer:
            faults = (await answer.json())["faults"]
        assert faults | {"cut_recordings": True, "fault_day": "2026-11-30", "rate_burst": 3,
                         "drop_after_post_rate": 0.25, "calls_shape": "array"} == faults
    finally:
        process.stdin.close()
        await process.wait()


@pytest.mark.parametrize("setting, message", [
    ("nonsense=1", "sandbox: unknown fault fields: nonsense"),
    ("cut_recordings=maybe", "sandbox: cut_recordings: 'maybe' is not a number, true, false or null"),
    ("cut_recordings", "sandbox: 'cut_recordings' is not NAME=VALUE"),
    ("fault_day=tomorrow", "sandbox: fault_day must be a date as YYYY-MM-DD or null"),
])
async def test_a_bad_fault_knob_is_one_line_and_exit_2(tmp_path, setting, message):
    result = await run_cli("sandbox", "--port", "0", "--fault", setting, cwd=tmp_path)
    assert (result.code, result.stderr) == (2, f"callsync: error: {message}\n"), result.stderr
