"""Recording answers that go wrong (fault knobs in faults.py), for the client's checks.

``cut_recordings``, ``html_recordings`` and ``short_recordings`` each break the first answer
for a recording (per host), and the next answer for it is whole: a client must notice,
retry, and end with a byte-exact file. ``hold_recordings`` sends every recording body but
its last KiB and holds it there while the knob is on (a download caught in the middle,
for tests that kill a run mid-download), then sends the rest.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from .faults import RECORDING_FAULTS, Faults

HOLD_TAIL = 1024  # bytes held back by hold_recordings
SHORT_BY = 1024  # bytes short_recordings leaves out
HOLD_POLL_S = 0.01
HTML_ERROR_PAGE = (
    "<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head>"
    "<body><h1>Service Unavailable</h1><p>The storage backend is busy. Please try again.</p></body></html>"
)


async def recording(request: web.Request, faults: Faults, broken: set[tuple[str, str]], call_id: str,
                    body: bytes) -> web.StreamResponse | None:
    """The answer a fault knob makes for this recording, or None for the plain one.
    ``broken`` remembers which (knob, call) were broken already."""
    for knob in RECORDING_FAULTS:
        if getattr(faults, knob) and (knob, call_id) not in broken:
            broken.add((knob, call_id))
            return await _ANSWERS[knob](request, body)
    if faults.hold_recordings:
        return await _held(request, faults, body)
    return None


async def _audio_headers(request: web.Request, body: bytes, *, close: bool = False) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "audio/mpeg"})
    response.content_length = len(body)
    if close:
        response.force_close()
    await response.prepare(request)
    return response


async def _cut(request: web.Request, body: bytes) -> web.StreamResponse:
    """Half the body, then the connection is reset, as when a network path breaks."""
    await _audio_headers(request, body)
    transport = request.transport
    if transport is not None:
        transport.write(body[: len(body) // 2])
        while transport.get_write_buffer_size():  # handed to the kernel before the reset
            await asyncio.sleep(0)
        transport.abort()
    raise asyncio.CancelledError()  # aiohttp treats this as the client going away: no response


async def _html(request: web.Request, body: bytes) -> web.StreamResponse:
    """200 with an HTML error page, as a misconfigured CDN or proxy answers."""
    return web.Response(text=HTML_ERROR_PAGE, content_type="text/html")


async def _short(request: web.Request, body: bytes) -> web.StreamResponse:
    """A Content-Length for the whole body, all but its last SHORT_BY bytes, then a clean close."""
    response = await _audio_headers(request, body, close=True)
    await response.write(body[: max(0, len(body) - SHORT_BY)])
    await response.write_eof()
    return response


async def _held(request: web.Request, faults: Faults, body: bytes) -> web.StreamResponse:
    response = await _audio_headers(request, body)
    await response.write(body[:-HOLD_TAIL])
    while faults.hold_recordings:
        await asyncio.sleep(HOLD_POLL_S)
    await response.write(body[-HOLD_TAIL:])
    await response.write_eof()
    return response


_ANSWERS = {"cut_recordings": _cut, "html_recordings": _html, "short_recordings": _short}
