"""The record of every request the API and storage hosts received."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass

from aiohttp import web


def bearer_token(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


@dataclass
class RequestRecord:
    seq: int
    host: str  # "api" or "storage"
    method: str
    path: str
    query: dict
    status: int  # 0 until answered; stays 0 when the connection was dropped
    started: float  # time.monotonic()
    finished: float  # time.monotonic(); 0.0 while in flight
    authorization: str | None  # the raw header value the server saw
    token: str | None
    in_flight: int  # requests being handled on this host when this one arrived, itself included
    retry_after: str | None = None  # the Retry-After header the server answered with, if any

    def as_dict(self) -> dict:
        return asdict(self)


class RequestLog:
    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self.status_counts: Counter[int] = Counter()
        self.host_counts: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self._seq = 0

    def open(self, request: web.Request, host: str) -> RequestRecord:
        self._seq += 1
        self.in_flight[host] += 1
        self.max_in_flight[host] = max(self.max_in_flight[host], self.in_flight[host])
        authorization = request.headers.get("Authorization")
        record = RequestRecord(
            seq=self._seq, host=host, method=request.method, path=request.path, query=dict(request.query),
            status=0, started=time.monotonic(), finished=0.0, authorization=authorization,
            token=bearer_token(authorization), in_flight=self.in_flight[host],
        )
        self.records.append(record)
        return record

    def close(self, record: RequestRecord) -> None:
        record.finished = time.monotonic()
        self.in_flight[record.host] -= 1
        self.status_counts[record.status] += 1
        self.host_counts[record.host] += 1

    def since(self, seq: int) -> list[RequestRecord]:
        return [record for record in self.records if record.seq > seq]

    def clear(self) -> None:
        """Forget the records (benchmarks running for long); counters and numbering go on."""
        self.records = []

    def stats(self) -> dict:
        return {
            "requests": {str(status): count for status, count in sorted(self.status_counts.items())},
            "requests_by_host": dict(self.host_counts),
            "rate_limited": self.status_counts[429],
            "dropped": self.status_counts[0],
            "in_flight": dict(self.in_flight),
            "max_in_flight": dict(self.max_in_flight),
            "last_seq": self._seq,
        }
