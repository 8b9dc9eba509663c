"""A typed async client for the Call Tracking API.

One aiohttp session per client; every request goes through the shared
``Throttle`` (concurrency, rate, 429 back-off, budget) and one tenacity retry
policy (5xx, 429, timeouts, dropped connections and malformed HTTP; never other 4xx).

A POST is not idempotent (it buys a number, creates a flow): it is sent again only
when the API said it did not act (429) or the connection failed before it was sent
(aiohttp's ClientConnectorError, ConnectionTimeoutError). A timeout, a connection
dropped after sending or a 5xx raise UncertainWriteError instead: it may have
taken effect. PATCH and DELETE set or remove a state, so they are retried as GETs.

The bearer token is attached per request, and only when the request goes to the
API's own origin: redirects are followed by hand so that a hop to a storage host
never carries it. It is never logged, and never part of a repr or an error: an API
that echoes it back (in an error body, a Location, a reason) has it masked as ***
in every error of a request (``_attempt``) before anything prints, logs or stores it.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import date
from typing import IO, TYPE_CHECKING, Any, Awaitable, Callable, TypeVar
from urllib.parse import quote

from pipeline import tls  # first: it imports aiohttp (see there)
import aiohttp
from pydantic import SecretStr, ValidationError
from yarl import URL

from pipeline.addresses import AddressGuard, GuardedResolver, Reach
from pipeline.bodies import MB, Inflater, read_capped, refuse_declared_size
from pipeline.errors import (
    ApiError,
    ApiTimeoutError,
    ApiUnreachableError,
    AuthError,
    CallsyncError,
    ConnectFailedError,
    MalformedListingError,
    NotFoundError,
    RateLimitedError,
    RetryableApiError,
    UncertainWriteError,
    UnsafeUrlError,
    UntrustedApiError,
    UntrustedCertificateError,
)
from pipeline.models import (
    Call,
    CallsPage,
    Flow,
    NumbersPage,
    PageMeta,
    RawPage,
    TrackingNumber,
    Transcript,
    adapter,
)
from pipeline.throttle import CircuitBreaker, Throttle

if TYPE_CHECKING:
    from tenacity import AsyncRetrying, RetryCallState

log = logging.getLogger("callsync.client")

API_PREFIX = "/api/call-tracking"
MAX_REDIRECTS = 5
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
DOWNLOAD_CHUNK = 64 * 1024
ERROR_BODY_CHARS = 200
# Methods sent again after any retryable failure: each sets or removes a state, so twice
# is as once. A POST is sent again only on a 429 or a failed connection (_unless_uncertain).
REPEATABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})
ERROR_BODY_BYTES = 64 * 1024
# A download must bring at least this much every timeout_s, or it is abandoned as stalled
# (a stream dripping a few bytes a second would otherwise hold its job forever).
MIN_PROGRESS_BYTES = 64 * 1024
MAX_DIMENSION_PAGES = 1000
MAX_TIMEOUTS_PER_REQUEST = 2

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
    give_up_after_s: float = 120.0
    max_connection_failures: int = 8  # in a row, before the circuit breaker stops the run
    user_agent: str = field(default="callsync")
    max_page_bytes: int = 16 * MB
    max_transcript_bytes: int = 32 * MB
    max_recording_bytes: int = 200 * MB
    allow_private_addresses: bool = False
    # How internal the API is (pipeline.addresses); None: found from its resolved address.
    api_reach: Reach | None = None
    resolver: Any = None  # an aiohttp AbstractResolver to ask instead of the system's
    # Count aiohttp's own resends of a DELETE (see _Sends), so that a 404 answering one is
    # known for what it is. ~15 us a request, so only the commands that change things do.
    count_resends: bool = False


class CallTrackingClient:
    def __init__(self, base_url: str, token: SecretStr | str, options: ClientOptions | None = None):
        self.options = options or ClientOptions()
        self.base_url = URL(base_url.rstrip("/"))
        if self.base_url.scheme not in ("http", "https") or not self.base_url.host:
            raise UnsafeUrlError(f"base_url must be an http(s) URL, got {redact_url(base_url)!r}")
        self._token = token if isinstance(token, SecretStr) else SecretStr(token)
        self.throttle = Throttle(
            self.options.max_concurrency,
            self.options.requests_per_second,
            self.options.max_requests_per_run,
        )
        self.breaker = CircuitBreaker(
            str(self.base_url), self.options.give_up_after_s, self.options.max_connection_failures
        )
        self._session: aiohttp.ClientSession | None = None
        self._guard: AddressGuard | None = None
        self._tls_context = tls.verified_context_soon()

    def __repr__(self) -> str:
        return f"CallTrackingClient(base_url={str(self.base_url)!r})"

    @property
    def stats(self):
        return self.throttle.stats

    async def __aenter__(self) -> CallTrackingClient:
        self._guard = AddressGuard(
            self.base_url.host or "", allow_private=self.options.allow_private_addresses,
            api_reach=self.options.api_reach, resolver=self.options.resolver,
        )
        connector = aiohttp.TCPConnector(
            limit=0, ttl_dns_cache=300, resolver=GuardedResolver(self._guard),
            ssl=await asyncio.wrap_future(self._tls_context),  # never aiohttp's defaults (see pipeline.tls)
        )
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.options.timeout_s),
            connector=connector,
            headers={"User-Agent": self.options.user_agent, "Accept": "application/json",
                     "Accept-Encoding": "gzip, deflate"},
            # Bodies are inflated by pipeline.bodies, within a cap: never by aiohttp, unbounded.
            auto_decompress=False,
            trace_configs=[_resend_counter()] if self.options.count_resends else None,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.breaker.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._guard is not None:
            await GuardedResolver(self._guard).close()
            self._guard = None

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
        if pages > MAX_DIMENSION_PAGES:
            raise ApiError(f"malformed numbers listing: meta.total {first.meta.total} would take {pages} pages"
                           f" (more than {MAX_DIMENSION_PAGES}); refused")
        rest = await asyncio.gather(*(self.list_numbers(page=p, per_page=per_page) for p in range(2, pages + 1)))
        for listing in rest:
            numbers.update((number.id, number) for number in listing.data)
        return list(numbers.values())

    async def purchase_number(
        self, type: str, *, area_code: str | None = None, display_name: str | None = None
    ) -> TrackingNumber:
        payload = _drop_none(type=type, area_code=area_code, display_name=display_name)
        body = await self._send("POST", self._api_url("/numbers"), json_body=payload, consume=self._read_page)
        return self._validate(TrackingNumber, body, "purchased number")

    async def list_flows(self, per_page: int = 100) -> list[Flow]:
        flows: dict[str, Flow] = {}
        page = 1
        while True:
            body = await self._get_bytes("/flows", {"page": page, "per_page": per_page})
            records, meta = _flows_page(body)
            flows.update((flow.id, flow) for flow in records)
            if not records or page >= min(_page_count(meta, len(records)), MAX_DIMENSION_PAGES):
                return list(flows.values())
            page += 1

    async def create_flow(self, flow: dict[str, Any]) -> Flow:
        body = await self._send("POST", self._api_url("/flows"), json_body=flow, consume=self._read_page)
        return _flow(_json_object(body, "created flow"), "created flow")

    async def update_flow(self, flow_id: str, changes: dict[str, Any]) -> Flow:
        url = self._api_url(f"/flows/{_quote_id(flow_id)}")
        body = await self._send("PATCH", url, json_body=changes, consume=self._read_page)
        return _flow(_json_object(body, "updated flow"), "updated flow")

    async def delete_flow(self, flow_id: str) -> bool:
        """True: deleted. False: a retry found it gone (404) after an earlier attempt that may
        have reached the API (a timeout, a dropped answer, a 5xx): most likely that one deleted it."""
        url = self._api_url(f"/flows/{_quote_id(flow_id)}")
        try:
            await self._send("DELETE", url, consume=self._read_page)
        except NotFoundError as exc:
            if exc.after_attempt_that_may_have_acted:
                return False
            raise
        return True

    async def get_transcript(self, transcript_url: str) -> Transcript:
        """Raises NotFoundError while the vendor has not produced it yet."""
        return parse_transcript(await self.transcript_body(transcript_url))

    async def transcript_body(self, transcript_url: str) -> bytes:
        """The transcript's JSON, at most ``max_transcript_bytes`` of it (see columns.transcript_to_arrow)."""
        return await self._send("GET", self._resolve(transcript_url), consume=self._read_transcript)

    def transcript_url(self, call_id: str) -> str:
        return str(self._api_url(f"/calls/{_quote_id(call_id)}/transcript"))

    async def download(self, url: str, sink: IO[bytes]) -> Download:
        """Stream a recording into ``sink`` (rewound on each retry); never held whole in memory.

        It asks for the plain bytes; a body compressed anyway is inflated on the way, at most
        ``max_recording_bytes`` of it. A download bringing less than MIN_PROGRESS_BYTES in
        timeout_s is abandoned (and retried), however long the whole takes."""

        async def stream(response: aiohttp.ClientResponse) -> Download:
            sink.seek(0)
            sink.truncate()
            where = _describe(response.url)
            content_type = response.headers.get("Content-Type", "")
            if not content_type.startswith(("audio/", "application/octet-stream")):
                raise RetryableApiError(
                    f"{where}: expected audio, got Content-Type {content_type or 'none'!r}", url=where
                )
            limit = self.options.max_recording_bytes
            refuse_declared_size(response, limit, where)
            inflater = Inflater(response.headers.get("Content-Encoding"), limit, where)
            digest = hashlib.sha256()
            async for data in _with_progress(response, inflater, self.options.timeout_s, where):
                sink.write(data)
                digest.update(data)
            expected = response.content_length  # of the bytes on the wire, compressed or not
            if expected is not None and inflater.wire_bytes != expected:
                raise RetryableApiError(
                    f"{where}: truncated body, {inflater.wire_bytes} of {expected} bytes", url=where
                )
            return Download(inflater.size, digest.hexdigest(), self._mask(content_type.split(";")[0].strip()))

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.options.timeout_s,
                                        sock_read=self.options.timeout_s)
        return await self._send("GET", self._resolve(url), consume=stream,
                                headers={"Accept-Encoding": "identity"}, timeout=timeout)

    async def _read_page(self, response: aiohttp.ClientResponse) -> bytes:
        return await read_capped(response, self.options.max_page_bytes, lambda: _describe(response.url))

    async def _read_transcript(self, response: aiohttp.ClientResponse) -> bytes:
        return await read_capped(response, self.options.max_transcript_bytes, lambda: _describe(response.url))

    # --- the one request path ----------------------------------------------------

    def _api_url(self, path: str) -> URL:
        return self.base_url.with_path(self.base_url.path.rstrip("/") + API_PREFIX + path, encoded=True)

    def _resolve(self, url: str, base: URL | None = None) -> URL:
        """An absolute URL (relative to ``base``, else the API's) we agree to fetch, else UnsafeUrlError."""
        try:
            target = (base or self.base_url).join(URL(url))
            target.host  # noqa: B018  (a malformed host raises only when read)
        except (ValueError, TypeError):
            raise UnsafeUrlError(f"not a valid URL: {redact_url(_QUERY.sub('', str(url)))[:200]!r}") from None
        if target.scheme not in ("http", "https"):
            raise UnsafeUrlError(f"refusing to fetch {target.scheme}: URL", url=_describe(target))
        if target.raw_user is not None or target.raw_password is not None:
            raise UnsafeUrlError(
                f"{_describe(target)}: carries credentials (userinfo before the host); refused", url=_describe(target)
            )
        if not self._is_api_origin(target) and not self.options.allow_foreign_hosts:
            raise UnsafeUrlError(
                f"{_describe(target)}: points at another host and media.allow_foreign_hosts is false",
                url=_describe(target),
            )
        return target

    def _is_api_origin(self, url: URL) -> bool:
        return (url.scheme, url.host, url.port) == (self.base_url.scheme, self.base_url.host, self.base_url.port)

    async def _get_bytes(self, path: str, params: dict[str, Any]) -> bytes:
        return await self._send("GET", self._api_url(path), params=params, consume=self._read_page)

    async def _send(
        self,
        method: str,
        url: URL,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        consume: Callable[[aiohttp.ClientResponse], Awaitable[T]],
        headers: dict[str, str] | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> T:
        """``headers`` and ``timeout`` add to (or replace) the session's for this request."""
        extra = _RequestExtras(headers or {}, timeout)
        if params:
            url = url.update_query({key: str(value) for key, value in params.items()})
        # The first attempt runs outside tenacity: setting up its retry state cost about a
        # tenth of the event loop's time on small requests (media), and most requests succeed.
        try:
            return await self._attempt(method, url, json_body, consume, extra)
        except RetryableApiError as exc:
            first_failure: RetryableApiError | None = exc
        reached = _may_have_acted(first_failure)
        async for attempt in self._retrying():
            with attempt:
                if first_failure is not None:  # tenacity's attempt 1: the policy sees it as it was
                    failure, first_failure = first_failure, None
                    raise failure
                try:
                    return await self._attempt(method, url, json_body, consume, extra)
                except NotFoundError as exc:
                    exc.after_attempt_that_may_have_acted = exc.after_attempt_that_may_have_acted or reached
                    raise
                except RetryableApiError as exc:
                    reached = reached or _may_have_acted(exc)
                    raise
        raise AssertionError("unreachable: tenacity reraises")

    async def _attempt(
        self, method: str, url: URL, json_body: Any, consume: Callable[[aiohttp.ClientResponse], Awaitable[T]],
        extra: _RequestExtras | None = None,
    ) -> T:
        with self.breaker.watching():
            try:
                async with self.throttle.slot():
                    result = await self._exchange(method, url, json_body, consume, extra)
            except RetryableApiError as exc:
                raise _unless_uncertain(method, self._without_token(exc)) from None
            except CallsyncError as exc:
                raise self._without_token(exc) from None
        self.throttle.succeeded()
        await asyncio.sleep(0)  # the slot's next holder sends its request before this body is parsed
        return result

    def _retrying(self) -> AsyncRetrying:
        # Imported here: only a request that failed once needs it (~8 ms of every run's start).
        from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

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

        timeouts = 0

        def timed_out_twice(state: RetryCallState) -> bool:
            # A lone stuck request gives up after its second timeout, not after max_retries
            # of them (minutes of wall time while every other request succeeds).
            nonlocal timeouts
            timeouts += isinstance(state.outcome.exception() if state.outcome else None, ApiTimeoutError)
            return timeouts >= MAX_TIMEOUTS_PER_REQUEST

        return AsyncRetrying(
            retry=retry_if_exception_type(RetryableApiError),
            stop=stop_after_attempt(self.options.max_retries + 1) | timed_out_twice,
            wait=wait,
            before_sleep=count_retry,
            sleep=self.breaker.pause,  # a signal or a trip ends the wait at once
            reraise=True,
        )

    async def _exchange(
        self,
        method: str,
        url: URL,
        json_body: Any,
        consume: Callable[[aiohttp.ClientResponse], Awaitable[T]],
        extra: _RequestExtras | None = None,
    ) -> T:
        assert self._session is not None, "use the client as an async context manager"
        extra = extra or _RequestExtras({}, None)
        guard = self._guard
        assert guard is not None
        for _hop in range(MAX_REDIRECTS + 1):
            if url.host != guard.api_host:  # an IP literal here; a name is checked by the resolver, on its address
                await guard.check(url.host or "")
            headers = {"Authorization": f"Bearer {self._token.get_secret_value()}"} if self._is_api_origin(url) else {}
            headers.update(extra.headers)
            sends = _Sends() if method == "DELETE" else None
            try:
                async with self._session.request(
                    method, url, json=json_body, headers=headers, allow_redirects=False,
                    **({"timeout": extra.timeout} if extra.timeout else {}),
                    **({"trace_request_ctx": sends} if sends else {}),
                ) as response:
                    self._note_answer(response)
                    location = response.headers.get("Location")
                    if response.status in REDIRECT_STATUSES and location:
                        url = self._resolve(location, base=response.url)
                        method = "GET" if response.status == 303 else method
                        continue
                    await self._raise_for_status(method, response, resent=bool(sends and sends.count > 1))
                    return await consume(response)
            except aiohttp.ClientConnectorCertificateError as exc:
                raise self._untrusted(url, exc) from None
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:  # before sending
                reason = "connect timeout" if isinstance(exc, asyncio.TimeoutError) else str(exc)  # its text has the query
                self._note_failure(exc, f"{method} {_describe(url)}: {reason}")
                raise ConnectFailedError(f"{method} {_describe(url)}: {reason}", url=_describe(url)) from None
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as exc:
                reason = type(exc).__name__ if isinstance(exc, asyncio.TimeoutError) else str(exc) or type(exc).__name__
                self._note_failure(exc, f"{method} {_describe(url)}: {reason}")
                error = ApiTimeoutError if isinstance(exc, asyncio.TimeoutError) else RetryableApiError
                raise error(f"{method} {_describe(url)}: {reason}", url=_describe(url)) from None
            except aiohttp.ClientResponseError as exc:  # malformed HTTP: bad status line, header, chunk, length
                reason = _malformed(exc)
                self._note_failure(exc, f"{method} {_describe(url)}: {reason}")
                raise RetryableApiError(f"{method} {_describe(url)}: {reason}", url=_describe(url)) from None
            except aiohttp.ClientError as exc:  # any other: its str() may hold the whole URL, so only its name
                raise ApiError(f"{method} {_describe(url)}: {type(exc).__name__}", url=_describe(url)) from None
        raise ApiError(f"{method} {_describe(url)}: more than {MAX_REDIRECTS} redirects", url=_describe(url))

    def _mask(self, text: str) -> str:
        token = self._token.get_secret_value()
        return text.replace(token, "***") if token else text

    def _without_token(self, error: CallsyncError) -> CallsyncError:
        """The error, with the token masked wherever the answer it came from put it."""
        error.args = tuple(self._mask(arg) if isinstance(arg, str) else arg for arg in error.args)
        if isinstance(error, ApiError) and error.url:
            error.url = self._mask(error.url)
        return error

    def _untrusted(self, url: URL, exc: aiohttp.ClientConnectorCertificateError) -> CallsyncError:
        reason = getattr(exc.certificate_error, "verify_message", None) or str(exc.certificate_error)
        message = (f"{_describe(url)}: TLS certificate not trusted ({reason}); callsync trusts the system's"
                   " CA certificates, or the file SSL_CERT_FILE names")
        return UntrustedApiError(message) if self._is_api_origin(url) else UntrustedCertificateError(message, url=_describe(url))

    def _note_answer(self, response: aiohttp.ClientResponse) -> None:
        if response.status >= 500:
            self.breaker.failed(self._mask(f"{_describe(response.url)}: HTTP {response.status}"))
        elif response.status == 429:
            quiet_for = parse_retry_after(response.headers.get("Retry-After")) or 0.0
            self.breaker.answered(quiet_for=min(quiet_for, self.options.give_up_after_s))
        else:
            self.breaker.answered()

    def _note_failure(self, exc: BaseException, reason: str) -> None:
        """Tell the breaker; raises its error if this failure tripped it."""
        reason = self._mask(reason)
        if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            self.breaker.connection_failed(reason)
        else:
            self.breaker.failed(reason)
        self.breaker.raise_if_tripped()

    async def _raise_for_status(self, method: str, response: aiohttp.ClientResponse, *, resent: bool = False) -> None:
        """``resent``: aiohttp sent the request again itself, after its connection dropped."""
        status = response.status
        if status < 400:
            return
        where = f"{method} {_describe(response.url)}"
        detail = await _error_detail(response)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None and retry_after > self.options.give_up_after_s:
                self.stats.rate_limited += 1
                raise self._too_long_to_wait(where, retry_after, response.url)
            self.throttle.rate_limited(retry_after)
            raise RateLimitedError(f"{where}: HTTP 429 rate limited{detail}", retry_after=retry_after, url=where)
        if status >= 500:
            raise RetryableApiError(f"{where}: HTTP {status}{detail}", status=status, url=where)
        if status in (401, 403) and self._is_api_origin(response.url):
            raise AuthError(_auth_message(status, method, detail))
        if status == 404:
            error = NotFoundError(f"{where}: HTTP 404 not found{detail}", status=404, url=where)
            error.after_attempt_that_may_have_acted = resent
            raise error
        raise ApiError(f"{where}: HTTP {status}{detail}", status=status, url=where)

    def _too_long_to_wait(self, where: str, retry_after: float, url: URL) -> CallsyncError:
        """A 429 asking for a longer wait than give_up_after_s: from the API, every request
        would be told the same, so the run stops; from a storage host, that download fails."""
        longer = (f"asked to wait {retry_after:.0f} s (Retry-After), longer than [api] give_up_after_s"
                  f" = {self.options.give_up_after_s:g}")
        if not self._is_api_origin(url):
            return ApiError(f"{where}: HTTP 429 rate limited and {longer}; not retried", status=429, url=where)
        self.breaker.stop(ApiUnreachableError(
            f"giving up: the API at {self.base_url} {longer}. What was fetched is committed; the next run continues"
        ))
        assert self.breaker.error is not None
        return self.breaker.error

    @staticmethod
    def _validate(model: type[T], body: bytes, what: str) -> T:
        try:
            return model.model_validate_json(body)  # type: ignore[attr-defined]
        except ValidationError as exc:
            raise ApiError(f"malformed {what}: {_first_error(exc)}") from None


def parse_transcript(body: bytes) -> Transcript:
    return CallTrackingClient._validate(Transcript, body, "transcript")


def parse_calls_page(body: bytes) -> CallListing:
    """Validate a whole page straight from JSON; only a page with a bad record takes the slow path."""
    try:
        page = adapter(CallsPage).validate_json(body)
        return CallListing(page["data"], [], page.get("meta") or PageMeta())
    except ValidationError:
        pass
    try:
        raw_page = adapter(RawPage).validate_json(body)
    except ValidationError as exc:
        raise MalformedListingError(f"malformed calls listing: {_first_error(exc)}") from None
    calls: list[Call] = []
    rejected: list[Rejected] = []
    for record in raw_page.data:
        try:
            calls.append(adapter(Call).validate_python(record))
        except ValidationError as exc:
            record_id = record.get("id") if isinstance(record, dict) else None
            raw = json.dumps(record, sort_keys=True, default=str)
            rejected.append(Rejected("call", str(record_id) if record_id is not None else None, raw, _first_error(exc)))
    return CallListing(calls, rejected, raw_page.meta)


def _may_have_acted(error: RetryableApiError) -> bool:
    """Did the failed request perhaps reach the API and take effect? Not after a 429 (the API
    said it did not act) or a connection that failed before the request left."""
    return not isinstance(error, (RateLimitedError, ConnectFailedError))


def _unless_uncertain(method: str, error: RetryableApiError) -> ApiError:
    """The error as it is when the request may be sent again; for a POST the API may have
    acted on (no answer, or a 5xx), an UncertainWriteError that no retry policy repeats."""
    if method in REPEATABLE_METHODS or not _may_have_acted(error):
        return error
    return UncertainWriteError(
        f"{error}: the request may or may not have taken effect", status=error.status, url=error.url
    )


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either seconds or an HTTP date; anything else (inf, nan, -5, soon) is None."""
    if not value:
        return None
    if _SECONDS.fullmatch(value.strip()):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None


_SECONDS = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")


def _auth_message(status: int, method: str, detail: str) -> str:
    if status == 401:
        return f"authentication failed (HTTP 401): the API token was rejected{detail}"
    scope = "calls:read" if method == "GET" else "calls:write"
    return f"permission denied (HTTP 403): the token lacks the {scope} scope{detail}"


async def _error_detail(response: aiohttp.ClientResponse) -> str:
    """The start of an error body: read within a small cap, inflated if need be."""
    try:
        inflater = Inflater(response.headers.get("Content-Encoding"), ERROR_BODY_BYTES, "error body")
        raw = b"".join([piece async for chunk in response.content.iter_chunked(8192) for piece in inflater.feed(chunk)])
    except (aiohttp.ClientError, asyncio.TimeoutError, ApiError):
        return ""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        body = json.loads(text)
        if isinstance(body, dict):
            text = str(body.get("message") or body.get("error") or text)
    except (ValueError, RecursionError):  # deeply nested: the status says what happened, the text is shown as is
        pass
    # One line, and no escape sequence reaches a terminal or a log viewer.
    text = _CONTROL_CHARS.sub("?", " ".join(text.split()))[:ERROR_BODY_CHARS]
    return f": {text}" if text else ""


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _malformed(exc: aiohttp.ClientResponseError) -> str:
    """What aiohttp found wrong with an answer, on one line: never its str(), which ends
    with the URL requested, query string and all (a signed link's credentials)."""
    what = " ".join(str(exc.message).split())[:ERROR_BODY_CHARS]
    return f"malformed HTTP answer: {what}" if what else "malformed HTTP answer"


@dataclass
class _Sends:
    """How many times aiohttp sent one request: it sends an idempotent one (a DELETE) again
    by itself when the connection drops, so a 404 may answer a resend of a DELETE that worked."""

    count: int = 0


def _resend_counter() -> aiohttp.TraceConfig:
    async def headers_sent(_session: Any, context: Any, _params: Any) -> None:
        if isinstance(context.trace_request_ctx, _Sends):
            context.trace_request_ctx.count += 1

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(headers_sent)
    return trace


@dataclass(frozen=True)
class _RequestExtras:
    headers: dict[str, str]
    timeout: aiohttp.ClientTimeout | None


async def _with_progress(response: aiohttp.ClientResponse, inflater: Inflater, timeout_s: float, where: str):
    """The body's inflated chunks; RetryableApiError once timeout_s passes without
    MIN_PROGRESS_BYTES more on the wire."""
    loop = asyncio.get_running_loop()
    progress = 0
    try:
        async with asyncio.timeout(timeout_s) as deadline:
            async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK):
                progress += len(chunk)
                if progress >= MIN_PROGRESS_BYTES:
                    progress = 0
                    deadline.reschedule(loop.time() + timeout_s)
                for piece in inflater.feed(chunk):
                    yield piece
            inflater.finish()
    except TimeoutError:
        raise RetryableApiError(
            f"{where}: stalled, less than {MIN_PROGRESS_BYTES // 1024} KB in {timeout_s:g} s; abandoned", url=where
        ) from None


def redact_url(url: str) -> str:
    """A URL with any user:password@ replaced by ***@, for storing and showing."""
    return _USERINFO.sub(r"\1***@", url)


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")
_QUERY = re.compile(r"[?#].*", re.DOTALL)


def _flows_page(body: bytes) -> tuple[list[Flow], PageMeta]:
    listing = _json_object(body, "flows listing")
    records = listing.get("data")
    if records is None:
        records = []
    if not isinstance(records, list):
        raise ApiError(f"malformed flows listing: data is {_json_kind(records)}, not a list")
    if not all(isinstance(raw, dict) for raw in records):
        raise ApiError("malformed flows listing: data holds something other than objects")
    try:
        meta = PageMeta.model_validate(listing.get("meta") or {})
    except ValidationError as exc:
        raise ApiError(f"malformed flows listing: meta.{_first_error(exc)}") from None
    return [_flow(raw, "flows listing") for raw in records if "id" in raw], meta


def _flow(raw: dict[str, Any], what: str) -> Flow:
    try:
        return Flow.from_raw(raw)
    except ValidationError as exc:
        raise ApiError(f"malformed {what}: {_first_error(exc)}") from None


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def _describe(url: URL) -> str:
    """A URL fit for logs and errors: no query string (signed links carry secrets there),
    and any user:password@ as ***@ (a redirect's Location may carry one)."""
    return redact_url(str(url.with_query(None).with_fragment(None)))


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
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
