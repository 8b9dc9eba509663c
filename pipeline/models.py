"""Pydantic models of the API's resources, tolerant of fields the reference doesn't list.

Unknown fields are kept (``model_extra``) so they can be stored, never a reason
to fail. Flows are undocumented: we keep their raw JSON beside the few fields we
can rely on.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, with_config
from typing_extensions import Annotated, NotRequired, TypedDict


# Every model (defer_build) and adapter (see adapter) builds its validator when first
# used, not when imported: a run uses few of them (plain listings need PageMeta alone),
# and building them all took ~25 ms of every run's start.


class _Resource(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)


class PageMeta(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)
    page: int = 1
    per_page: int = 0
    total: int = 0


MAX_INTEGER = 2**31 - 1


@with_config(ConfigDict(extra="allow"))
class Call(TypedDict):
    """A call, as a plain dict: validated straight from the page's JSON bytes and handed to
    Arrow without building a model object per call (the hot path of a backfill)."""

    id: Annotated[str, StringConstraints(min_length=1)]
    tracking_number: NotRequired[str | None]
    caller_number: NotRequired[str | None]
    duration_seconds: NotRequired[Annotated[int, Field(ge=0, le=MAX_INTEGER)] | None]  # calls.duration_seconds is an INTEGER
    outcome: NotRequired[str | None]
    campaign_id: NotRequired[str | None]
    affiliate_id: NotRequired[str | None]
    source: NotRequired[str | None]
    caller_city: NotRequired[str | None]
    caller_state: NotRequired[str | None]
    recording_url: NotRequired[str | None]
    transcript_url: NotRequired[str | None]
    sentiment: NotRequired[str | None]
    started_at: AwareDatetime


CALL_FIELDS = frozenset(Call.__annotations__)


class CallsPage(TypedDict):
    """The fast path: a whole listing body validated straight from JSON bytes."""

    data: list[Call]
    meta: NotRequired[PageMeta]


class RawPage(BaseModel):
    """The slow path, for a body with a bad record: records kept as plain JSON."""

    model_config = ConfigDict(extra="allow", defer_build=True)
    data: list[Any]
    meta: PageMeta = PageMeta()


class TrackingNumber(_Resource):
    id: str = Field(min_length=1)
    phone_number: str | None = None
    display_name: str | None = None
    type: str | None = None
    status: str | None = None
    call_flow_id: str | None = None
    recording_enabled: bool | None = None
    created_at: AwareDatetime | None = None


class NumbersPage(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)
    data: list[TrackingNumber]
    meta: PageMeta = PageMeta()


class TranscriptSegment(_Resource):
    speaker: str | None = None
    text: str = ""
    timestamp: float | None = None


class Transcript(_Resource):
    call_id: str | None = None
    segments: list[TranscriptSegment] = []


class Flow(BaseModel):
    model_config = ConfigDict(defer_build=True)
    id: str
    name: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    raw: dict[str, Any]

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> Flow:
        return cls(
            id=str(raw["id"]),
            name=raw.get("name") or raw.get("display_name"),
            created_at=_maybe_datetime(raw.get("created_at")),
            updated_at=_maybe_datetime(raw.get("updated_at")),
            raw=raw,
        )


def _maybe_datetime(value: Any) -> datetime | None:
    try:
        return adapter(AwareDatetime).validate_python(value) if value else None
    except ValueError:
        return None


@cache
def adapter(kind: Any) -> TypeAdapter:
    """The TypeAdapter of CallsPage, RawPage, Call, ..., built on first use."""
    return TypeAdapter(kind)
