"""API records -> Arrow tables, in the column layout of the DuckDB tables load writes.

Kept apart from load so that extract can turn pages into Arrow as they arrive
without depending on DuckDB.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.json as pa_json

from pipeline.client import Rejected, parse_calls_page, redact_url
from pipeline.errors import ApiError
from pipeline.models import CALL_FIELDS, Call, Flow, PageMeta, TrackingNumber

CALL_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("tracking_number", pa.string()),
        ("caller_number", pa.string()),
        ("duration_seconds", pa.int32()),
        ("outcome", pa.string()),
        ("campaign_id", pa.string()),
        ("affiliate_id", pa.string()),
        ("source", pa.string()),
        ("caller_city", pa.string()),
        ("caller_state", pa.string()),
        ("recording_url", pa.string()),
        ("transcript_url", pa.string()),
        ("sentiment", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("extra", pa.string()),
    ]
)
NUMBER_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("phone_number", pa.string()),
        ("display_name", pa.string()),
        ("type", pa.string()),
        ("status", pa.string()),
        ("call_flow_id", pa.string()),
        ("recording_enabled", pa.bool_()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("extra", pa.string()),
    ]
)
FLOW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("name", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("updated_at", pa.timestamp("us", tz="UTC")),
        ("raw", pa.string()),
    ]
)
REJECTED_SCHEMA = pa.schema(
    [("entity", pa.string()), ("record_id", pa.string()), ("error", pa.string()), ("raw", pa.string())]
)


@dataclass(frozen=True)
class Listings:
    calls: pa.Table  # every valid record of the pages, in order (ids may repeat)
    rejected: list[Rejected]
    metas: list[PageMeta]  # one per page
    page_calls: tuple[int, ...] = ()  # rows of `calls` from each page, in page order
    page_records: tuple[int, ...] = ()  # records on each page, valid or rejected


def read_listings(bodies: Sequence[bytes]) -> Listings:
    """Calls listing bodies -> their records as one Arrow table.

    Pages of plain records (the reference's fields only, each of its type, started_at
    in RFC 3339 with a zone) are read by Arrow's JSON reader straight from the bytes,
    all at once: no Python object per call, which is most of a backfill's CPU. If any
    page holds anything else, every page goes through pydantic instead, which keeps
    unknown fields and rejects bad records with their raw payload. Both ways give the
    same table for plain pages (tests/test_columns.py holds them to it)."""
    return _without_credentials(_read_plain(bodies) or _read_validated(bodies), bodies)


_URL_COLUMNS = ("recording_url", "transcript_url")


def _without_credentials(listings: Listings, bodies: Sequence[bytes]) -> Listings:
    """Media URLs are stored with any user:password@ redacted (callsync refuses to fetch
    them anyway). Only pages with an @ somewhere are looked at."""
    if not any(b"@" in body for body in bodies):
        return listings
    calls = listings.calls
    for name in _URL_COLUMNS:
        values = calls.column(name).to_pylist()
        if any(value and "@" in value for value in values):
            redacted = pa.array([redact_url(value) if value else value for value in values], pa.string())
            calls = calls.set_column(calls.schema.get_field_index(name), name, redacted)
    return Listings(calls, listings.rejected, listings.metas)


def concat_listings(parts: Sequence[Listings]) -> Listings:
    if len(parts) == 1:
        return parts[0]
    return Listings(
        pa.concat_tables([part.calls for part in parts]) if parts else CALL_SCHEMA.empty_table(),
        [record for part in parts for record in part.rejected],
        [meta for part in parts for meta in part.metas],
        tuple(rows for part in parts for rows in part.page_calls),
        tuple(records for part in parts for records in part.page_records),
    )


def _read_validated(bodies: Sequence[bytes]) -> Listings:
    pages = [parse_calls_page(body) for body in bodies]
    return concat_listings(
        [
            Listings(
                calls_to_arrow(page.calls), page.rejected, [page.meta],
                (len(page.calls),), (len(page.calls) + len(page.rejected),),
            )
            for page in pages
        ]
    )


# started_at is read as text: Arrow would take a time without a zone as UTC, pydantic rejects it.
_PLAIN_CALL = pa.struct(
    [
        field.with_type(pa.string()) if field.name == "started_at" else field
        for field in CALL_SCHEMA
        if field.name != "extra"
    ]
)
_META = pa.struct([("page", pa.int64()), ("per_page", pa.int64()), ("total", pa.int64())])
_PLAIN_PARSE = {
    # "infer": unknown keys do not fail the read. Beside the records (meta's, the page's)
    # they are harmless; in a record they send the pages to pydantic (below).
    multiline: pa_json.ParseOptions(
        explicit_schema=pa.schema([("data", pa.list_(_PLAIN_CALL)), ("meta", _META)]),
        unexpected_field_behavior="infer",
        newlines_in_values=multiline,
    )
    for multiline in (False, True)
}
_PLAIN_READ = pa_json.ReadOptions(use_threads=False, block_size=1 << 30)
_RFC3339_WITH_ZONE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})"
)


def _read_plain(bodies: Sequence[bytes]) -> Listings | None:
    if not bodies:
        return None
    multiline = any(b"\n" in body for body in bodies)  # a pretty-printed page spans lines
    try:
        table = pa_json.read_json(
            pa.BufferReader(b"\n".join(bodies)), read_options=_PLAIN_READ, parse_options=_PLAIN_PARSE[multiline]
        )
    except pa.ArrowInvalid:  # not JSON objects, or a field of another type than the reference's
        return None
    data = table.column("data")
    if table.num_rows != len(bodies) or data.null_count or data.type.value_type != _PLAIN_CALL:
        return None
    records = pa.Table.from_struct_array(pa.concat_arrays([_list_values(chunk) for chunk in data.chunks]))
    started_at = _utc_timestamps(records.column("started_at").to_pylist())
    if started_at is None or not _plainly_valid(records):
        return None
    columns = [started_at if name == "started_at" else records.column(name) for name in records.column_names]
    calls = pa.Table.from_arrays([*columns, pa.nulls(records.num_rows, pa.string())], schema=CALL_SCHEMA)
    metas = [PageMeta(**{key: value for key, value in (meta or {}).items() if value is not None})
             for meta in table.column("meta").to_pylist()]
    rows = tuple(_list_lengths(data))
    return Listings(calls, [], metas, rows, rows)


def _list_values(lists: pa.ListArray) -> pa.Array:
    """The records of every page, without ListArray.flatten: it imports pyarrow.compute (~8 MB)."""
    first, last = lists.offsets[0].as_py(), lists.offsets[-1].as_py()
    return lists.values.slice(first, last - first)


def _list_lengths(lists: pa.ChunkedArray) -> list[int]:
    lengths = []
    for chunk in lists.chunks:
        offsets = chunk.offsets.to_pylist()
        lengths.extend(end - start for start, end in zip(offsets, offsets[1:]))
    return lengths


def _utc_timestamps(values: list[str | None]) -> pa.Array | None:
    """started_at as pydantic's AwareDatetime reads it, for the one format it surely shares
    with datetime.fromisoformat; None sends the pages to pydantic."""
    if not all(value is not None and _RFC3339_WITH_ZONE.fullmatch(value) for value in values):
        return None
    try:
        return pa.array(map(datetime.fromisoformat, values), CALL_SCHEMA.field("started_at").type, size=len(values))
    except ValueError:  # e.g. February 30th: pydantic rejects the record
        return None


def _plainly_valid(records: pa.Table) -> bool:
    """The constraints of models.Call beyond each field's type."""
    ids = records.column("id")
    durations = [value for value in records.column("duration_seconds").to_pylist() if value is not None]
    return not ids.null_count and all(ids.to_pylist()) and (not durations or min(durations) >= 0)


def calls_to_arrow(calls: Sequence[Call]) -> pa.Table:
    table = pa.Table.from_pylist(calls, schema=_CALL_FIELDS_SCHEMA)  # ignores keys beyond the schema
    return table.append_column("extra", _extras(calls))


_CALL_FIELDS_SCHEMA = pa.schema([field for field in CALL_SCHEMA if field.name != "extra"])


def _extras(calls: Sequence[Call]) -> pa.Array:
    """The fields the reference does not list, as JSON per call (usually none at all)."""
    if all(map(CALL_FIELDS.issuperset, calls)):
        return pa.nulls(len(calls), pa.string())
    return pa.array([_call_extra_json(call) for call in calls], pa.string())


def _call_extra_json(call: Call) -> str | None:
    unknown = call.keys() - CALL_FIELDS
    return json.dumps({key: call[key] for key in sorted(unknown)}, default=str) if unknown else None


def last_row_per_id(table: pa.Table) -> pa.Table:
    """One row per ``id``: the last one in the table (rows are in the order they were seen).

    Counted in Python rather than with pyarrow.compute: importing that module alone costs
    ~8 MB of RSS, and a window's ids are few. (``take`` loads it, but only for duplicates.)"""
    ids = table.column("id").to_pylist()
    last_row = {row_id: row for row, row_id in enumerate(ids)}
    if len(last_row) == len(ids):
        return table
    return table.take(sorted(last_row.values()))


def numbers_to_arrow(numbers: Sequence[TrackingNumber]) -> pa.Table:
    columns = {name: [getattr(number, name) for number in numbers] for name in NUMBER_SCHEMA.names if name != "extra"}
    columns["extra"] = [_extra_json(number) for number in numbers]
    return pa.table(columns, schema=NUMBER_SCHEMA)


def flows_to_arrow(flows: Sequence[Flow]) -> pa.Table:
    return pa.table(
        {
            "id": [flow.id for flow in flows],
            "name": [flow.name for flow in flows],
            "created_at": [flow.created_at for flow in flows],
            "updated_at": [flow.updated_at for flow in flows],
            "raw": [json.dumps(flow.raw, sort_keys=True) for flow in flows],
        },
        schema=FLOW_SCHEMA,
    )


def rejected_to_arrow(rejected: Sequence[Rejected]) -> pa.Table:
    return pa.table(
        {
            "entity": [record.entity for record in rejected],
            "record_id": [record.record_id for record in rejected],
            "error": [record.error for record in rejected],
            "raw": [record.raw_json for record in rejected],
        },
        schema=REJECTED_SCHEMA,
    )


def _extra_json(model: Any) -> str | None:
    extra = model.model_extra
    return json.dumps(extra, sort_keys=True, default=str) if extra else None


SEGMENT_SCHEMA = pa.schema(
    [
        ("call_id", pa.string()),
        ("segment_index", pa.int32()),
        ("speaker", pa.string()),
        ("text", pa.string()),
        ("timestamp", pa.float64()),
    ]
)
_TRANSCRIPT_PARSE = pa_json.ParseOptions(
    explicit_schema=pa.schema(
        [("segments", pa.list_(pa.struct([("speaker", pa.string()), ("text", pa.string()), ("timestamp", pa.float64())])))]
    ),
    unexpected_field_behavior="ignore",
    newlines_in_values=True,
)


def transcript_to_arrow(call_id: str, body: bytes) -> pa.Table:
    """A (big) transcript's segments, read by Arrow straight from the JSON bytes: a
    million segments as a few columns, not a million Python objects (~16x the body).
    Raises ApiError for a body of another shape."""
    try:
        table = pa_json.read_json(
            pa.BufferReader(body),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=max(len(body) + 1, 1 << 20)),
            parse_options=_TRANSCRIPT_PARSE,
        )
    except pa.ArrowInvalid as exc:
        raise ApiError(f"malformed transcript: {str(exc).splitlines()[0][:200]}") from None
    segments = table.column("segments")
    if table.num_rows != 1 or segments.null_count:
        raise ApiError("malformed transcript: expected one object with a segments list")
    values = pa.Table.from_struct_array(_list_values(segments.chunk(0)))
    rows = values.num_rows
    text = values.column("text")
    if text.null_count:
        text = pa.array(["" if value is None else value for value in text.to_pylist()], pa.string())
    return pa.Table.from_arrays(
        [
            pa.array([call_id] * rows, pa.string()) if rows else pa.array([], pa.string()),
            pa.array(range(rows), pa.int32()),
            values.column("speaker"),
            text,
            values.column("timestamp"),
        ],
        schema=SEGMENT_SCHEMA,
    )
