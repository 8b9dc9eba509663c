"""callsync's clock: the one place a run asks what time it is.

``CALLSYNC_NOW`` (an ISO 8601 timestamp with a zone, e.g. ``2027-01-15T09:00:00Z``) pins the
clock, so tests and drills can move callsync's time past a day, a back-off or a retention
limit without sleeping. Unset, it is the real UTC time.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timezone

from pipeline.errors import ConfigError

NOW_ENV = "CALLSYNC_NOW"


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    pinned = os.environ.get(NOW_ENV)
    return _parse(pinned) if pinned else datetime.now(timezone.utc)


def today() -> date:
    """The current UTC date."""
    return now().date()


def _parse(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"${NOW_ENV}: not an ISO 8601 timestamp: {text!r}") from None
    if moment.tzinfo is None:
        raise ConfigError(f"${NOW_ENV}: give a timezone, e.g. {text}Z")
    return moment.astimezone(timezone.utc)
