"""SIGINT and SIGTERM during a run (Ctrl-C; what systemd, Kubernetes and `kill` send on stop).

The first signal asks the run to stop: every request, in flight or to come, raises
``RunInterrupted``, so no new work starts, the writer commits what is complete, and the
run is recorded as `interrupted` with its counts (exit 130 for SIGINT, 143 for SIGTERM).
A second signal stops the process at once; what was committed stays committed (each
commit is one transaction) and `status` shows the run as interrupted.
"""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import asynccontextmanager
from typing import AsyncIterator, Awaitable, Callable, TypeVar

from pipeline.errors import RunInterrupted, SignalReceived

T = TypeVar("T")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    def __init__(self, stop: Callable[[RunInterrupted], None], say: Callable[[str], None]):
        self._stop = stop
        self._say = say
        self.received: RunInterrupted | None = None

    @asynccontextmanager
    async def installed(self) -> AsyncIterator[StopSignals]:
        """Handle the signals while the block runs (only possible in the main thread). A block
        that ended normally after a signal (nothing was left to ask) raises it all the same."""
        loop = asyncio.get_running_loop()
        before = {number: signal.getsignal(number) for number in SIGNALS}
        try:
            for number in SIGNALS:
                loop.add_signal_handler(number, self._first, number)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread: leave them be
            yield self
            return
        try:
            yield self
        finally:
            for number in SIGNALS:
                loop.remove_signal_handler(number)  # back to the default, so put back what was there
                if before[number] is not None:
                    signal.signal(number, before[number])
        if self.received is not None:
            raise self.received

    def _first(self, number: int) -> None:
        if self.received is not None:  # two signals read from the loop's wakeup pipe together
            self._second(number)
            return
        self.received = RunInterrupted(number, signal.Signals(number).name)
        self._say(f"{self.received.signal_name} received: finishing what is complete and stopping (again to stop at once)")
        loop = asyncio.get_running_loop()
        for other in SIGNALS:
            loop.add_signal_handler(other, self._second, other)
        self._stop(self.received)

    def _second(self, number: int) -> None:
        self._say(f"{signal.Signals(number).name} received as a second signal: stopping at once")
        os._exit(128 + number)


async def unless_signalled(work: Awaitable[T]) -> T:
    """``work`` (a change sent to the API: a purchase, a new flow), unless SIGINT or SIGTERM
    arrives first: then it is cancelled and SignalReceived raised, for the caller to say that
    the change may or may not have taken effect. Later signals are ignored until it returns."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    received: list[int] = []

    def stop(number: int) -> None:
        if not received:
            received.append(number)
            task.cancel()

    before = {number: signal.getsignal(number) for number in SIGNALS}
    try:
        for number in SIGNALS:
            loop.add_signal_handler(number, stop, number)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread: leave them be
        return await task
    try:
        return await task
    except asyncio.CancelledError:
        if not received:
            raise
        raise SignalReceived(received[0], signal.Signals(received[0]).name) from None
    finally:
        for number in SIGNALS:
            loop.remove_signal_handler(number)
            if before[number] is not None:  # remove_signal_handler leaves the default, not what was there
                signal.signal(number, before[number])
