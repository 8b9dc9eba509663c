"""Fault settings the servers read on every request, and the per-token rate limiter."""

from __future__ import annotations

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
_LISTING_FLAGS = ("impossible_total", "repeated_ids")
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
    listing_fault_day: str | None = None  # YYYY-MM-DD

    def listing_faults_apply(self, start: date | None, end: date | None) -> bool:
        """Do the listing faults apply to a listing of [start, end]?"""
        if not (self.impossible_total or self.oversized_pages or self.repeated_ids):
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


def _checked(name: str, value):
    if name == "listing_fault_day":
        if value is not None:
            try:
                date.fromisoformat(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a date as YYYY-MM-DD or null") from None
        return value
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
