"""One throttle per run, shared by every request: concurrency, rate, 429s and the budget.

- ``max_concurrency`` requests in flight at most (a semaphore).
- ``requests_per_second`` from the config is a hard cap: request starts are spaced
  at least 1/cap apart, so it is never exceeded.
- On a 429 every task pauses together until Retry-After has passed, and the rate
  is cut (multiplicative decrease); each success then raises it a little
  (additive increase) until the next 429 or the cap. This is AIMD, as in TCP.
- ``max_requests_per_run``: when it is spent, ``BudgetExhausted`` is raised
  before sending, so the run can commit what it has and pause cleanly.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

from pipeline.errors import BudgetExhausted

DECREASE_FACTOR = 0.8
INCREASE_PER_SECOND = 0.5
MIN_RATE = 0.5
RATE_WINDOW_S = 2.0


@dataclass
class RequestStats:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    failed_attempts: int = 0
    bytes_downloaded: int = 0


class Throttle:
    def __init__(
        self,
        max_concurrency: int,
        requests_per_second: float | None = None,
        max_requests: int | None = None,
    ) -> None:
        self.max_concurrency = max_concurrency
        self.cap = requests_per_second
        self.rate = requests_per_second
        self.max_requests = max_requests
        self.stats = RequestStats()
        self._slots = asyncio.Semaphore(max_concurrency)
        self._next_start = 0.0
        self._paused_until = 0.0
        self._last_decrease = 0.0
        self._recent_starts: deque[float] = deque()

    @property
    def budget_left(self) -> int | None:
        return None if self.max_requests is None else self.max_requests - self.stats.requests

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._slots:
            await self._wait_turn()
            yield

    async def _wait_turn(self) -> None:
        while True:
            now = time.monotonic()
            start = max(now, self._paused_until, self._next_start if self.rate else now)
            if start <= now:
                break
            if self.rate:
                # Reserve the slot before sleeping so concurrent waiters queue up behind it.
                self._next_start = start + 1.0 / self.rate
            await asyncio.sleep(start - now)
            if time.monotonic() >= self._paused_until:
                self._count_start()
                return
        if self.rate:
            self._next_start = max(self._next_start, now) + 1.0 / self.rate
        self._count_start()

    def _count_start(self) -> None:
        if self.max_requests is not None and self.stats.requests >= self.max_requests:
            raise BudgetExhausted(f"request budget of {self.max_requests} spent")
        self.stats.requests += 1
        now = time.monotonic()
        self._recent_starts.append(now)
        while self._recent_starts and self._recent_starts[0] < now - RATE_WINDOW_S:
            self._recent_starts.popleft()

    def rate_limited(self, retry_after: float | None) -> None:
        """A 429: pause everyone, and cut the rate once per pause."""
        self.stats.rate_limited += 1
        now = time.monotonic()
        self._paused_until = max(self._paused_until, now + (retry_after or 1.0))
        if now - self._last_decrease < (retry_after or 1.0):
            return
        self._last_decrease = now
        current = self.rate or self._observed_rate(now)
        self.rate = max(MIN_RATE, current * DECREASE_FACTOR)
        self._next_start = self._paused_until

    def _observed_rate(self, now: float) -> float:
        """Request starts per second over the last RATE_WINDOW_S (or since the first start)."""
        if not self._recent_starts:
            return 0.0
        span = max(now - self._recent_starts[0], 1.0 / max(1, len(self._recent_starts)), 0.05)
        return len(self._recent_starts) / min(RATE_WINDOW_S, span)

    def succeeded(self) -> None:
        """Additive increase: about INCREASE_PER_SECOND req/s more for each second of successes."""
        if self.rate is None or self.rate == self.cap:
            return
        self.rate += INCREASE_PER_SECOND / self.rate
        if self.cap is not None:
            self.rate = min(self.rate, self.cap)
