"""Fault settings the servers read on every request, and the per-token rate limiter."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from datetime import date

_RATES = ("error_rate", "drop_rate", "drift_rate", "drop_after_post_rate")
_FLAGS = ("redirect_recordings", "foreign_recording_urls", "shuffle_pages")
# Recording answers that go wrong once per recording, in this order when several are on
# (the next answer is whole); hold_recordings holds every body while it is on. See broken.py.
RECORDING_FAULTS = ("cut_recordings", "html_recordings", "short_recordings")
_FLAGS += RECORDING_FAULTS + ("hold_recordings",)
# A calls listing that cannot be true (see server.list_calls); each applies to the listings
# whose date range holds listing_fault_day, or to every listing when that is unset.
_LISTING_FLAGS = ("impossible_total", "repeated_ids", "growing_total")
IMPOSSIBLE_TOTAL = 1_000_000_000
OVERSIZED_PER_PAGE = 10  # what meta.per_page says while a page holds oversized_pages records


@dataclass
class Faults:
    latency_ms: float = 0
    error_rate: float = 0.0
    drop_rate: float = 0.0
    rate_limit: float | None = None  # requests per second per token; None = unlimited
    rate_burst: int | None = None  # bucket capacity; None = max(1, rate_limit)
    redirect_recordings: bool = False
    foreign_recording_urls: bool = False
    drift_rate: float = 0.0
    shuffle_pages: bool = True
    # Fraction of POSTs to the API that are acted on (a number bought, a flow created) and
    # then get no answer: the connection is dropped, as when a network fails mid-response.
    drop_after_post_rate: float = 0.0
    cut_recordings: bool = False  # the connection closes in the middle of the body
    html_recordings: bool = False  # 200 with an HTML error page instead of audio
    short_recordings: bool = False  # the body ends before its Content-Length, then the connection closes
    hold_recordings: bool = False  # all but the last KiB of the body, then held until this is turned off
    impossible_total: bool = False  # meta.total of IMPOSSIBLE_TOTAL
    oversized_pages: int = 0  # pages hold this many records while meta.per_page says OVERSIZED_PER_PAGE
    repeated_ids: bool = False  # every page holds page 1's records
    growing_total: bool = False  # meta.total one higher with every listing served, no calls behind it
    listing_fault_day: str | None = None  # YYYY-MM-DD
    # A hostile API (issue #22; answers in hostile.py). Page knobs hit the listings whose
    # dates hold fault_day, media knobs the media of fault_call; unset, they hit everything.
    fault_day: str | None = None  # YYYY-MM-DD
    fault_call: str | None = None
    page_gzip_bomb_mb: float = 0  # calls pages: gzip inflating to this many MB (0: off)
    recording_gzip_bomb_mb: float = 0  # recordings: the same
    gzip_recordings: bool = False  # recordings gzip-compressed, even when identity was asked
    numbers_shape: str = "ok"  # ok, array, data_object, wrong_types
    flows_shape: str = "ok"
    calls_shape: str = "ok"
    transcript_shape: str = "ok"
    userinfo_urls: bool = False  # media URLs carry user:pass@ (on their own host)
    media_url_host: str | None = None  # media URLs point at this origin instead, e.g. http://169.254.169.254
    endless_recordings: bool = False  # a recording that streams a few bytes every 50 ms, forever
    huge_transcript_segments: int = 0  # the transcript holds this many segments (0: off)

    def listing_faults_apply(self, start: date | None, end: date | None) -> bool:
        """Do the listing faults apply to a listing of [start, end]?"""
        if not (self.impossible_total or self.oversized_pages or self.repeated_ids or self.growing_total):
            return False
        if self.listing_fault_day is None:
            return True
        day = date.fromisoformat(self.listing_fault_day)
        return (start is None or start <= day) and (end is None or day <= end)

    def update(self, **changes) -> "Faults":
        """Validate and apply changes (e.g. from JSON); raises ValueError on bad names or values."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        checked = {name: _checked(name, value) for name, value in changes.items()}
        for name, value in checked.items():
            setattr(self, name, value)
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def parse_assignment(text: str) -> tuple[str, object]:
    """`NAME=VALUE` from the command line. A text knob (a day, a call id, an origin, a
    shape) takes the text as it is, or null; any other value is read as JSON (true, 0.2,
    null). Faults.update checks the result."""
    name, equals, raw = text.partition("=")
    name = name.strip()
    if not equals or not name:
        raise ValueError(f"{text!r} is not NAME=VALUE")
    if name in _TEXT_KNOBS + _SHAPE_KNOBS + ("listing_fault_day",):
        return name, None if raw == "null" else raw
    try:
        return name, json.loads(raw)
    except ValueError:
        raise ValueError(f"{name}: {raw!r} is not a number, true, false or null") from None


_HOSTILE_FLAGS = ("gzip_recordings", "userinfo_urls", "endless_recordings")
_SHAPE_KNOBS = ("numbers_shape", "flows_shape", "calls_shape", "transcript_shape")
_TEXT_KNOBS = ("fault_day", "fault_call", "media_url_host")


def _checked_hostile(name: str, value):
    if name in _HOSTILE_FLAGS:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
    elif name in _SHAPE_KNOBS:
        if value not in ("ok", "array", "data_object", "wrong_types"):
            raise ValueError(f"{name} must be one of ok, array, data_object, wrong_types")
    elif value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string or null")
    elif name == "fault_day" and value is not None:
        _checked_day(name, value)
    elif name == "media_url_host" and value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("media_url_host must be an http(s) origin")
    return value


def _checked_day(name: str, value) -> str:
    try:
        date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a date as YYYY-MM-DD or null") from None
    return value


def _checked(name: str, value):
    if name in _HOSTILE_FLAGS + _SHAPE_KNOBS + _TEXT_KNOBS:
        return _checked_hostile(name, value)
    if name == "listing_fault_day":
        return value if value is None else _checked_day(name, value)
    if name in _FLAGS or name in _LISTING_FLAGS:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if value is None and name in ("rate_limit", "rate_burst"):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number")
    if name in _RATES and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1")
    if value < 0 or (name in ("rate_limit", "rate_burst") and value == 0):
        raise ValueError(f"{name} must be positive")
    if name in _HOSTILE_FLAGS + _SHAPE_KNOBS + _TEXT_KNOBS:
        return _checked_hostile(name, value)
    return int(value) if name in ("rate_burst", "oversized_pages") else value


class RateLimiter:
    """Token buckets keyed by bearer token; settings are passed per call so they can change live."""

    def __init__(self) -> None:
        self._buckets: dict[str | None, tuple[float, float]] = {}  # key -> (tokens, last refill time)
        self._settings: tuple[float, float] | None = None

    def retry_after(self, key: str | None, rate: float | None, burst: int | None, now: float) -> float | None:
        """Take one token; None if allowed, else seconds until a token is available."""
        if rate is None:
            return None
        capacity = float(burst) if burst else max(1.0, float(rate))
        if (rate, capacity) != self._settings:  # new limits: start everyone with a full bucket
            self._buckets.clear()
            self._settings = (rate, capacity)
        tokens, last = self._buckets.get(key, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return None
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / rate


def retry_after_header(wait_seconds: float) -> str:
    return str(max(1, math.ceil(wait_seconds)))
