"""Listing bodies -> Arrow: the Arrow JSON reader's path must give exactly what pydantic gives.

`read_listings` reads plain pages with Arrow straight from the bytes and sends every
other page through pydantic (`_read_validated`). For each body below, both must agree
on the calls table, the rejected records and the metas; the plain ones must also have
taken the fast path, or the agreement would prove nothing.
"""

from __future__ import annotations

import json

import pytest

from pipeline import columns
from pipeline.errors import ApiError


def record(call_id: str = "call_1", **fields) -> dict:
    return {
        "id": call_id,
        "tracking_number": "+15550001111",
        "caller_number": "+15550002222",
        "duration_seconds": 42,
        "outcome": "qualified",
        "campaign_id": "camp_1",
        "affiliate_id": "aff_1",
        "source": "google",
        "caller_city": "Zürich \"Nord\"",
        "caller_state": "ZH",
        "recording_url": "https://api.example.com/api/call-tracking/calls/call_1/recording",
        "transcript_url": None,
        "sentiment": "positive",
        "started_at": "2026-03-15T14:22:00Z",
        **fields,
    }


def body(*records: dict, total: int | None = None, indent: int | None = None, **top) -> bytes:
    meta = {"page": 1, "per_page": 100, "total": len(records) if total is None else total}
    return json.dumps({"data": list(records), "meta": meta, **top}, indent=indent).encode()


def without(field: str) -> dict:
    plain = record()
    del plain[field]
    return plain


PLAIN = {
    "one page": [body(record("call_1"), record("call_2"))],
    "three pages, a call on two": [body(record("call_1")), body(record("call_2"), record("call_1", duration_seconds=7)), body()],
    "optional fields missing or null": [body(without("sentiment"), record("call_2", outcome=None, duration_seconds=None))],
    "offsets and fractions": [
        body(record("call_1", started_at="2026-03-15T14:22:00+05:30"), record("call_2", started_at="2026-03-15T14:22:00.123456-08:00"))
    ],
    "pretty-printed": [body(record("call_1"), indent=2), body(record("call_2"), indent=2)],
    "a newline after the body": [body(record("call_1")) + b"\n", body(record("call_2")) + b"\r\n"],
    "escapes and non-ASCII": [body(record("call_\u00e9", caller_city="Cura\\u00e7ao \u2603"))],
    "keys beyond data and meta": [body(record(), links={"next": None})],
    "meta beyond the reference": [json.dumps({"data": [record()], "meta": {"total": 1, "per_page": 100, "total_pages": 1}}).encode()],
    "meta missing": [json.dumps({"data": [record()]}).encode()],
    "an empty page": [body(total=0)],
}

ODD = {
    "naive started_at": [body(record(started_at="2026-03-15T14:22:00"))],
    "date-only started_at": [body(record(started_at="2026-03-15"))],
    "started_at as a Unix time": [body(record(started_at=1773584520))],
    "February 30th": [body(record(started_at="2026-02-30T10:00:00Z"))],
    "leap second": [body(record(started_at="2026-12-31T23:59:60Z"))],
    "nanoseconds": [body(record(started_at="2026-03-15T14:22:00.123456789Z"))],
    "lower-case z": [body(record(started_at="2026-03-15T14:22:00z"))],
    "compact offset": [body(record(started_at="2026-03-15T14:22:00+0530"))],
    "started_at missing": [body(without("started_at"))],
    "started_at null": [body(record(started_at=None))],
    "id missing": [body(without("id"))],
    "empty id": [body(record(""))],
    "numeric id": [body(record(123))],
    "negative duration": [body(record(duration_seconds=-1))],
    "duration beyond a 32-bit INTEGER": [body(record(duration_seconds=2**31))],
    "duration as a string": [body(record(duration_seconds="42"))],
    "duration with a fraction": [body(record(duration_seconds=42.0))],
    "boolean outcome": [body(record(outcome=True))],
    "a field the reference does not list": [body(record(call_score=0.9, tags=["a"]))],
    "a bad record among good ones, other page plain": [body(record("call_1")), body(record("call_2", started_at="soon"), record("call_3"))],
    "a record that is not an object": [body(record(), "call_2")],
    "the same key twice": [b'{"data": [{"id": "call_1", "id": "call_2", "started_at": "2026-03-15T14:22:00Z"}], "meta": {"total": 1}}'],
}


def assert_same(bodies: list[bytes]) -> None:
    read, validated = columns.read_listings(bodies), columns._read_validated(bodies)
    assert read.calls.schema == columns.CALL_SCHEMA
    assert read.calls.to_pylist() == validated.calls.to_pylist()
    assert read.rejected == validated.rejected
    assert read.metas == validated.metas


@pytest.mark.parametrize("bodies", PLAIN.values(), ids=PLAIN.keys())
def test_plain_pages_are_read_by_arrow_exactly_as_pydantic_reads_them(bodies):
    assert columns._read_plain(bodies) is not None
    assert_same(bodies)


@pytest.mark.parametrize("bodies", ODD.values(), ids=ODD.keys())
def test_any_other_page_is_read_by_pydantic(bodies):
    assert columns._read_plain(bodies) is None
    assert_same(bodies)


def test_a_bad_record_is_rejected_with_its_raw_payload_and_its_page_kept():
    read = columns.read_listings([body(record("call_1"), record("call_2", started_at="2026-03-15T14:22:00"))])
    assert read.calls.column("id").to_pylist() == ["call_1"]
    [rejected] = read.rejected
    assert (rejected.record_id, json.loads(rejected.raw_json)["started_at"]) == ("call_2", "2026-03-15T14:22:00")


def test_a_duration_too_big_to_store_is_rejected_not_a_crash():
    read = columns.read_listings([body(record("call_1"), record("call_2", duration_seconds=2**31))])
    assert read.calls.column("id").to_pylist() == ["call_1"]
    assert [record.record_id for record in read.rejected] == ["call_2"]


def test_unknown_fields_are_kept_as_json():
    read = columns.read_listings([body(record(call_score=0.9))])
    assert json.loads(read.calls.column("extra")[0].as_py()) == {"call_score": 0.9}


@pytest.mark.parametrize("not_a_listing", [b"<html>busy</html>", b"[1, 2]", b'{"data": 3}'])
def test_a_body_that_is_no_listing_is_an_api_error(not_a_listing):
    with pytest.raises(ApiError, match="malformed calls listing"):
        columns.read_listings([body(record()), not_a_listing])
