"""API records -> Arrow tables, in the column layout of the DuckDB tables load writes.

Kept apart from load so that extract can turn pages into Arrow as they arrive
without depending on DuckDB.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import pyarrow as pa

from pipeline.client import Rejected
from pipeline.models import CALL_FIELDS, Call, Flow, TrackingNumber

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
