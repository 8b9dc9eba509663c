"""A typed async client for the Call Tracking API.

One aiohttp session per client; every request goes through the shared
``Throttle`` (concurrency, rate, 429 back-off, budget) and one tenacity retry
policy (5xx, 429, timeouts and dropped connections; never other 4xx).

A POST is not idempotent (it buys a number, creates a flow): it is sent again only
when the API said it did not act (429) or the connection failed before it was sent
(aiohttp's ClientConnectorError, ConnectionTimeoutError). A timeout, a connection
dropped after sending or a 5xx raise UncertainWriteError instead: it may have
taken effect. PATCH and DELETE set or remove a state, so they are retried as GETs.

The bearer token is attached per request, and only when the request goes to the
API's own origin: redirects are followed by hand so that a hop to a storage host
never carries it. It is never logged, and never part of a repr or an error.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import date
from typing import IO, Any, Awaitable, Callable, TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import SecretStr, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from yarl import URL

from pipeline.errors import (
    ApiError,
    AuthError,
    ConnectFailedError,
    NotFoundError,
    RateLimitedError,
    RetryableApiError,
    UncertainWriteError,
    UnsafeUrlError,
)
from pipeline.models import (
    CALL,
    CALLS_PAGE,
    RAW_PAGE,
    Call,
    Flow,
    NumbersPage,
    PageMeta,
    TrackingNumber,
    Transcript,
)
from pipeline.throttle import Throttle

log = logging.getLogger("callsync.client")

API_PREFIX = "/api/call-tracking"
MAX_REDIRECTS = 5
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
DOWNLOAD_CHUNK = 64 * 1024
ERROR_BODY_CHARS = 200
# Methods sent again after any retryable failure: each sets or removes a state, so twice
# is as once. A POST is sent again only on a 429 or a failed connection (_unless_uncertain).
REPEATABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})

T = TypeVar("T")


@dataclass(frozen=True)
class Rejected:
    """A record that failed validation, kept with its raw payload."""

    entity: str
    record_id: str | None
    raw_json: str
    error: str


@dataclass(frozen=True)
class CallListing:
    calls: list[Call]
    rejected: list[Rejected]
    meta: PageMeta


@dataclass(frozen=True)
class Download:
    size_bytes: int
    sha256: str
    content_type: str


@dataclass
class ClientOptions:
    timeout_s: float = 30.0
    max_concurrency: int = 16
    requests_per_second: float | None = None
    max_retries: int = 6
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_requests_per_run: int | None = None
    allow_foreign_hosts: bool = True
    user_agent: str = field(default="callsync")


class CallTrackingClient:
    def __init__(self, base_url: str, token: SecretStr | str, options: ClientOptions | None = None):
        self.options = options or ClientOptions()
        self.base_url = URL(base_url.rstrip("/"))
        if self.base_url.scheme not in ("http", "https") or not self.base_url.host:
            raise UnsafeUrlError(f"base_url must be an http(s) URL, got {base_url!r}")
        self._token = token if isinstance(token, SecretStr) else SecretStr(token)
        self.throttle = Throttle(
            self.options.max_concurrency,
            self.options.requests_per_second,
            self.options.max_requests_per_run,
        )
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"CallTrackingClient(base_url={str(self.base_url)!r})"

    @property
    def stats(self):
        return self.throttle.stats

    async def __aenter__(self) -> CallTrackingClient:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.options.timeout_s),
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            headers={"User-Agent": self.options.user_agent, "Accept": "application/json"},
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- endpoints -------------------------------------------------------------

    async def list_calls(self, *args: Any, **kwargs: Any) -> CallListing:
        """One page of the calls listing, parsed: the arguments of ``calls_page``."""
        return parse_calls_page(await self.calls_page(*args, **kwargs))

    async def calls_page(
        self,
        start_date: date | None = None,
        end_date: date | None = None,
        *,
        page: int = 1,
        per_page: int = 100,
        number_id: str | None = None,
        campaign_id: str | None = None,
        outcome: str | None = None,
    ) -> bytes:
        """One page of the calls listing as the raw JSON body, for ``list_calls`` to parse
        or for ``columns.read_listings`` to read with others."""
        params = _drop_none(
            start_date=start_date.isoformat() if start_date else None,
            end_date=end_date.isoformat() if end_date else None,
            number_id=number_id,
            campaign_id=campaign_id,
            outcome=outcome,
            page=page,
            per_page=per_page,
        )
        return await self._get_bytes("/calls", params)

    async def list_numbers(self, *, page: int = 1, per_page: int = 100) -> NumbersPage:
        body = await self._get_bytes("/numbers", {"page": page, "per_page": per_page})
        return self._validate(NumbersPage, body, "numbers listing")

    async def all_numbers(self, per_page: int = 100) -> list[TrackingNumber]:
        first = await self.list_numbers(page=1, per_page=per_page)
        numbers = {number.id: number for number in first.data}
        pages = _page_count(first.meta, len(first.data))
        rest = await asyncio.gather(*(self.list_numbers(page=p, per_page=per_page) for p in range(2, pages + 1)))
        for listing in rest:
            numbers.update((number.id, number) for number in listing.data)
        return list(numbers.values())

    async def purchase_number(
        self, type: str, *, area_code: str | None = None, display_name: str | None = None
    ) -> TrackingNumber:
        payload = _drop_none(type=type, area_code=area_code, display_name=display_name)
        body = await self._send("POST", self._api_url("/numbers"), json_body=payload, consume=_read_body)
        return self._validate(TrackingNumber, body, "purchased number")

    async def list_flows(self, per_page: int = 100) -> list[Flow]:
        flows: dict[str, Flow] = {}
        page = 1
        while True:
            body = await self._get_bytes("/flows", {"page": page, "per_page": per_page})
            listing = _json_object(body, "flows listing")
            records = listing.get("data") or []
            flows.update((flow.id, flow) for flow in (Flow.from_raw(raw) for raw in records if "id" in raw))
            meta = PageMeta.model_validate(listing.get("meta") or {})
            if not records or page >= _page_count(meta, len(records)):
                return list(flows.values())
            page += 1

    async def create_flow(self, flow: dict[str, Any]) -> Flow:
        body = await self._send("POST", self._api_url("/flows"), json_body=flow, consume=_read_body)
        return Flow.from_raw(_json_object(body, "created flow"))

    async def update_flow(self, flow_id: str, changes: dict[str, Any]) -> Flow:
        url = self._api_url(f"/flows/{_quote_id(flow_id)}")
        body = await self._send("PATCH", url, json_body=changes, consume=_read_body)
        return Flow.from_raw(_json_object(body, "updated flow"))

    async def delete_flow(self, flow_id: str) -> None:
        url = self._api_url(f"/flows/{_quote_id(flow_id)}")
        await self._send("DELETE", url, consume=_read_body)

    async def get_transcript(self, transcript_url: str) -> Transcript:
        """Raises NotFoundError while the vendor has not produced it yet."""
        body = await self._send("GET", self._resolve(transcript_url), consume=_read_body)
        return self._validate(Transcript, body, "transcript")

    def transcript_url(self, call_id: str) -> str:
        return str(self._api_url(f"/calls/{_quote_id(call_id)}/transcript"))

    async def download(self, url: str, sink: IO[bytes]) -> Download:
        """Stream a recording into ``sink`` (rewound on each retry); never held whole in memory."""

        async def stream(response: aiohttp.ClientResponse) -> Download:
            sink.seek(0)
            sink.truncate()
            content_type = response.headers.get("Content-Type", "")
            if not content_type.startswith(("audio/", "application/octet-stream")):
                raise RetryableApiError(
                    f"{_describe(response.url)}: expected audio, got Content-Type {content_type or 'none'!r}",
                    url=_describe(response.url),
                )
            digest = hashlib.sha256()
            size = 0
            async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK):
                sink.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            expected = response.content_length
            if expected is not None and size != expected:
                raise RetryableApiError(
                    f"{_describe(response.url)}: truncated body, {size} of {expected} bytes",
                    url=_describe(response.url),
                )
            return Download(size, digest.hexdigest(), content_type.split(";")[0].strip())

        return await self._send("GET", self._resolve(url), consume=stream)

    # --- the one request path ----------------------------------------------------

    def _api_url(self, path: str) -> URL:
        return self.base_url.with_path(self.base_url.path.rstrip("/") + API_PREFIX + path, encoded=True)

    def _resolve(self, url: str) -> URL:
        target = self.base_url.join(URL(url))
        if target.scheme not in ("http", "https"):
            raise UnsafeUrlError(f"refusing to fetch {target.scheme}: URL", url=_describe(target))
        if not self._is_api_origin(target) and not self.options.allow_foreign_hosts:
            raise UnsafeUrlError(
                f"{_describe(target)}: points at another host and media.allow_foreign_hosts is false",
                url=_describe(target),
            )
        return target

    def _is_api_origin(self, url: URL) -> bool:
        return (url.scheme, url.host, url.port) == (self.base_url.scheme, self.base_url.host, self.base_url.port)

    async def _get_bytes(self, path: str, params: dict[str, Any]) -> bytes:
        return await self._send("GET", self._api_url(path), params=params, consume=_read_body)

    async def _send(
        self,
        method: str,
        url: URL,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        consume: Callable[[aiohttp.ClientResponse], Awaitable[T]],
    ) -> T:
        if params:
            url = url.update_query({key: str(value) for key, value in params.items()})
        # The first attempt runs outside tenacity: setting up its retry state cost about a
        # tenth of the event loop's time on small requests (media), and most requests succeed.
        try:
            return await self._attempt(method, url, json_body, consume)
        except RetryableApiError as exc:
            first_failure: RetryableApiError | None = exc
        async for attempt in self._retrying():
            with attempt:
                if first_failure is not None:  # tenacity's attempt 1: the policy sees it as it was
                    failure, first_failure = first_failure, None
                    raise failure
                return await self._attempt(method, url, json_body, consume)
        raise AssertionError("unreachable: tenacity reraises")

    async def _attempt(
        self, method: str, url: URL, json_body: Any, consume: Callable[[aiohttp.ClientResponse], Awaitable[T]]
    ) -> T:
        try:
            async with self.throttle.slot():
                result = await self._exchange(method, url, json_body, consume)
        except RetryableApiError as exc:
            raise _unless_uncertain(method, exc) from None
        self.throttle.succeeded()
        await asyncio.sleep(0)  # the slot's next holder sends its request before this body is parsed
        return result

    def _retrying(self) -> AsyncRetrying:
        backoff = wait_exponential_jitter(
            multiplier=self.options.backoff_initial_s, max=self.options.backoff_max_s, jitter=self.options.backoff_initial_s
        )

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, RateLimitedError) and error.retry_after is not None:
                return error.retry_after
            return backoff(state)

        def count_retry(state: RetryCallState) -> None:
            self.stats.retries += 1
            error = state.outcome.exception() if state.outcome else None
            log.info("retry scheduled", extra={"event": "retry_scheduled", "retry_num": state.attempt_number, "error": str(error)})

        return AsyncRetrying(
            retry=retry_if_exception_type(RetryableApiError),
            stop=stop_after_attempt(self.options.max_retries + 1),
            wait=wait,
            before_sleep=count_retry,
            reraise=True,
        )

    async def _exchange(
        self,
        method: str,
        url: URL,
        json_body: Any,
        consume: Callable[[aiohttp.ClientResponse], Awaitable[T]],
    ) -> T:
        assert self._session is not None, "use the client as an async context manager"
        for _hop in range(MAX_REDIRECTS + 1):
            headers = {"Authorization": f"Bearer {self._token.get_secret_value()}"} if self._is_api_origin(url) else {}
            try:
                async with self._session.request(
                    method, url, json=json_body, headers=headers, allow_redirects=False
                ) as response:
                    location = response.headers.get("Location")
                    if response.status in REDIRECT_STATUSES and location:
                        url = self._resolve(str(response.url.join(URL(location))))
                        method = "GET" if response.status == 303 else method
                        continue
                    await self._raise_for_status(method, response)
                    return await consume(response)
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:  # before sending
                reason = "connect timeout" if isinstance(exc, asyncio.TimeoutError) else str(exc)  # its text has the query
                raise ConnectFailedError(f"{method} {_describe(url)}: {reason}", url=_describe(url)) from None
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as exc:
                reason = type(exc).__name__ if isinstance(exc, asyncio.TimeoutError) else str(exc) or type(exc).__name__
                raise RetryableApiError(f"{method} {_describe(url)}: {reason}", url=_describe(url)) from None
        raise ApiError(f"{method} {_describe(url)}: more than {MAX_REDIRECTS} redirects", url=_describe(url))

    async def _raise_for_status(self, method: str, response: aiohttp.ClientResponse) -> None:
        status = response.status
        if status < 400:
            return
        where = f"{method} {_describe(response.url)}"
        detail = await _error_detail(response)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            self.throttle.rate_limited(retry_after)
            raise RateLimitedError(f"{where}: HTTP 429 rate limited{detail}", retry_after=retry_after, url=where)
        if status >= 500:
            raise RetryableApiError(f"{where}: HTTP {status}{detail}", status=status, url=where)
        if status in (401, 403) and self._is_api_origin(response.url):
            raise AuthError(_auth_message(status, method, detail))
        if status == 404:
            raise NotFoundError(f"{where}: HTTP 404 not found{detail}", status=404, url=where)
        raise ApiError(f"{where}: HTTP {status}{detail}", status=status, url=where)

    @staticmethod
    def _validate(model: type[T], body: bytes, what: str) -> T:
        try:
            return model.model_validate_json(body)  # type: ignore[attr-defined]
        except ValidationError as exc:
            raise ApiError(f"malformed {what}: {_first_error(exc)}") from None


def parse_calls_page(body: bytes) -> CallListing:
    """Validate a whole page straight from JSON; only a page with a bad record takes the slow path."""
    try:
        page = CALLS_PAGE.validate_json(body)
        return CallListing(page["data"], [], page.get("meta") or PageMeta())
    except ValidationError:
        pass
    try:
        raw_page = RAW_PAGE.validate_json(body)
    except ValidationError as exc:
        raise RetryableApiError(f"malformed calls listing: {_first_error(exc)}") from None
    calls: list[Call] = []
    rejected: list[Rejected] = []
    for record in raw_page.data:
        try:
            calls.append(CALL.validate_python(record))
        except ValidationError as exc:
            record_id = record.get("id") if isinstance(record, dict) else None
            raw = json.dumps(record, sort_keys=True, default=str)
            rejected.append(Rejected("call", str(record_id) if record_id is not None else None, raw, _first_error(exc)))
    return CallListing(calls, rejected, raw_page.meta)


def _unless_uncertain(method: str, error: RetryableApiError) -> ApiError:
    """The error as it is when the request may be sent again; for a POST the API may have
    acted on (no answer, or a 5xx), an UncertainWriteError that no retry policy repeats."""
    if method in REPEATABLE_METHODS or isinstance(error, (RateLimitedError, ConnectFailedError)):
        return error
    return UncertainWriteError(
        f"{error}: the request may or may not have taken effect", status=error.status, url=error.url
    )


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _auth_message(status: int, method: str, detail: str) -> str:
    if status == 401:
        return f"authentication failed (HTTP 401): the API token was rejected{detail}"
    scope = "calls:read" if method == "GET" else "calls:write"
    return f"permission denied (HTTP 403): the token lacks the {scope} scope{detail}"


async def _error_detail(response: aiohttp.ClientResponse) -> str:
    try:
        text = (await response.text(errors="replace")).strip()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return ""
    try:
        body = json.loads(text)
        if isinstance(body, dict):
            text = str(body.get("message") or body.get("error") or text)
    except ValueError:
        pass
    text = " ".join(text.split())[:ERROR_BODY_CHARS]
    return f": {text}" if text else ""


async def _read_body(response: aiohttp.ClientResponse) -> bytes:
    return await response.read()


def _describe(url: URL) -> str:
    """A URL fit for logs and errors: no query string (signed links carry secrets there)."""
    return str(url.with_query(None).with_fragment(None))


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        raise ApiError(f"malformed {what}: not JSON") from None
    if not isinstance(value, dict):
        raise ApiError(f"malformed {what}: expected a JSON object")
    return value


def _page_count(meta: PageMeta, rows_on_page: int) -> int:
    per_page = meta.per_page or rows_on_page or 1
    return max(1, -(-meta.total // per_page))


def _quote_id(resource_id: str) -> str:
    return quote(resource_id, safe="")


def _drop_none(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
