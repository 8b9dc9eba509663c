"""The account's tracking numbers and call flows: listed, bought, created, changed, deleted.

Plain async functions over ``CallTrackingClient`` for ``callsync numbers`` and
``callsync flows``. Each returns the API's objects as plain JSON values, so that
the CLI prints them as the API sent them. A changing command can describe its
request instead of sending it (``planned_*``, for --dry-run).

A purchase costs money: a POST whose answer never came (or was a 5xx) is never sent
again (the client's retry policy); here it becomes an ``UncertainChange`` carrying
the account's listing, for a person to check before trying again.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Awaitable, BinaryIO
from urllib.parse import quote

from pipeline.client import API_PREFIX, CallTrackingClient
from pipeline.errors import (
    CallsyncError, NotFoundError, SignalReceived, UncertainWriteError, UsageError, command_hint,
)
from pipeline.interrupt import unless_signalled
from pipeline.models import Flow, TrackingNumber

NUMBER_TYPES = ("local", "toll_free", "vanity")
NUMBER_COLUMNS = ["id", "phone_number", "display_name", "type", "status", "call_flow_id", "recording_enabled", "created_at"]
FLOW_COLUMNS = ["id", "name", "created_at", "updated_at"]
_AREA_CODE = re.compile(r"[0-9]{3}")  # not \d, which matches any Unicode digit (４１５)
# JSON input is sent on to the API: a flow nests steps a few levels deep, never hundreds, and
# no field is a number of thousands of digits (Python's own limit for turning one into int).
MAX_JSON_DEPTH = 100
MAX_INTEGER_DIGITS = 4300
# A flow is a few KB; read whole, a 200 MB file took 850 MB of memory before it was refused.
MAX_JSON_INPUT_BYTES = 4 * 1024 * 1024

JsonObject = dict[str, Any]


class UncertainChange(CallsyncError):
    """A purchase or a new flow that may or may not exist now; ``listing`` shows what does."""

    def __init__(self, message: str, listing: list[JsonObject] | None, exit_code: int = 1):
        super().__init__(message)
        self.listing = listing
        self.exit_code = exit_code


@dataclass(frozen=True)
class PlannedRequest:
    """What a changing command would send: never the token."""

    method: str
    path: str
    body: JsonObject | None

    def as_dict(self) -> JsonObject:
        return {"method": self.method, "path": self.path, "body": self.body}


def next_sync_note(table: str) -> str:
    return f"the local table {table} shows this after the next `{command_hint('sync')}` (every run refreshes it)"


# --- checking what the user typed, before any request ------------------------------------


def number_type(value: str) -> str:
    if value not in NUMBER_TYPES:
        raise UsageError(f"--type {value!r}: must be one of {', '.join(NUMBER_TYPES)}")
    return value


def area_code(value: str | None) -> str | None:
    if value is not None and not _AREA_CODE.fullmatch(value):
        raise UsageError(f"--area-code {value!r}: must be three digits, e.g. 415")
    return value


def json_object(text: str, source: str) -> JsonObject:
    """``text`` parsed as one JSON object; errors name ``source`` and the line and column.
    Hostile input (nesting past MAX_JSON_DEPTH, an integer of thousands of digits) is
    refused the same way, in one line, never with a traceback; so are NaN and Infinity,
    which Python reads but standard JSON (the API, jq) does not have."""
    try:
        value = json.loads(text, parse_int=_integer, parse_float=_finite, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except _Refused as exc:
        raise UsageError(f"{source}: {exc}") from None
    except RecursionError:
        raise UsageError(f"{source}: nested too deeply (at most {MAX_JSON_DEPTH} levels of arrays and objects)") from None
    if not isinstance(value, dict):
        line, column = _position(text, len(text) - len(text.lstrip()))
        raise UsageError(f"{source}: expected a JSON object, got {_json_kind(value)} at line {line}, column {column}")
    _check_tree(value, source)
    return value


class _Refused(ValueError):
    """A value json.loads must not turn into Python: raised by its hooks, with the reason."""


def _integer(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise _Refused(f"an integer of {len(digits.lstrip('-'))} digits (at most {MAX_INTEGER_DIGITS})")
    return int(digits)


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e999: Python reads it as inf, and would send Infinity
        raise _Refused(f"the number {text[:40]} is too large for a JSON number (a 64-bit float)")
    return number


def _no_constant(name: str) -> float:
    raise _Refused(f"{name} is not JSON (standard JSON has no NaN or Infinity)")


def _check_tree(value: Any, source: str) -> None:
    """Nesting within MAX_JSON_DEPTH, and every key and string valid Unicode (JSON's
    ``\\ud800`` escape makes a lone surrogate, which no UTF-8 body can carry). Iterative,
    so any depth is measured."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, str):
            _unicode(item, source)
            continue
        children = [*item, *item.values()] if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if level > MAX_JSON_DEPTH:
            raise UsageError(f"{source}: nested too deeply (at most {MAX_JSON_DEPTH} levels of arrays and objects)")
        stack.extend((child, level + 1) for child in children)


def _unicode(text: str, source: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(
            f"{source}: a string holding a lone surrogate (\\u{ord(text[exc.start]):04x}), not valid Unicode"
        ) from None


def read_json_input(file: str | None, text: str | None, stdin: BinaryIO) -> JsonObject:
    """The object from --file F (``-``: standard input, read as bytes) or --json TEXT: exactly
    one of them. Each must be UTF-8 text, and so must every string in it: nothing else is sent."""
    if (file is None) == (text is None):
        raise UsageError("give the JSON object with exactly one of --file F, --file - (standard input) or --json TEXT")
    if text is not None:
        raw, source = text_argument(text, "--json").encode("utf-8"), "--json"
    elif file == "-":
        raw, source = stdin.read(MAX_JSON_INPUT_BYTES + 1), "--file - (standard input)"
    else:
        raw, source = _read_file(file), f"--file {file}"
    if len(raw) > MAX_JSON_INPUT_BYTES:
        raise UsageError(f"{source}: more than {MAX_JSON_INPUT_BYTES // (1024 * 1024)} MB of JSON; refused")
    return json_object(_utf8(raw, source), source)


def _read_file(file: str) -> bytes:
    """At most one byte more than MAX_JSON_INPUT_BYTES: enough to know it is too large."""
    try:
        with open(file, "rb") as handle:
            return handle.read(MAX_JSON_INPUT_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"--file {file}: cannot read it: {exc.strerror or exc}") from None


def text_argument(value: str, name: str) -> str:
    """A command-line value that goes to the API: refused unless it was UTF-8 (Python keeps
    other bytes of argv as lone surrogates, which no JSON body or URL may carry)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = ord(value[exc.start])
        shown = f"byte 0x{byte - 0xDC00:02x}" if 0xDC80 <= byte <= 0xDCFF else f"U+{byte:04X}"
        raise UsageError(f"{name}: not UTF-8 text ({shown} at character {exc.start + 1})") from None
    return value


def _utf8(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise UsageError(
            f"{source}: not UTF-8 text at line {line}, column {column} (byte 0x{raw[exc.start]:02x})"
        ) from None


def _position(text: str, index: int) -> tuple[int, int]:
    before = text[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "a number"


# --- tracking numbers -------------------------------------------------------------------------


async def numbers(client: CallTrackingClient) -> list[JsonObject]:
    return [_number_json(number) for number in await client.all_numbers()]


def purchase_body(kind: str, area: str | None, display_name: str | None) -> JsonObject:
    body = {"type": kind, "area_code": area, "display_name": display_name}
    return {key: value for key, value in body.items() if value is not None}


def planned_purchase(kind: str, area: str | None, display_name: str | None) -> PlannedRequest:
    return PlannedRequest("POST", f"{API_PREFIX}/numbers", purchase_body(kind, area, display_name))


async def buy_number(client: CallTrackingClient, kind: str, area: str | None, display_name: str | None) -> JsonObject:
    try:
        number = await unless_signalled(client.purchase_number(kind, area_code=area, display_name=display_name))
    except (UncertainWriteError, SignalReceived) as exc:
        raise await _uncertain(exc, "numbers", numbers(client)) from None
    return _number_json(number)


def _number_json(number: TrackingNumber) -> JsonObject:
    """The number as the API sent it: its own fields only, unknown ones included."""
    return number.model_dump(mode="json", exclude_unset=True)


# --- call flows -----------------------------------------------------------------------------------


async def flows(client: CallTrackingClient) -> list[JsonObject]:
    return [flow.raw for flow in await client.list_flows()]


async def flow(client: CallTrackingClient, flow_id: str) -> JsonObject:
    """One flow. The API has no endpoint for one flow: it is found in the listing."""
    found = {flow.id: flow for flow in await client.list_flows()}.get(flow_id)
    if found is None:
        raise NotFoundError(f"flow {flow_id} not found", status=404)
    return found.raw


def planned_create(body: JsonObject) -> PlannedRequest:
    return PlannedRequest("POST", f"{API_PREFIX}/flows", body)


def planned_update(flow_id: str, changes: JsonObject) -> PlannedRequest:
    return PlannedRequest("PATCH", _flow_path(flow_id), changes)


def planned_delete(flow_id: str) -> PlannedRequest:
    return PlannedRequest("DELETE", _flow_path(flow_id), None)


async def create_flow(client: CallTrackingClient, body: JsonObject) -> JsonObject:
    try:
        created: Flow = await unless_signalled(client.create_flow(body))
    except (UncertainWriteError, SignalReceived) as exc:
        raise await _uncertain(exc, "flows", flows(client)) from None
    return created.raw


async def update_flow(client: CallTrackingClient, flow_id: str, changes: JsonObject) -> JsonObject:
    try:
        return (await unless_signalled(client.update_flow(flow_id, changes))).raw
    except NotFoundError as exc:
        raise _unknown_flow(flow_id, exc) from None
    except SignalReceived as exc:
        raise _interrupted_change(exc, f"flows show {flow_id}") from None


async def delete_flow(client: CallTrackingClient, flow_id: str) -> bool:
    """True: deleted. False: gone already when the DELETE was retried after an attempt whose
    answer was lost (a timeout, a dropped connection, a 5xx), which most likely deleted it.
    A 404 to the first attempt is an unknown flow."""
    try:
        return await unless_signalled(client.delete_flow(flow_id))
    except NotFoundError as exc:
        raise _unknown_flow(flow_id, exc) from None
    except SignalReceived as exc:
        raise _interrupted_change(exc, "flows list") from None


def gone_on_retry_note(flow_id: str) -> str:
    return (f"flow {flow_id} was already gone when the DELETE was retried: the earlier attempt, whose answer"
            " was lost, most likely deleted it")


def _flow_path(flow_id: str) -> str:
    return f"{API_PREFIX}/flows/{quote(flow_id, safe='')}"


def _unknown_flow(flow_id: str, exc: NotFoundError) -> NotFoundError:
    return NotFoundError(f"flow {flow_id} not found (HTTP 404 from {exc.url or 'the API'})", status=404, url=exc.url)


# --- a change that may or may not have happened ------------------------------------------------------


async def _uncertain(
    error: UncertainWriteError | SignalReceived, what: str, listing: Awaitable[list[JsonObject]]
) -> UncertainChange:
    """The change's uncertain end, with the account's listing to check (a second signal
    during the listing leaves only the command to check with)."""
    code = error.exit_code  # 4, or 130/143 after a signal
    if isinstance(error, SignalReceived):
        happened = f"{error} while the request was in flight: it may or may not have taken effect"
    else:
        happened = f"{error}, so it was not sent again"
    try:
        rows = await unless_signalled(listing)
    except CallsyncError as exc:
        return UncertainChange(
            f"{happened}; listing the account's {what} failed too ({exc}):"
            f" check with `{command_hint(what + ' list')}` before trying again",
            None,
            code,
        )
    return UncertainChange(
        f"{happened}: the account's {len(rows)} {what} are listed on standard output; check them before trying again",
        rows,
        code,
    )


def _interrupted_change(error: SignalReceived, check: str) -> CallsyncError:
    interrupted = CallsyncError(
        f"{error} while the request was in flight: the change may or may not have taken effect;"
        f" check with `{command_hint(check)}`"
    )
    interrupted.exit_code = error.exit_code
    return interrupted
