"""How a run's days are cut into windows: by the calls the API says they hold.

A window is the unit of paging, verification and commit. Its size is chosen from
the data, not the calendar, so that a request carries a full page wherever it can:

- The days to fetch come as ranges (runs of days not yet committed). A range is
  probed with its first page: ``meta.total`` says how many calls it holds, and
  the page's calls are the window's first page if the range is taken whole.
- A range of one day, or of at most ``window_pages`` pages, is a window.
- A wider one is cut, by its own density, into parts of about FILL x window_pages
  pages, which are probed in turn; its first page then only served to count (one
  request per cut).
- The next range is first cut to the span the latest probe's density suggests, so
  after the first probes hardly any is wasted. No window spans more than
  ``max_days`` days (``[sync] window_days``): ``window_days = 1`` pages day by day.
- A listing found implausible over several days is halved, so that a single lying
  day fails alone and its neighbours are still fetched.
- Under a request budget, a window is no bigger than what the budget has left, so
  that each budgeted run commits something.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from datetime import timedelta
from typing import Callable

from pipeline.extract import Window, pages_for

# Parts of a cut range aim at this share of window_pages: the day-to-day spread of a
# range's calls then rarely pushes a part over (which costs a probe and another cut).
FILL = 0.8


class WindowPlanner:
    """Hands out ranges to probe and learns from each probe. Shared by a run's workers;
    ``next()`` waits while ranges may still come back from probes under way."""

    def __init__(
        self,
        ranges: list[Window],
        *,
        max_days: int,
        window_pages: int,
        per_page: int,
        requests_left: Callable[[], int | None] = lambda: None,
    ):
        self.max_days = max_days
        self.requests_left = requests_left
        self.window_pages = window_pages
        self.per_page = per_page
        self.density: float | None = None  # calls per day of the latest probe
        self.probes_cut = 0  # probes whose range was too big to be a window
        self._todo: deque[tuple[Window, bool]] = deque((window, False) for window in ranges)  # (range, sized)
        self._busy = 0
        self._changed = asyncio.Event()
        self._reserved: dict[Window, int] = {}  # pages still to come of the windows under way

    async def next(self) -> Window | None:
        """The next range to probe; None once every range is placed. Call ``done`` after.
        While the budget's last requests belong to windows under way, it waits for them
        (with none under way it goes on, and the throttle pauses the run cleanly)."""
        while not self._todo or (self._busy and self._budget_spoken_for()):
            if not self._busy:
                return None
            self._changed.clear()
            await self._changed.wait()
        self._busy += 1
        return self._take()

    def done(self, window: Window) -> None:
        self._busy -= 1
        self._reserved.pop(window, None)
        self._changed.set()

    def fits(self, window: Window, total: int, per_page: int) -> bool:
        """The probe of ``window`` said ``total``: True if it is a window; else its parts
        are queued first."""
        self.per_page = per_page
        self.density = total / window.days
        pages = pages_for(total, per_page)
        if window.days == 1 or pages <= self._most_pages():
            self._reserved[window] = pages - 1
            return True
        self.probes_cut += 1
        parts = max(2, min(window.days, math.ceil(total / self._target_calls())))
        self._queue_first(_cut(window, parts))
        return False

    def halve(self, window: Window) -> None:
        """``window``'s listing was implausible: try each half on its own."""
        self._queue_first(_cut(window, 2))

    def _take(self) -> Window:
        window, sized = self._todo.popleft()
        span = window.days if sized else min(window.days, self._span())
        if span < window.days:
            self._todo.appendleft((Window(window.start + timedelta(days=span), window.end), False))
            window = Window(window.start, window.start + timedelta(days=span - 1))
        return window

    def _span(self) -> int:
        if not self.density:
            return self.max_days
        return max(1, min(self.max_days, int(self._target_calls() / self.density)))

    def _budget_spoken_for(self) -> bool:
        left = self.requests_left()
        return left is not None and left <= sum(self._reserved.values())

    def _most_pages(self) -> int:
        """Pages a window of several days may hold: window_pages, or the budget's last requests
        (its first page is already spent)."""
        left = self.requests_left()
        if left is None:
            return self.window_pages
        return max(1, min(self.window_pages, left - sum(self._reserved.values()) + 1))

    def _target_calls(self) -> float:
        return max(1.0, FILL * self._most_pages()) * self.per_page

    def _queue_first(self, parts: list[Window]) -> None:
        self._todo.extendleft((part, True) for part in reversed(parts))
        self._changed.set()


def _cut(window: Window, parts: int) -> list[Window]:
    """``window`` as ``parts`` runs of consecutive days, as equal as days allow."""
    cuts, start = [], window.start
    for index in range(parts):
        days = window.days * (index + 1) // parts - window.days * index // parts
        cuts.append(Window(start, start + timedelta(days=days - 1)))
        start += timedelta(days=days)
    return cuts
