"""One throttle per run, shared by every request: concurrency, rate, 429s and the budget.

- ``max_concurrency`` requests in flight at most (a semaphore).
- ``requests_per_second`` from the config is a hard cap: request starts are spaced
  at least 1/cap apart, so it is never exceeded.
- The first 429 tells us there is a limit: every task pauses together until
  Retry-After has passed, and the rate is set just under what the server let
  through in the last second. Each later 429 measures the limit: the server's
  bucket was empty at both it and the 429 before, so what the server answered in
  between is what it allows over that time (the pause included: the bucket fills
  while we wait). The rate settles just under that (SETTLE), not under the rate
  that drew the 429, which was above the limit: settled there, the rate re-drew a
  429 within seconds, and each one paused everyone. The first 429 under a
  configured cap, with nothing before it to measure from, cuts the rate
  (multiplicative decrease). Successes raise it again (additive increase),
  quickly while far below the ceiling, then only by a slow creep that probes
  whether the limit went up. This is AIMD, as in TCP, with CUBIC's memory
  of where the ceiling was. The API sends no remaining/reset headers (only
  Retry-After), so the 429s are all there is to measure by.
- A pause restarts the schedule: a request that had a turn booked before the 429
  books again after the pause. Kept, the old turns came on top of the new ones,
  twice the rate, and drew the next 429 a second after each pause.
- Slow start: until a first 429 (or a configured cap) says what the API allows, SLOW_START
  requests fly at once, one more after each success, up to ``max_concurrency``.
- ``max_requests``: the run's request budget (from ``max_requests_per_run`` and
  ``max_requests_per_hour``; ``budget_note`` says which). When it is spent,
  ``BudgetExhausted`` is raised before sending, so the run can commit what it has
  and pause cleanly.
- First pages first: a request made inside ``first_in_line()`` (a window's first page,
  whose answer says how many pages follow) takes the next free slot before requests
  that were waiting longer (the bulk pages of windows already under way). Served in
  arrival order, a new window's first page queued behind every page in flight, and
  the pipeline ran dry while it waited.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import AsyncIterator, Iterator

from pipeline.errors import ApiUnreachableError, BudgetExhausted, CallsyncError

DISCOVERY_MARGIN = 0.9  # first rate: this share of what the server let through in the last second
DECREASE_FACTOR = 0.9
# The rate settles at SETTLE of the limit measured between two 429s (a token bucket just
# under its rate stays full, and absorbs our jitter); one 429 cuts it by MAX_CUT at most.
SETTLE = 0.99
MAX_CUT = 0.5
FAST_INCREASE = 0.2  # share of the rate added per second while below NEAR_CEILING
# Just under the measured limit a token bucket rarely runs dry; above it each
# probe costs a 429 and everyone's pause for its Retry-After (at 5 req/s, 1 s was 5
# requests), so the creep that probes for a raised limit is slow: 1% of it in 5 s.
NEAR_CEILING = 0.97
CREEP_SHARE_PER_SECOND = 0.002  # share of the ceiling added per second near it
# Slow start: until the API has shown whether it limits us, this many requests fly at
# once, one more after each success (doubling per round trip) up to max_concurrency. A
# full burst into a small limit drew a 429 for every request beyond the server's bucket;
# from 4, a bucket of 5 let 4 + 5 requests fly by the time it ran dry: 9 429s, 4% of a
# 22k-call backfill at 5/s. From 2 the ramp to 16 takes one round trip more.
SLOW_START = 2
MIN_RATE = 0.2
WINDOW_S = 1.0

# Set by ``first_in_line()`` for the requests made inside it (in that task only).
_FIRST_IN_LINE: ContextVar[bool] = ContextVar("callsync_first_in_line", default=False)


@contextmanager
def first_in_line() -> Iterator[None]:
    """Requests made inside this block are served before those waiting without it."""
    token = _FIRST_IN_LINE.set(True)
    try:
        yield
    finally:
        _FIRST_IN_LINE.reset(token)


class PrioritySlots:
    """A semaphore whose waiters are served first-in-line ones first, each kind in arrival
    order. A freed slot is handed straight to the waiter it wakes."""

    def __init__(self, slots: int, withheld: int = 0) -> None:
        self._free = slots - withheld
        self._withheld = withheld  # slots not in use yet (slow start); ``grow`` frees them
        self._waiting: tuple[deque[asyncio.Future], deque[asyncio.Future]] = (deque(), deque())

    def grow(self, slots: int = 1) -> None:
        """Put ``slots`` of the withheld ones to use."""
        for _ in range(min(slots, self._withheld)):
            self._withheld -= 1
            self.release()

    async def acquire(self, first: bool) -> None:
        if self._free and not (self._waiting[0] or self._waiting[1]):
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        queue = self._waiting[0 if first else 1]
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as it was cancelled: pass it on
            elif waiter in queue:  # release() may have dropped it already, as a done future
                queue.remove(waiter)
            raise

    def release(self) -> None:
        for queue in self._waiting:
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._free += 1


@dataclass
class RequestStats:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0


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
        self.ceiling: float | None = None
        self.max_requests = max_requests
        self.budget_note = ""
        self.stats = RequestStats()
        # Slow start only when no rate is set: a configured cap already spaces requests.
        withheld = max(0, max_concurrency - SLOW_START) if requests_per_second is None else 0
        self._slots = PrioritySlots(max_concurrency, withheld)
        self._next_start = 0.0
        self._paused_until = 0.0
        self._last_decrease = 0.0
        self._paused: asyncio.Event | None = None  # set by a 429: the turns booked before it are void
        self._limited_at: float | None = None  # the last 429 that set the rate
        self._answered_since_limited = 0
        self._last_increase = time.monotonic()
        self._recent_successes: deque[float] = deque()

    def requests_left(self) -> int | None:
        """What the budget still allows (None: no budget)."""
        return None if self.max_requests is None else max(0, self.max_requests - self.stats.requests)

    def set_budget(self, max_requests: int | None, note: str) -> None:
        """Set the request budget before the run's first request (it may depend on earlier runs)."""
        self.max_requests, self.budget_note = max_requests, note

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self._slots.acquire(_FIRST_IN_LINE.get())
        try:
            await self._wait_turn()
            yield
        finally:
            self._slots.release()

    async def _wait_turn(self) -> None:
        while True:
            now = time.monotonic()
            start = max(now, self._paused_until, self._next_start if self.rate else now)
            if start <= now:
                break
            if self.rate:
                # Reserve the slot before sleeping so concurrent waiters queue up behind it.
                self._next_start = start + 1.0 / self.rate
            if not await self._sleep_unless_paused(start - now):
                break
        if self.rate and self._next_start <= now:
            self._next_start = now + 1.0 / self.rate
        self._count_start()

    async def _sleep_unless_paused(self, delay: float) -> bool:
        """Sleep ``delay`` seconds. True (at once) if a 429 paused everyone meanwhile: the
        turn booked is void, and the caller books again after the pause."""
        if self._paused is None:
            self._paused = asyncio.Event()
        paused = self._paused
        try:
            async with asyncio.timeout(delay):
                await paused.wait()
        except TimeoutError:
            return paused.is_set()
        return True

    def _pause_all(self, until: float) -> None:
        self._paused_until = until
        self._next_start = until
        if self._paused is not None:
            self._paused.set()  # wakes the waiters in the order they booked, to book again in it
            self._paused = None

    def _count_start(self) -> None:
        if self.max_requests is not None and self.stats.requests >= self.max_requests:
            by = f" by {self.budget_note}" if self.budget_note else ""
            raise BudgetExhausted(f"{self.max_requests} requests allowed{by}")
        self.stats.requests += 1

    def rate_limited(self, retry_after: float | None) -> None:
        """A 429: pause everyone; set the rate once per burst of 429s."""
        self.stats.rate_limited += 1
        self._slots.grow(self.max_concurrency)  # the limit is found: the rate governs from now on
        now = time.monotonic()
        pause = retry_after if retry_after is not None else 1.0
        if now + pause > self._paused_until:
            self._pause_all(now + pause)
        if now - self._last_decrease < max(pause, WINDOW_S):
            return  # the same burst of 429s: one cut is enough
        self._last_decrease = now
        measured = self._measured_limit(now)
        if self.rate is None:
            self.ceiling = max(MIN_RATE, self._successes_in_window(now) / WINDOW_S)
            self.rate = self.ceiling * DISCOVERY_MARGIN
        elif measured is not None:
            # Never above the rate that drew the 429. At most halved: time with nothing to
            # send let the server's bucket fill and overflow, and then the measure reads low.
            self.ceiling = max(MIN_RATE, min(self.rate, max(measured, self.rate * MAX_CUT)))
            self.rate = self.ceiling * SETTLE
        else:
            self.ceiling = self.rate
            self.rate = max(MIN_RATE, self.rate * DECREASE_FACTOR)
        if self.cap is not None:
            self.rate = min(self.rate, self.cap)
        self._last_increase = self._paused_until

    def succeeded(self) -> None:
        now = time.monotonic()
        self._slots.grow()
        self._recent_successes.append(now)
        self._successes_in_window(now)
        self._answered_since_limited += 1
        if self.rate is None or (self.cap is not None and self.rate >= self.cap):
            return
        # At most a second's worth at once: time with nothing answered (a pause, an idle
        # pipeline) showed nothing about the rate.
        elapsed = min(WINDOW_S, max(0.0, now - self._last_increase))
        self._last_increase = max(now, self._last_increase)
        if self.ceiling is None or self.rate < self.ceiling * NEAR_CEILING:
            self.rate += self.rate * FAST_INCREASE * elapsed
        else:
            self.rate += CREEP_SHARE_PER_SECOND * self.ceiling * elapsed
        if self.cap is not None:
            self.rate = min(self.rate, self.cap)

    def _measured_limit(self, now: float) -> float | None:
        """The least the server allows per second, from what it answered since the 429 before
        this one (None: there was none); starts the next measure. Its bucket had less than a
        request's token at both 429s, so it let through at most one more than its rate over
        the time between: the pause included, as the bucket fills while we wait."""
        since, answered = self._limited_at, self._answered_since_limited
        self._limited_at, self._answered_since_limited = now, 0
        if since is None:
            return None
        return max(0, answered - 1) / (now - since)

    def _successes_in_window(self, now: float) -> int:
        while self._recent_successes and self._recent_successes[0] < now - WINDOW_S:
            self._recent_successes.popleft()
        return len(self._recent_successes)


class CircuitBreaker:
    """Stops the whole run when the API is gone, instead of letting every request retry for
    minutes. It trips after ``max_connection_failures`` connection failures in a row
    (refused, reset, DNS, TLS) with no answer in between, or when requests have been out for
    ``give_up_after_s`` with no answer at all (a host that swallows packets). Tripping
    cancels every request in flight or waiting to retry; each then raises the trip's
    ``ApiUnreachableError``. Any HTTP answer below 500 counts as the API being there."""

    def __init__(self, where: str, give_up_after_s: float, max_connection_failures: int = 8) -> None:
        self.where = where
        self.give_up_after_s = give_up_after_s
        self.max_connection_failures = max_connection_failures
        self.ever_answered = False  # until the API answers once, half as many failures trip it
        self.failures_in_a_row = 0
        self.last_failure = ""
        self.error: ApiUnreachableError | None = None
        self._waiting: dict[asyncio.Task, int] = {}  # task -> requests of it in flight
        self._unanswered_since = time.monotonic()
        self._failed_since_answer = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._cancelled: set[asyncio.Task] = set()
        self._stopped = asyncio.Event()

    def enter(self) -> asyncio.Task | None:
        """A request starts (or waits to retry); raises at once if the breaker has tripped."""
        self.raise_if_tripped()
        task = asyncio.current_task()
        if task is None:
            return None
        if not self._waiting:
            if not self._failed_since_answer:  # idle time is not the API's silence
                self._unanswered_since = max(self._unanswered_since, time.monotonic())
            self._arm(max(0.0, self._unanswered_since + self.give_up_after_s - time.monotonic()))
        self._waiting[task] = self._waiting.get(task, 0) + 1
        return task

    def leave(self, task: asyncio.Task | None) -> None:
        if task is None or task not in self._waiting:
            return
        self._waiting[task] -= 1
        if not self._waiting[task]:
            del self._waiting[task]
        if not self._waiting and self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def answered(self, quiet_for: float = 0.0) -> None:
        """An HTTP answer; ``quiet_for``: the seconds it asked us to wait (429 Retry-After),
        which are not the API's silence."""
        self.failures_in_a_row = 0
        self.ever_answered = True
        self._failed_since_answer = False
        self._unanswered_since = time.monotonic() + quiet_for

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Around one attempt: a trip cancels it, and it raises the trip's error instead."""
        task = self.enter()
        try:
            yield
        except asyncio.CancelledError:
            if self.was_cancelled_by_trip(task) and task is not None:
                task.uncancel()
                self._cancelled.discard(task)
                raise self.error from None
            raise
        finally:
            self.leave(task)

    def connection_failed(self, reason: str) -> None:
        self.failures_in_a_row += 1
        self._failed_since_answer = True
        self.last_failure = reason
        limit = self.max_connection_failures if self.ever_answered else max(1, self.max_connection_failures // 2)
        if self.failures_in_a_row >= limit:
            self.trip(f"{self.failures_in_a_row} connection failures in a row")

    def failed(self, reason: str) -> None:
        """A timeout or a 5xx: not proof the API is gone, but no answer either."""
        self._failed_since_answer = True
        self.last_failure = reason

    def raise_if_tripped(self) -> None:
        if self.error is not None:
            raise self.error

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds`` before a retry (a back-off, a Retry-After). A request waiting so
        is in no one's flight, so ``stop`` cannot cancel it: it ends the wait instead, and
        this raises the stop's error."""
        self.raise_if_tripped()
        try:
            async with asyncio.timeout(seconds):
                await self._stopped.wait()
        except TimeoutError:
            return
        self.raise_if_tripped()

    def was_cancelled_by_trip(self, task: asyncio.Task | None) -> bool:
        return self.error is not None and task in self._cancelled

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def trip(self, why: str) -> None:
        last = f" (last: {self.last_failure})" if self.last_failure else ""
        self.stop(ApiUnreachableError(
            f"giving up: the API at {self.where} is unreachable: {why}{last}; check [api] base_url, "
            "the network and the API's status. What was fetched is committed; the next run continues"
        ))

    def stop(self, error: CallsyncError) -> None:
        """No more requests this run: those in flight or waiting to retry, and every later
        one, raise ``error`` (a trip, or a signal asking the run to stop)."""
        if self.error is not None:
            return
        self.error = error
        self._stopped.set()
        self.close()
        for task in list(self._waiting):
            if task is not asyncio.current_task():
                self._cancelled.add(task)
                task.cancel()

    def _arm(self, delay: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = asyncio.get_running_loop().call_later(delay, self._check_silence)

    def _check_silence(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        silent = time.monotonic() - self._unanswered_since
        if silent >= self.give_up_after_s:
            self.trip(f"no answer for {silent:.0f}s ([api] give_up_after_s = {self.give_up_after_s:g})")
        else:
            self._arm(self.give_up_after_s - silent)
