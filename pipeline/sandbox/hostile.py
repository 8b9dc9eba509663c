"""Answers of a broken or hostile API, for the fault knobs of issue #22 (see faults.py).

Gzip bombs, recordings compressed although plain bytes were asked for, bodies of the
wrong shape, URLs carrying credentials or pointing inside the network, a recording that
streams forever and a transcript of a million segments. Each knob hits the listings that
hold one day (``fault_day``) or one call's media (``fault_call``) when those are set, else everything.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import zlib
from datetime import date

import pydantic_core
from aiohttp import web

SHAPES = ("ok", "array", "data_object", "wrong_types")
_MB = 1 << 20


@functools.lru_cache(maxsize=4)
def gzip_bomb(inflated_mb: float, filler: bytes = b" ") -> bytes:
    """A gzip body of (about) ``inflated_mb`` MB of ``filler``, ~1000 times smaller."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = filler * _MB
    whole, rest = divmod(int(inflated_mb * _MB), _MB)
    parts = [compressor.compress(chunk) for _ in range(whole)]
    parts.append(compressor.compress(filler * rest))
    parts.append(compressor.flush())
    return b"".join(parts)


def gzip_response(body: bytes, content_type: str) -> web.Response:
    """Compressed whatever the request's Accept-Encoding said, as some servers do."""
    return web.Response(body=body, content_type=content_type, headers={"Content-Encoding": "gzip"})


def compressed(body: bytes, content_type: str) -> web.Response:
    return gzip_response(gzip.compress(body, 6), content_type)


async def endless_recording(request: web.Request, length: int) -> web.StreamResponse:
    """Claims ``length`` bytes, then sends a few bytes every 50 ms, forever."""
    response = web.StreamResponse(headers={"Content-Type": "audio/mpeg", "Content-Length": str(length)})
    await response.prepare(request)
    try:
        while True:
            await response.write(b"\xff" * 16)
            await asyncio.sleep(0.05)
    except ConnectionError:  # the client gave up (aiohttp's reset error is one)
        return response


def listing(rows: list, page: int, per_page: int, total: int, shape: str) -> web.Response:
    """A listing in one of SHAPES: a bare array, ``data`` as one object, or fields of the wrong types."""
    if shape == "array":
        payload: object = rows
    elif shape == "data_object":
        payload = {"data": rows[0] if rows else {}, "meta": {"page": page, "per_page": per_page, "total": total}}
    else:
        payload = {"data": [{**row, "id": {"not": "an id"}} for row in rows],
                   "meta": {"page": str(page), "per_page": "many", "total": [total]}}
    return web.Response(body=pydantic_core.to_json(payload), content_type="application/json")


def transcript(payload: dict, shape: str) -> web.Response:
    if shape == "array":
        body: object = payload.get("segments", [])
    elif shape == "data_object":
        body = {"call_id": payload.get("call_id"), "segments": {"speaker": "ai", "text": "one object"}}
    else:
        body = {"call_id": payload.get("call_id"), "segments": [{"speaker": 1, "text": ["no"], "timestamp": "x"}]}
    return web.Response(body=pydantic_core.to_json(body), content_type="application/json")


def huge_transcript(call_id: str, segments: int) -> web.Response:
    """``segments`` segments, ~70 bytes each, built without a Python object per segment."""
    one = b'{"speaker":"caller","text":"I would like to hear about pricing, please.","timestamp":1.5}'
    body = b'{"call_id":' + pydantic_core.to_json(call_id) + b',"segments":[' + b",".join([one] * segments) + b"]}"
    return web.Response(body=body, content_type="application/json")


def with_userinfo(url: str) -> str:
    """The same URL, with user:pass@ before its host."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://user:pass@{rest}"


# ----- what the server asks: an answer of its own, or None for the usual one -----


def _hits_day(faults, start, end) -> bool:
    """Does a listing of [start, end] hold fault_day?"""
    if faults.fault_day is None:
        return True
    day = date.fromisoformat(faults.fault_day)
    return (start is None or start <= day) and (end is None or day <= end)


def _hits_call(faults, call_id: str) -> bool:
    return faults.fault_call is None or faults.fault_call == call_id


def rewrite_media_urls(faults, rows: list[dict]) -> None:
    """userinfo_urls and media_url_host, on the listing's rows, in place."""
    if not (faults.userinfo_urls or faults.media_url_host):
        return
    for row in rows:
        if not _hits_call(faults, row["id"]):
            continue
        for key, path in (("recording_url", f"/recordings/{row['id']}.mp3"), ("transcript_url", f"/transcripts/{row['id']}")):
            if not row.get(key):
                continue
            if faults.media_url_host:
                row[key] = faults.media_url_host.rstrip("/") + path
            if faults.userinfo_urls:
                row[key] = with_userinfo(row[key])


def calls_page(faults, start, end, rows: list, page: int, per_page: int, total: int) -> web.Response | None:
    if not _hits_day(faults, start, end):
        return None
    if faults.page_gzip_bomb_mb:
        return gzip_response(gzip_bomb(faults.page_gzip_bomb_mb), "application/json")
    if faults.calls_shape != "ok":
        return listing(rows, page, per_page, total, faults.calls_shape)
    return None


async def recording(request: web.Request, faults, call_id: str, body: bytes) -> web.StreamResponse | None:
    if not _hits_call(faults, call_id):
        return None
    if faults.recording_gzip_bomb_mb:
        return gzip_response(gzip_bomb(faults.recording_gzip_bomb_mb, b"\0"), "audio/mpeg")
    if faults.endless_recordings:
        return await endless_recording(request, len(body) * 1000)
    if faults.gzip_recordings:
        return compressed(body, "audio/mpeg")
    return None


def transcript_answer(faults, call_id: str, payload: dict) -> web.Response | None:
    if not _hits_call(faults, call_id):
        return None
    if faults.huge_transcript_segments:
        return huge_transcript(call_id, faults.huge_transcript_segments)
    if faults.transcript_shape != "ok":
        return transcript(payload, faults.transcript_shape)
    return None
