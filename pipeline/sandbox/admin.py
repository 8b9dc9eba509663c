"""Unauthenticated `/_admin` hooks for driving a sandbox from another process.

They bypass auth, faults, latency and the rate limit, and are not written to the request log.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime, timezone

from aiohttp import web

PREFIX = "/_admin"


def _json(payload, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(payload), status=status, content_type="application/json")


def _bad_request(message: str) -> web.Response:
    return _json({"error": "bad_request", "message": message}, 400)


async def _body(request: web.Request) -> dict:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "bad_request", "message": "body must be JSON"}',
                                 content_type="application/json") from None
    return body if isinstance(body, dict) else {}


def _optional_date(raw: str | None) -> date | None:
    return date.fromisoformat(raw) if raw else None


def add_routes(app: web.Application, ctx) -> None:
    data, faults, log = ctx.data, ctx.faults, ctx.log

    async def stats(request: web.Request) -> web.Response:
        return _json({
            "calls_total": data.calls_total,
            "numbers": len(data.numbers),
            "flows": len(data.flows),
            "pending_transcripts": data.pending_transcript_count,
            **log.stats(),
            "faults": faults.as_dict(),
        })

    async def requests(request: web.Request) -> web.Response:
        since = request.query.get("since", "0")
        if not since.lstrip("-").isdigit():
            return _bad_request("since must be an integer")
        return _json([record.as_dict() for record in log.since(int(since))])

    async def clear_requests(request: web.Request) -> web.Response:
        log.clear()
        return web.Response(status=204)

    async def get_faults(request: web.Request) -> web.Response:
        return _json(faults.as_dict())

    async def set_faults(request: web.Request) -> web.Response:
        try:
            faults.update(**await _body(request))
        except ValueError as exc:
            return _bad_request(str(exc))
        return _json(faults.as_dict())

    async def mutate(request: web.Request) -> web.Response:
        body = await _body(request)
        try:
            ids = data.mutate_calls(int(body.get("count", 10)), int(body.get("within_days", 2)))
        except (TypeError, ValueError) as exc:
            return _bad_request(str(exc))
        return _json({"ids": ids})

    async def add_calls(request: web.Request) -> web.Response:
        body = await _body(request)
        try:
            ids = data.add_calls(int(body.get("count", 1)), _optional_date(body.get("day")))
        except (TypeError, ValueError) as exc:
            return _bad_request(str(exc))
        return _json({"ids": ids})

    async def set_clock(request: web.Request) -> web.Response:
        try:
            data.set_now(datetime.fromisoformat(str((await _body(request))["now"]).replace("Z", "+00:00")))
        except (KeyError, ValueError) as exc:
            return _bad_request(f"give now as an ISO timestamp with a zone ({exc})")
        return _json({"now": datetime.fromtimestamp(data.now(), timezone.utc).isoformat()})

    async def delete_calls(request: web.Request) -> web.Response:
        """Delete calls upstream: {"ids": [...]}, or {"count": N, "day": "YYYY-MM-DD"} for
        the first N listed that day. Answers the ids deleted."""
        body = await _body(request)
        try:
            ids = body.get("ids")
            if ids is None:
                day = _optional_date(body.get("day")) or data.current_day()
                ids = [call["id"] for call in data.query_calls(day, day, limit=int(body.get("count", 1)))[0]]
            if not isinstance(ids, list) or not all(isinstance(call_id, str) for call_id in ids):
                raise ValueError("ids must be a list of call ids")
        except (TypeError, ValueError) as exc:
            return _bad_request(str(exc))
        return _json({"ids": data.delete_calls(ids)})

    async def restore_calls(request: web.Request) -> web.Response:
        """Undo delete_calls: {"ids": [...]}. Answers the ids restored."""
        ids = (await _body(request)).get("ids")
        if not isinstance(ids, list) or not all(isinstance(call_id, str) for call_id in ids):
            return _bad_request("ids must be a list of call ids")
        return _json({"ids": data.restore_calls(ids)})

    async def transcripts_ready(request: web.Request) -> web.Response:
        return _json({"ids": data.make_transcripts_ready()})

    async def calls(request: web.Request) -> web.Response:
        try:
            start = _optional_date(request.query.get("start_date"))
            end = _optional_date(request.query.get("end_date"))
        except ValueError:
            return _bad_request("dates must be YYYY-MM-DD")
        return _json(data.calls_between(start, end))

    async def recording_sha256(request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        body = data.recording_bytes(call_id)
        if body is None:
            return _json({"error": "not_found", "message": f"no recording for {call_id}"}, 404)
        return _json({"call_id": call_id, "sha256": hashlib.sha256(body).hexdigest(), "size": len(body)})

    router = app.router
    router.add_get(f"{PREFIX}/stats", stats)
    router.add_get(f"{PREFIX}/requests", requests)
    router.add_delete(f"{PREFIX}/requests", clear_requests)
    router.add_get(f"{PREFIX}/faults", get_faults)
    router.add_post(f"{PREFIX}/faults", set_faults)
    router.add_post(f"{PREFIX}/mutate", mutate)
    router.add_post(f"{PREFIX}/add_calls", add_calls)
    router.add_post(f"{PREFIX}/transcripts_ready", transcripts_ready)
    router.add_post(f"{PREFIX}/clock", set_clock)
    router.add_post(f"{PREFIX}/delete_calls", delete_calls)
    router.add_post(f"{PREFIX}/restore_calls", restore_calls)
    router.add_get(f"{PREFIX}/calls", calls)
    router.add_get(f"{PREFIX}/recording_sha256/{{call_id}}", recording_sha256)
