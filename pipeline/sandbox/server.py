"""aiohttp apps for the sandbox: the API host, the "storage" host recordings redirect to, and a runner."""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import ssl
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import AsyncIterator, Callable

import pydantic_core
from aiohttp import web

from . import admin, broken, hostile
from .catalog import NumberUnavailable
from .content import NUMBER_TYPES, OUTCOMES
from .data import SandboxData
from .faults import IMPOSSIBLE_TOTAL, OVERSIZED_PER_PAGE, Faults, RateLimiter, retry_after_header
from .requests_log import RequestLog, RequestRecord, bearer_token

__all__ = ["TOKENS", "Faults", "RequestRecord", "Sandbox", "build_api_app", "build_storage_app", "run_sandbox"]

TOKENS: dict[str, set[str]] = {
    "sandbox-token": {"calls:read", "calls:write"},
    "sandbox-readonly": {"calls:read"},
    "sandbox-noscope": set(),
}
API_PREFIX = "/api/call-tracking"
DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


@dataclass
class _Context:
    """What both hosts share: the data, live fault settings, the request log and the fault dice."""

    data: SandboxData
    faults: Faults
    log: RequestLog
    rng: random.Random
    limiter: RateLimiter = field(default_factory=RateLimiter)
    listings_grown: int = 0  # what the growing_total fault has added to meta.total so far
    broken_recordings: set[tuple[str, str]] = field(default_factory=set)  # (knob, call id) already broken once
    storage_url: Callable[[], str] = lambda: ""


_CONTEXT = web.AppKey("sandbox_context", _Context)


def _json(payload, status: int = 200, headers: dict | None = None) -> web.Response:
    # pydantic_core's encoder is ~3x faster than json.dumps; listings are most of the
    # sandbox's work in a benchmark, and its CPU is taken from the client's on a small machine.
    body = pydantic_core.to_json(payload)
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def _error_response(status: int, code: str, message: str, headers: dict | None = None) -> web.Response:
    return _json({"error": code, "message": message}, status, headers)


# ----- middlewares (outermost first: observe, inject_faults, json_errors, authenticate) -----


def _is_admin(request: web.Request) -> bool:
    return request.path.startswith(admin.PREFIX)


def _observe(host: str, ctx: _Context):
    @web.middleware
    async def observe(request: web.Request, handler):
        if _is_admin(request):
            return await handler(request)
        record = ctx.log.open(request, host)
        try:
            response = await handler(request)
            record.status = response.status
            record.retry_after = response.headers.get("Retry-After")
            return response
        except web.HTTPException as exc:
            record.status = exc.status
            raise
        except Exception:
            record.status = 500
            raise
        finally:  # a dropped connection leaves status 0
            ctx.log.close(record)

    return observe


def _inject_faults(host: str, ctx: _Context):
    @web.middleware
    async def inject_faults(request: web.Request, handler):
        faults = ctx.faults
        if _is_admin(request):
            return await handler(request)
        # The latency is the API's whole answer time: each answer is made at once and held
        # until then. Made after the wait, the answers to a burst of requests queued behind
        # each other's work on top of it, as on no API with more than one worker.
        answer_at = time.monotonic() + faults.latency_ms / 1000
        if host == "api":  # per-token limits; the storage host has no tokens
            token = bearer_token(request.headers.get("Authorization"))
            wait = ctx.limiter.retry_after(token, faults.rate_limit, faults.rate_burst, time.monotonic())
            if wait is not None:
                await _until(answer_at)
                return _json({"error": "rate_limited", "message": "too many requests", "retry_after": wait},
                             429, {"Retry-After": retry_after_header(wait)})
        if faults.drop_rate and ctx.rng.random() < faults.drop_rate:
            await _until(answer_at)
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError()  # aiohttp treats this as the client going away: no response
        if faults.error_rate and ctx.rng.random() < faults.error_rate:
            response = _server_error(ctx.rng)
        else:
            try:
                response = await handler(request)
            except web.HTTPException:  # a redirect (errors are responses by now)
                await _until(answer_at)
                raise
            if request.method == "POST" and faults.drop_after_post_rate and ctx.rng.random() < faults.drop_after_post_rate:
                await _until(answer_at)
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError()  # acted on, but the answer never leaves
        await _until(answer_at)
        return response

    return inject_faults


async def _until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def _server_error(rng: random.Random) -> web.Response:
    status = rng.choice((500, 502, 503))
    if status == 502:  # as a proxy in front of the API would answer
        return web.Response(status=502, text="<html><body><h1>502 Bad Gateway</h1></body></html>",
                            content_type="text/html")
    if rng.random() < 0.5:
        return web.Response(status=status, text="upstream error, please retry")
    return _error_response(status, "server_error", "temporary failure, please retry")


@web.middleware
async def _json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiError as exc:
        return _error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "error")
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return _error_response(exc.status, code, exc.reason, headers)


@web.middleware
async def _authenticate(request: web.Request, handler):
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    token = bearer_token(request.headers.get("Authorization"))
    if token not in TOKENS:
        raise ApiError(401, "unauthorized", "missing or invalid bearer token")
    scope = "calls:read" if request.method in ("GET", "HEAD") else "calls:write"
    if scope not in TOKENS[token]:
        raise ApiError(403, "forbidden", f"missing scope {scope}")
    return await handler(request)


# ----- request parsing -----


def _date_param(request: web.Request, name: str) -> date | None:
    raw = request.query.get(name, "")
    if not raw:
        return None
    try:
        if not _DATE.fullmatch(raw):
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be a date as YYYY-MM-DD") from None


def _positive_int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ApiError(400, "bad_request", f"{name} must be a positive integer")
    return int(raw)


def _paging(request: web.Request) -> tuple[int, int]:
    page = _positive_int(request, "page", 1)
    return page, min(_positive_int(request, "per_page", DEFAULT_PER_PAGE), MAX_PER_PAGE)


async def _json_object(request: web.Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "bad_request", "body must be JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "body must be a JSON object")
    return body


def _listing(rows: list, page: int, per_page: int, total: int) -> web.Response:
    return _json({"data": rows, "meta": {"page": page, "per_page": per_page, "total": total}})


def _page_of(items: list, page: int, per_page: int) -> list:
    return items[(page - 1) * per_page : page * per_page]


# ----- API host handlers -----


def _ctx(request: web.Request) -> _Context:
    return request.app[_CONTEXT]


async def list_numbers(request: web.Request) -> web.Response:
    page, per_page = _paging(request)
    numbers = _ctx(request).data.numbers
    if _ctx(request).faults.numbers_shape != "ok":
        return hostile.listing(_page_of(numbers, page, per_page), page, per_page, len(numbers),
                               _ctx(request).faults.numbers_shape)
    return _listing(_page_of(numbers, page, per_page), page, per_page, len(numbers))


async def purchase_number(request: web.Request) -> web.Response:
    body = await _json_object(request)
    kind, area_code, name = body.get("type"), body.get("area_code"), body.get("display_name")
    if kind not in NUMBER_TYPES:
        raise ApiError(400, "bad_request", f"type must be one of {', '.join(NUMBER_TYPES)}")
    try:
        number = _ctx(request).data.purchase_number(kind, None if area_code is None else str(area_code), name)
    except NumberUnavailable as exc:
        raise ApiError(409, "unavailable", str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    return _json({key: number[key] for key in ("id", "phone_number", "type", "status")}, 201)


async def list_calls(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    start, end = _date_param(request, "start_date"), _date_param(request, "end_date")
    page, per_page = _paging(request)
    filters = {name: request.query.get(name) or None for name in ("number_id", "campaign_id", "outcome")}
    if filters["outcome"] is not None and filters["outcome"] not in OUTCOMES:
        raise ApiError(400, "bad_request", f"outcome must be one of {', '.join(OUTCOMES)}")
    if ctx.faults.drift_rate and ctx.rng.random() < ctx.faults.drift_rate:
        ctx.data.insert_late_call(start, end, **filters)
    base_url = ctx.data.base_url or str(request.url.origin())
    rows, total = ctx.data.query_calls(start, end, **filters, offset=(page - 1) * per_page, limit=per_page,
                                       base_url=base_url)
    if ctx.faults.listing_faults_apply(start, end):
        rows, per_page, total = _implausible_listing(ctx, start, end, filters, page, per_page, rows, total, base_url)
    if ctx.faults.foreign_recording_urls:
        for row in rows:
            if row["recording_url"]:
                row["recording_url"] = _storage_location(ctx, row["id"])
    if ctx.faults.shuffle_pages:
        ctx.rng.shuffle(rows)
    hostile.rewrite_media_urls(ctx.faults, rows)
    answer = hostile.calls_page(ctx.faults, start, end, rows, page, per_page, total)
    if answer is not None:
        return answer
    return _listing(rows, page, per_page, total)


def _implausible_listing(ctx: _Context, start, end, filters, page, per_page, rows, total, base_url):
    """A listing page as a broken or hostile API serves it (the listing faults)."""
    faults = ctx.faults
    if faults.repeated_ids and page > 1:
        rows, _ = ctx.data.query_calls(start, end, **filters, offset=0, limit=per_page, base_url=base_url)
    if faults.oversized_pages:
        per_page = OVERSIZED_PER_PAGE
        rows, _ = ctx.data.query_calls(start, end, **filters, offset=(page - 1) * per_page,
                                       limit=faults.oversized_pages, base_url=base_url)
    if faults.impossible_total:
        total = IMPOSSIBLE_TOTAL
    if faults.growing_total:
        ctx.listings_grown += 1
        total += ctx.listings_grown
    return rows, per_page, total


def _recorded_call(ctx: _Context, call_id: str, missing: str) -> None:
    if not ctx.data.has_call(call_id):
        raise ApiError(404, "not_found", f"call {call_id} not found")
    if not ctx.data.has_recording(call_id):
        raise ApiError(404, "not_found", missing)


async def get_recording(request: web.Request) -> web.StreamResponse:
    ctx, call_id = _ctx(request), request.match_info["call_id"]
    _recorded_call(ctx, call_id, "this call has no recording")
    if ctx.faults.redirect_recordings:
        raise web.HTTPFound(_storage_location(ctx, call_id))
    body = ctx.data.recording_bytes(call_id)
    return await _recording_answer(request, ctx, call_id, body)


async def _recording_answer(request: web.Request, ctx: _Context, call_id: str, body: bytes) -> web.StreamResponse:
    """The recording as either host serves it, unless a fault knob answers instead."""
    answer = await hostile.recording(request, ctx.faults, call_id, body)
    if answer is None:
        answer = await broken.recording(request, ctx.faults, ctx.broken_recordings, call_id, body)
    if answer is not None:
        return answer
    return web.Response(body=body, content_type="audio/mpeg")


async def get_transcript(request: web.Request) -> web.Response:
    ctx, call_id = _ctx(request), request.match_info["call_id"]
    _recorded_call(ctx, call_id, "this call has no transcript")
    if ctx.data.transcript_pending(call_id):
        raise ApiError(404, "not_found", "transcript not ready")
    answer = hostile.transcript_answer(ctx.faults, call_id, ctx.data.transcript(call_id))
    if answer is not None:
        return answer
    return _json(ctx.data.transcript(call_id))


async def list_flows(request: web.Request) -> web.Response:
    page, per_page = _paging(request)
    flows = list(_ctx(request).data.flows.values())
    if _ctx(request).faults.flows_shape != "ok":
        return hostile.listing(_page_of(flows, page, per_page), page, per_page, len(flows),
                               _ctx(request).faults.flows_shape)
    return _listing(_page_of(flows, page, per_page), page, per_page, len(flows))


async def create_flow(request: web.Request) -> web.Response:
    body = await _json_object(request)
    if not isinstance(body.get("name"), str) or not body["name"].strip():
        raise ApiError(400, "bad_request", "name is required")
    return _json(_ctx(request).data.catalog.create_flow(body), 201)


async def update_flow(request: web.Request) -> web.Response:
    flow_id = request.match_info["flow_id"]
    changes = await _json_object(request)
    if "name" in changes and (not isinstance(changes["name"], str) or not changes["name"].strip()):
        raise ApiError(400, "bad_request", "name must be a non-empty string")
    flow = _ctx(request).data.catalog.update_flow(flow_id, changes)
    if flow is None:
        raise ApiError(404, "not_found", f"flow {flow_id} not found")
    return _json(flow)


async def delete_flow(request: web.Request) -> web.Response:
    flow_id = request.match_info["flow_id"]
    # Numbers route their calls through a flow and the reference has no way to move them, so
    # a flow in use is refused (409), as an API would rather than leave live numbers unrouted.
    routed = _ctx(request).data.catalog.numbers_using(flow_id)
    if routed:
        raise ApiError(409, "conflict", f"flow {flow_id} is in use by {len(routed)} tracking number(s) "
                                        f"({', '.join(routed)}); a flow that routes calls cannot be deleted")
    if not _ctx(request).data.catalog.delete_flow(flow_id):
        raise ApiError(404, "not_found", f"flow {flow_id} not found")
    return web.Response(status=204)


# ----- storage host -----


def _signature(ctx: _Context, call_id: str) -> str:
    return hashlib.blake2b(call_id.encode(), digest_size=8, key=f"storage-{ctx.data.seed}".encode()).hexdigest()


def _storage_location(ctx: _Context, call_id: str) -> str:
    return f"{ctx.storage_url()}/recordings/{call_id}.mp3?sig={_signature(ctx, call_id)}"


async def storage_recording(request: web.Request) -> web.Response:
    ctx, call_id = _ctx(request), request.match_info["call_id"]
    if request.query.get("sig") != _signature(ctx, call_id):
        return web.Response(status=403, text="<Error><Code>AccessDenied</Code></Error>",
                            content_type="application/xml")
    body = ctx.data.recording_bytes(call_id)
    if body is None:
        return web.Response(status=404, text="<Error><Code>NoSuchKey</Code></Error>", content_type="application/xml")
    return await _recording_answer(request, ctx, call_id, body)


# ----- apps and runner -----


def _new_context(data: SandboxData, faults: Faults, log: RequestLog | None, rng: random.Random | None) -> _Context:
    return _Context(data, faults, log or RequestLog(), rng or random.Random(f"faults-{data.seed}"))


def build_api_app(data: SandboxData, faults: Faults, storage_url_getter: Callable[[], str], *,
                  log: RequestLog | None = None, rng: random.Random | None = None) -> web.Application:
    ctx = _new_context(data, faults, log, rng)
    ctx.storage_url = storage_url_getter
    app = web.Application(middlewares=[_observe("api", ctx), _inject_faults("api", ctx), _json_errors,
                                       _authenticate])
    app[_CONTEXT] = ctx
    app.router.add_get(f"{API_PREFIX}/numbers", list_numbers)
    app.router.add_post(f"{API_PREFIX}/numbers", purchase_number)
    app.router.add_get(f"{API_PREFIX}/calls", list_calls)
    app.router.add_get(f"{API_PREFIX}/calls/{{call_id}}/recording", get_recording)
    app.router.add_get(f"{API_PREFIX}/calls/{{call_id}}/transcript", get_transcript)
    app.router.add_get(f"{API_PREFIX}/flows", list_flows)
    app.router.add_post(f"{API_PREFIX}/flows", create_flow)
    app.router.add_patch(f"{API_PREFIX}/flows/{{flow_id}}", update_flow)
    app.router.add_delete(f"{API_PREFIX}/flows/{{flow_id}}", delete_flow)
    admin.add_routes(app, ctx)
    return app


def build_storage_app(data: SandboxData, faults: Faults, *, log: RequestLog | None = None,
                      rng: random.Random | None = None) -> web.Application:
    ctx = _new_context(data, faults, log, rng)
    app = web.Application(middlewares=[_observe("storage", ctx), _inject_faults("storage", ctx), _json_errors])
    app[_CONTEXT] = ctx
    app.router.add_get("/recordings/{call_id}.mp3", storage_recording)
    return app


@dataclass
class Sandbox:
    base_url: str
    storage_url: str
    data: SandboxData
    faults: Faults
    log: RequestLog

    @property
    def requests(self) -> list[RequestRecord]:
        return self.log.records


async def _serve(app: web.Application, host: str, port: int, tls: ssl.SSLContext | None = None) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=tls).start()
    bound_port = runner.addresses[0][1]
    url_host = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    return runner, f"{'https' if tls else 'http'}://{url_host}:{bound_port}"


@asynccontextmanager
async def run_sandbox(data: SandboxData | None = None, faults: Faults | None = None, host: str = "127.0.0.1",
                      port: int = 0, storage_port: int = 0, storage_host: str | None = None,
                      tls: ssl.SSLContext | None = None) -> AsyncIterator[Sandbox]:
    """Serve the API host and the storage host (on ``host`` too unless ``storage_host``) until the block exits;
    over HTTPS with ``tls`` (a server context: the tests' own certificate authority)."""
    data = data or SandboxData.generate()
    faults = faults or Faults()
    log, rng = RequestLog(), random.Random(f"faults-{data.seed}")
    storage_runner, storage_url = await _serve(build_storage_app(data, faults, log=log, rng=rng),
                                               storage_host or host, storage_port, tls)
    try:
        api_app = build_api_app(data, faults, lambda: storage_url, log=log, rng=rng)
        api_runner, base_url = await _serve(api_app, host, port, tls)
        try:
            data.base_url = base_url
            yield Sandbox(base_url, storage_url, data, faults, log)
        finally:
            await api_runner.cleanup()
    finally:
        await storage_runner.cleanup()
