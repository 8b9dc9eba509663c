"""Deterministic call data, stored column-wise, and the in-memory store the sandbox serves from.

Calls live in numpy columns sorted by (started_at, id); a call dict is only built when served.
Calls added later (add_calls, late ingestion) go into a second, small sorted column set that
is merged into listings on the fly, so the big arrays are never rebuilt. Mutations write into
the columns in place.
"""

from __future__ import annotations

import random
import re
import time
from datetime import date, datetime, timedelta, timezone

import numpy as np

from . import content
from .calls import ID_WIDTH, Calls, format_call_ids, sample_attributes, sample_times_in_day, sample_times_over_days
from .catalog import Catalog

ID_SPACE = 36**ID_WIDTH
PENDING_TRANSCRIPT_SHARE = 0.07
PENDING_TRANSCRIPT_DAYS = 2
_CALL_ID = re.compile(r"call_[0-9a-z]{%d}" % ID_WIDTH)
_UNSERVED_BASE_URL = "http://sandbox.invalid"  # until run_sandbox tells the data where it is served


def _epoch(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())


def _utc_today() -> date:
    return datetime.now(timezone.utc).date()


class SandboxData:
    def __init__(self, seed: int, today: date | None, first_day: date, catalog: Catalog, base: Calls,
                 now: datetime | None = None):
        self.seed = seed
        # The sandbox's clock: pinned by `now` (and moved by set_now), else the real time.
        self._now = now
        self.today = today or (now.date() if now else _utc_today())
        self._today_fixed = today is not None
        self.first_day = first_day
        self.catalog = catalog
        self.numbers: list[dict] = catalog.numbers
        self.flows: dict[str, dict] = catalog.flows
        # Root URL that recording/transcript URLs point at; run_sandbox sets it to the live server.
        self.base_url: str | None = None
        self._base = base
        self._added = Calls.empty()
        id_order = np.argsort(base.idnum, kind="stable")
        self._base_ids_sorted = base.idnum[id_order]
        self._base_id_rows = id_order
        self._rng = random.Random(f"store-{seed}")
        self._np_draws = 0
        self._pending_transcripts: set[int] = set()
        # A recording never changes, so it keeps the duration the call had before any mutation.
        self._recorded_duration: dict[int, int] = {}
        self._mark_recent_transcripts_pending(base)
        # Fields served instead of the generated ones, per call id: how tests get malformed records.
        self.overrides: dict[str, dict] = {}
        # Recording size per second of call (content.RECORDING_BYTES_PER_SECOND; a real MP3: 16,000).
        self.recording_bytes_per_second = content.RECORDING_BYTES_PER_SECOND
        # Calls deleted upstream (delete_calls): not listed, not served, until restored.
        self._deleted = np.empty(0, dtype=np.int64)

    @classmethod
    def generate(cls, seed: int = 42, calls: int = 20_000, days: int = 60, today: date | None = None,
                 now: datetime | None = None) -> "SandboxData":
        """`calls` calls over the `days` whole days ending `today`, of which those started by
        `now` (default: the real time) are served. The calls are a function of the seed and
        the days alone: a sandbox restarted with the same seed serves the same past days."""
        if isinstance(today, datetime):
            today = today.date()
        if now is not None and now.tzinfo is None:
            raise ValueError("now needs a timezone")
        if days < 1 or calls < 0:
            raise ValueError("need days >= 1 and calls >= 0")
        moment = now.timestamp() if now else time.time()
        last_day = today or (now.date() if now else _utc_today())
        first_day = last_day - timedelta(days=days - 1)
        if _epoch(first_day) > moment:
            raise ValueError("every requested day lies in the future")
        rng = np.random.default_rng(seed)
        catalog = Catalog.generate(seed, first_day)
        started = sample_times_over_days(rng, calls, _epoch(first_day), days)
        columns = sample_attributes(rng, calls, catalog)
        idnum = rng.permutation(_distinct_ids(rng, calls))
        every_call = Calls(started=started, idnum=idnum, **columns)
        already = every_call.started <= moment
        base = Calls(**{name: column[already] for name, column in every_call.columns().items()}).sorted()
        return cls(seed, today, first_day, catalog, base, now)

    def now(self) -> float:
        """The sandbox's time, epoch seconds."""
        return self._now.timestamp() if self._now else time.time()

    def set_now(self, now: datetime) -> None:
        """Move the sandbox's clock (tests and drills move time without sleeping)."""
        if now.tzinfo is None:
            raise ValueError("now needs a timezone")
        self._now = now

    # ----- reading -----

    @property
    def calls_total(self) -> int:
        return len(self._base) + len(self._added)

    @property
    def campaign_ids(self) -> list[str]:
        return self.catalog.campaign_ids

    @property
    def pending_transcript_count(self) -> int:
        return len(self._pending_transcripts)

    def current_day(self) -> date:
        if self._today_fixed:
            return self.today
        return self._now.date() if self._now else _utc_today()

    def query_calls(self, start: date | None = None, end: date | None = None, *, number_id: str | None = None,
                    campaign_id: str | None = None, outcome: str | None = None, offset: int = 0,
                    limit: int | None = None, base_url: str | None = None) -> tuple[list[dict], int]:
        """One page of the listing sorted by (started_at, id), and the total matching rows."""
        filters = self._filters(number_id, campaign_id, outcome)
        if filters is None:
            return [], 0
        window = self._window(start, end)
        base_rows = self._without_deleted(self._base, self._base.matching(*window, filters))
        added_rows = self._without_deleted(self._added, self._added.matching(*window, filters))
        total = len(base_rows) + len(added_rows)
        stop = total if limit is None else min(total, offset + limit)
        if offset >= stop:
            return [], total
        slots = np.arange(offset, stop)
        added_slots = self._added_slots(base_rows, added_rows)
        added_before = np.searchsorted(added_slots, slots)
        is_added = np.zeros(len(slots), bool)
        if len(added_slots):
            is_added = added_slots[np.minimum(added_before, len(added_slots) - 1)] == slots
        base_picked = _take(base_rows, (slots - added_before)[~is_added])
        added_picked = _as_array(added_rows)[added_before[is_added]]
        url = base_url or self.base_url or _UNSERVED_BASE_URL
        from_base = iter(self._dicts(self._base, base_picked, url))
        from_added = iter(self._dicts(self._added, added_picked, url))
        return [next(from_added) if flag else next(from_base) for flag in is_added.tolist()], total

    def calls_between(self, start: date | None, end: date | None) -> list[dict]:
        return self.query_calls(start, end)[0]

    def call(self, call_id: str) -> dict | None:
        found = self._locate(call_id)
        if found is None:
            return None
        calls, row = found
        return self._dicts(calls, np.array([row]), self.base_url or _UNSERVED_BASE_URL)[0]

    def has_call(self, call_id: str) -> bool:
        return self._locate(call_id) is not None

    def has_recording(self, call_id: str) -> bool:
        """Whether the call exists and was recorded (and so also has, or will have, a transcript)."""
        found = self._locate(call_id)
        return found is not None and bool(found[0].has_recording[found[1]])

    def recording_bytes(self, call_id: str) -> bytes | None:
        found = self._locate(call_id)
        if found is None or not found[0].has_recording[found[1]]:
            return None
        calls, row = found
        return content.recording_bytes(call_id, self._recording_seconds(calls, row), self.recording_bytes_per_second)

    def transcript_pending(self, call_id: str) -> bool:
        found = self._locate(call_id)
        return found is not None and int(found[0].idnum[found[1]]) in self._pending_transcripts

    def transcript(self, call_id: str) -> dict | None:
        """The transcript if the call has one and it is ready."""
        found = self._locate(call_id)
        if found is None or not found[0].has_recording[found[1]] or self.transcript_pending(call_id):
            return None
        calls, row = found
        outcome = content.OUTCOMES[calls.outcome[row]]
        segments = content.transcript_segments(call_id, outcome, self._recording_seconds(calls, row))
        return {"call_id": call_id, "segments": segments}

    def _recording_seconds(self, calls: Calls, row: int) -> int:
        return self._recorded_duration.get(int(calls.idnum[row]), int(calls.duration[row]))

    # ----- changing -----

    def mutate_calls(self, count: int, within_days: int) -> list[str]:
        """Re-grade `count` recent calls (new outcome, sentiment, duration); returns their ids."""
        window = (_epoch(self.current_day() - timedelta(days=within_days - 1)), None)
        base_rows = self._base.matching(*window, [])
        added_rows = self._added.matching(*window, [])
        pool = len(base_rows) + len(added_rows)
        changed = []
        for pick in sorted(self._rng.sample(range(pool), min(count, pool))):
            calls, row = (self._base, base_rows[pick]) if pick < len(base_rows) else (
                self._added, added_rows[pick - len(base_rows)])
            self._regrade(calls, int(row))
            changed.append(format_call_ids(calls.idnum[[row]])[0])
        return changed

    def add_calls(self, count: int, day: date | None = None) -> list[str]:
        """New calls on `day` (default today) with started_at not after now."""
        day = day or self.current_day()
        started = sample_times_in_day(self._next_np_rng(), count, _epoch(day), self.now())
        return self._insert(started, {})

    def insert_late_call(self, start: date | None, end: date | None, *, number_id: str | None = None,
                         campaign_id: str | None = None, outcome: str | None = None) -> str | None:
        """One late-ingested call inside [start, end] that also passes the given filters."""
        filters = self._filters(number_id, campaign_id, outcome)
        low, high = self._window(start or self.first_day, end or self.current_day())
        high = min(high, int(self.now()))
        if filters is None or high <= low:
            return None
        started = np.array([self._rng.randrange(low, high)], dtype=np.int64)
        return self._insert(started, dict(filters))[0]

    def delete_calls(self, ids: list[str]) -> list[str]:
        """Delete calls upstream: no longer listed or served. Returns the ids that existed."""
        found = [call_id for call_id in ids if self._locate(call_id) is not None]
        numbers = np.array([int(call_id[5:], 36) for call_id in found], dtype=np.int64)
        self._deleted = np.union1d(self._deleted, numbers)
        return found

    def restore_calls(self, ids: list[str]) -> list[str]:
        """Undo delete_calls (the vendor restored them). Returns the ids restored."""
        numbers = np.array([int(call_id[5:], 36) for call_id in ids if _CALL_ID.fullmatch(call_id)], dtype=np.int64)
        restored = np.intersect1d(self._deleted, numbers)
        self._deleted = np.setdiff1d(self._deleted, restored)
        return format_call_ids(restored)

    def _without_deleted(self, calls: Calls, rows):
        if not len(self._deleted):
            return rows
        rows = _as_array(rows)
        return rows[~np.isin(calls.idnum[rows], self._deleted)]

    def make_transcripts_ready(self) -> list[str]:
        ready = format_call_ids(np.array(sorted(self._pending_transcripts), dtype=np.int64))
        self._pending_transcripts.clear()
        return ready

    def purchase_number(self, kind: str, area_code: str | None = None, display_name: str | None = None) -> dict:
        return self.catalog.new_number(kind, area_code, display_name)

    # ----- internals -----

    def _filters(self, number_id, campaign_id, outcome) -> list[tuple[str, int]] | None:
        """Column filters as (column, code); None when a filter value can match nothing."""
        filters = []
        if number_id is not None:
            filters.append(("number", self.catalog.number_index(number_id)))
        if campaign_id is not None:
            ids = self.catalog.campaign_ids
            filters.append(("campaign", ids.index(campaign_id) if campaign_id in ids else None))
        if outcome is not None:
            codes = content.OUTCOMES
            filters.append(("outcome", codes.index(outcome) if outcome in codes else None))
        return None if any(code is None for _, code in filters) else filters

    @staticmethod
    def _window(start: date | None, end: date | None) -> tuple[int | None, int | None]:
        """[low, high) epoch seconds for inclusive UTC dates; None = unbounded."""
        low = _epoch(start) if start else None
        high = _epoch(end) + 86_400 if end else None
        return low, high

    def _added_slots(self, base_rows, added_rows) -> np.ndarray:
        """Positions the added rows take in the merged (started_at, id) order of the listing."""
        added_rows = _as_array(added_rows)
        if not len(added_rows):
            return added_rows
        started = self._added.started[added_rows]
        idnum = self._added.idnum[added_rows]
        cut = self._base.insertion_points(started, idnum)
        return _rank(base_rows, cut) + np.arange(len(added_rows))

    def _locate(self, call_id: str) -> tuple[Calls, int] | None:
        if not isinstance(call_id, str) or not _CALL_ID.fullmatch(call_id):
            return None
        idnum = int(call_id[5:], 36)
        if len(self._deleted) and idnum in self._deleted:
            return None
        spot = int(np.searchsorted(self._base_ids_sorted, idnum))
        if spot < len(self._base_ids_sorted) and self._base_ids_sorted[spot] == idnum:
            return self._base, int(self._base_id_rows[spot])
        hits = np.flatnonzero(self._added.idnum == idnum)
        return (self._added, int(hits[0])) if len(hits) else None

    def override_call(self, call_id: str, **fields) -> None:
        """Serve these field values for the call from now on (e.g. a malformed started_at)."""
        self.overrides.setdefault(call_id, {}).update(fields)

    def _dicts(self, calls: Calls, rows: np.ndarray, base_url: str) -> list[dict]:
        phones = [number["phone_number"] for number in self.numbers]
        dicts = calls.to_dicts(rows, base_url, phones, self.catalog.campaign_ids, self.catalog.affiliate_ids)
        if self.overrides:
            for row in dicts:
                row.update(self.overrides.get(row["id"], {}))
        return dicts

    def _regrade(self, calls: Calls, row: int) -> None:
        idnum = int(calls.idnum[row])
        if calls.has_recording[row]:
            self._recorded_duration.setdefault(idnum, int(calls.duration[row]))
        old_outcome = int(calls.outcome[row])
        new_outcome = self._rng.choice([code for code in range(len(content.OUTCOMES)) if code != old_outcome])
        median, sigma = content.DURATION_GIVEN_OUTCOME[new_outcome]
        duration = max(1, round(median * self._rng.lognormvariate(0.0, sigma)))
        calls.outcome[row] = new_outcome
        calls.sentiment[row] = self._rng.choices(range(3), content.SENTIMENT_GIVEN_OUTCOME[new_outcome])[0]
        calls.duration[row] = duration if duration != calls.duration[row] else duration + 1

    def _insert(self, started: np.ndarray, fixed: dict[str, int]) -> list[str]:
        rng = self._next_np_rng()
        columns = sample_attributes(rng, len(started), self.catalog, fixed)
        new = Calls(started=started, idnum=self._fresh_ids(len(started)), **columns)
        self._added = self._added.with_rows(new)
        self._mark_recent_transcripts_pending(new)
        return format_call_ids(new.idnum)

    def _fresh_ids(self, count: int) -> np.ndarray:
        fresh: list[int] = []
        while len(fresh) < count:
            candidate = self._rng.randrange(ID_SPACE)
            spot = int(np.searchsorted(self._base_ids_sorted, candidate))
            in_base = spot < len(self._base_ids_sorted) and self._base_ids_sorted[spot] == candidate
            if not in_base and candidate not in fresh and not (self._added.idnum == candidate).any():
                fresh.append(candidate)
        return np.array(fresh, dtype=np.int64)

    def _next_np_rng(self) -> np.random.Generator:
        self._np_draws += 1
        return np.random.default_rng([self.seed, 7, self._np_draws])

    def _mark_recent_transcripts_pending(self, calls: Calls) -> None:
        """Some recorded calls of the last days have a transcript still being produced."""
        since = _epoch(self.current_day() - timedelta(days=PENDING_TRANSCRIPT_DAYS - 1))
        recent = np.flatnonzero((calls.started >= since) & calls.has_recording)
        rng = random.Random(f"pending-{self.seed}-{len(self._pending_transcripts)}-{len(recent)}")
        chosen = [int(calls.idnum[row]) for row in recent.tolist() if rng.random() < PENDING_TRANSCRIPT_SHARE]
        self._pending_transcripts.update(chosen)


def _distinct_ids(rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` distinct ids, sorted; collisions are rare (~count^2 / 2 / 36^8) and redrawn."""
    ids = rng.integers(0, ID_SPACE, count, dtype=np.int64)
    while True:
        ids.sort()
        repeated = np.flatnonzero(ids[1:] == ids[:-1])
        if not len(repeated):
            return ids
        ids[repeated] = rng.integers(0, ID_SPACE, len(repeated), dtype=np.int64)


def _as_array(rows) -> np.ndarray:
    if isinstance(rows, range):  # np.asarray would walk the range in Python
        return np.arange(rows.start, rows.stop, dtype=np.int64)
    return rows


def _take(rows, ranks: np.ndarray) -> np.ndarray:
    if isinstance(rows, range):
        return rows.start + ranks
    return rows[ranks]


def _rank(rows, positions: np.ndarray) -> np.ndarray:
    """How many of `rows` (sorted row numbers, or a range) lie before each position."""
    if isinstance(rows, range):
        return np.clip(positions - rows.start, 0, len(rows))
    return np.searchsorted(rows, positions)
