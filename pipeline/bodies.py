"""HTTP bodies read within a ceiling, whatever the server claims or compresses.

The client's session does not inflate bodies itself (``auto_decompress=False``): a
4 MB gzip body can inflate to 4 GB. ``Inflater`` inflates gzip and deflate with
``zlib.decompressobj(...).decompress(data, max_length)``, counting the inflated bytes,
and stops with ``BodyTooLargeError`` as soon as they pass the cap. Bytes on the wire
(what Content-Length counts) and inflated bytes are counted apart.
"""

from __future__ import annotations

import zlib
from typing import Callable, Iterator

from pipeline import tls  # noqa: F401  first: it imports aiohttp (see there)
import aiohttp

from pipeline.errors import ApiError, BodyTooLargeError, RetryableApiError

CHUNK = 64 * 1024
MB = 1 << 20
# What one decompress call may produce: a 64 KB chunk of a bomb inflates to ~64 MB.
PIECE = 1 << 20
_GZIP = 16 + zlib.MAX_WBITS
_ENCODINGS = {"": None, "identity": None, "gzip": _GZIP, "x-gzip": _GZIP, "deflate": zlib.MAX_WBITS}


def describe_size(size: int) -> str:
    return f"{size / MB:g} MB" if size >= MB else f"{size} bytes"


class Inflater:
    """A body's bytes as they arrive -> its content, at most ``limit`` bytes of it."""

    def __init__(self, content_encoding: str | None, limit: int, what: str):
        encoding = (content_encoding or "").strip().lower()
        if encoding not in _ENCODINGS:
            raise ApiError(f"{what}: unsupported Content-Encoding {content_encoding!r}", url=what)
        self.limit, self.what = limit, what
        self.wire_bytes = 0  # as received: what Content-Length counts
        self.size = 0  # inflated
        self._wbits = _ENCODINGS[encoding]
        self._inflate = zlib.decompressobj(self._wbits) if self._wbits else None
        self._raw_deflate_tried = False

    @property
    def encoded(self) -> bool:
        return self._wbits is not None

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The content in ``data``, in pieces of at most PIECE bytes."""
        self.wire_bytes += len(data)
        if self._inflate is None:
            self._count(len(data))
            yield data
            return
        while data:
            try:
                out = self._inflate.decompress(data, min(PIECE, self.limit - self.size + 1))
            except zlib.error as exc:
                if self._wbits == zlib.MAX_WBITS and not self._raw_deflate_tried and self.size == 0:
                    # "deflate" is sometimes sent raw, without the zlib header the RFC asks for.
                    self._raw_deflate_tried, self._wbits = True, -zlib.MAX_WBITS
                    self._inflate = zlib.decompressobj(self._wbits)
                    continue
                raise RetryableApiError(f"{self.what}: corrupt compressed body ({exc})", url=self.what) from None
            self._count(len(out))
            if out:
                yield out
            data = self._inflate.unconsumed_tail
            if self._inflate.eof and self._inflate.unused_data and self._wbits == _GZIP:
                data = self._inflate.unused_data  # a gzip body may hold several members
                self._inflate = zlib.decompressobj(self._wbits)

    def finish(self) -> None:
        """RetryableApiError if a compressed body stopped before its end."""
        if self._inflate is not None and not self._inflate.eof:
            raise RetryableApiError(f"{self.what}: compressed body ends early", url=self.what)

    def _count(self, size: int) -> None:
        self.size += size
        if self.size > self.limit:
            raise BodyTooLargeError(f"{self.what}: body over the {describe_size(self.limit)} cap; refused", url=self.what)


def refuse_declared_size(response: aiohttp.ClientResponse, limit: int, what: str) -> None:
    """A plain body whose Content-Length already says it is over the cap is not read at all."""
    encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
    declared = response.content_length
    if encoding == "identity" and declared is not None and declared > limit:
        raise BodyTooLargeError(
            f"{what}: Content-Length {declared} is over the {describe_size(limit)} cap; refused", url=what
        )


async def read_capped(response: aiohttp.ClientResponse, limit: int, describe: Callable[[], str]) -> bytes:
    """The whole body, inflated, or BodyTooLargeError once it passes ``limit``. ``describe``
    names the body in an error (only called then)."""
    encoding = response.headers.get("Content-Encoding")
    if not encoding and response.content_length is not None:
        # The usual answer: plain, its length declared (aiohttp reads no more than that).
        if response.content_length > limit:
            refuse_declared_size(response, limit, describe())
        return await response.read()
    what = describe()
    refuse_declared_size(response, limit, what)
    inflater = Inflater(encoding, limit, what)
    parts = []
    async for chunk in response.content.iter_chunked(CHUNK):
        parts.extend(inflater.feed(chunk))
    inflater.finish()
    return b"".join(parts)
