"""Column-wise call storage and the vectorised samplers that fill it."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, fields

import numpy as np

from . import content
from .catalog import ALPHABET, Catalog

ID_PREFIX = "call_"
ID_WIDTH = 8
_ALPHABET_CODES = np.array([ord(ch) for ch in ALPHABET], dtype=np.uint32)
_PREFIX_CODES = np.array([ord(ch) for ch in ID_PREFIX], dtype=np.uint32)
_DAY_SECONDS = 86_400
_HOUR_EDGES = np.arange(25) * 3_600.0
_API_PATH = "/api/call-tracking/calls/"


def format_call_ids(idnum: np.ndarray) -> list[str]:
    """`call_` + fixed-width base36; string order equals numeric order."""
    idnum = np.asarray(idnum, dtype=np.int64)
    if len(idnum) < 16:  # numpy's per-call overhead dominates for a handful of ids
        return [_format_call_id(value) for value in idnum.tolist()]
    codes = np.empty((len(idnum), len(ID_PREFIX) + ID_WIDTH), dtype=np.uint32)
    codes[:, : len(ID_PREFIX)] = _PREFIX_CODES
    rest = idnum.copy()
    for column in range(codes.shape[1] - 1, len(ID_PREFIX) - 1, -1):
        codes[:, column] = _ALPHABET_CODES[rest % 36]
        rest //= 36
    return codes.view(f"<U{codes.shape[1]}").ravel().tolist()


def _format_call_id(value: int) -> str:
    digits = []
    for _ in range(ID_WIDTH):
        value, digit = divmod(value, 36)
        digits.append(ALPHABET[digit])
    return ID_PREFIX + "".join(reversed(digits))


@dataclass
class Calls:
    """Calls as parallel columns sorted by (started, idnum). Codes index the catalogues in `content`."""

    started: np.ndarray  # int64 epoch seconds, UTC
    idnum: np.ndarray  # int64, the id in base36
    number: np.ndarray  # int16 index into SandboxData.numbers
    outcome: np.ndarray  # int8
    sentiment: np.ndarray  # int8
    duration: np.ndarray  # int32 seconds
    campaign: np.ndarray  # int8
    affiliate: np.ndarray  # int8
    source: np.ndarray  # int8
    city: np.ndarray  # int8
    caller: np.ndarray  # int64, 10-digit NANP number
    has_recording: np.ndarray  # bool

    @classmethod
    def empty(cls) -> "Calls":
        return cls(**{f.name: np.empty(0, dtype=_DTYPES[f.name]) for f in fields(cls)})

    def __len__(self) -> int:
        return len(self.started)

    def columns(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def sorted(self) -> "Calls":
        order = np.lexsort((self.idnum, self.started))
        return Calls(**{name: col[order] for name, col in self.columns().items()})

    def with_rows(self, new: "Calls") -> "Calls":
        """A copy with `new` merged in at its sorted places (cheap while this set is small)."""
        new = new.sorted()
        points = self.insertion_points(new.started, new.idnum)
        return Calls(**{name: np.insert(col, points, getattr(new, name)) for name, col in self.columns().items()})

    def matching(self, low: int | None, high: int | None, filters: list[tuple[str, int]]):
        """Rows with low <= started < high passing every (column, code) filter: a range or an index array."""
        lo = 0 if low is None else int(np.searchsorted(self.started, low))
        hi = len(self) if high is None else max(lo, int(np.searchsorted(self.started, high)))
        if not filters:
            return range(lo, hi)
        mask = np.ones(hi - lo, dtype=bool)
        for column, code in filters:
            mask &= getattr(self, column)[lo:hi] == code
        return lo + np.flatnonzero(mask)

    def insertion_points(self, started: np.ndarray, idnum: np.ndarray) -> np.ndarray:
        """Where each (started, idnum) key would go in this sorted column set."""
        first = np.searchsorted(self.started, started, side="left")
        last = np.searchsorted(self.started, started, side="right")
        tied = np.flatnonzero(last > first)  # same second as existing calls: order those by id
        if not len(tied):
            return first
        width = int((last - first)[tied].max())
        candidates = first[tied, None] + np.arange(width)
        smaller = (candidates < last[tied, None]) & (
            self.idnum[np.minimum(candidates, len(self) - 1)] < idnum[tied, None])
        first[tied] += smaller.sum(axis=1)
        return first

    def to_dicts(self, rows: np.ndarray, base_url: str, phones: list[str], campaigns: list[str],
                 affiliates: list[str]) -> list[dict]:
        rows = np.asarray(rows, dtype=np.int64)
        with _gc_paused(len(rows) > 10_000):  # building many dicts otherwise triggers GC passes that find nothing
            return self._build_dicts(rows, base_url + _API_PATH, phones, campaigns, affiliates)

    def _build_dicts(self, rows, prefix, phones, campaigns, affiliates) -> list[dict]:
        ids = format_call_ids(self.idnum[rows])
        started = np.datetime_as_string(self.started[rows].astype("datetime64[s]"), unit="s", timezone="UTC")
        outcomes, sources, sentiments, places = content.OUTCOMES, content.SOURCES, content.SENTIMENTS, _PLACES
        columns = (getattr(self, name)[rows].tolist() for name in (
            "number", "caller", "duration", "outcome", "campaign", "affiliate", "source", "city", "sentiment",
            "has_recording"))
        out = []
        for call_id, start, number, caller, duration, outcome, campaign, affiliate, source, city, sentiment, \
                recorded in zip(ids, started.tolist(), *columns):
            out.append({
                "id": call_id,
                "tracking_number": phones[number],
                "caller_number": f"+1{caller}",
                "duration_seconds": duration,
                "outcome": outcomes[outcome],
                "campaign_id": campaigns[campaign],
                "affiliate_id": affiliates[affiliate],
                "source": sources[source],
                "caller_city": places[city][0],
                "caller_state": places[city][1],
                "recording_url": f"{prefix}{call_id}/recording" if recorded else None,
                "transcript_url": f"{prefix}{call_id}/transcript" if recorded else None,
                "sentiment": sentiments[sentiment],
                "started_at": start,
            })
        return out


@contextmanager
def _gc_paused(pause: bool):
    was_enabled = gc.isenabled()
    if pause:
        gc.disable()
    try:
        yield
    finally:
        if pause and was_enabled:
            gc.enable()


_PLACES = [(city, state) for city, state, _areas, _weight in content.CITIES]


_DTYPES = {
    "started": np.int64, "idnum": np.int64, "number": np.int16, "outcome": np.int8, "sentiment": np.int8,
    "duration": np.int32, "campaign": np.int8, "affiliate": np.int8, "source": np.int8, "city": np.int8,
    "caller": np.int64, "has_recording": np.bool_,
}

# ----- sampling -----


def _utc_hour_cdf() -> np.ndarray:
    """Cumulative share of a day's calls at each UTC hour boundary (25 points, 0..1)."""
    offset = content.EASTERN_UTC_OFFSET_HOURS
    weights = np.array([content.EASTERN_HOURLY_WEIGHTS[(hour + offset) % 24] for hour in range(24)])
    return np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])


def _seconds_of_day(rng: np.random.Generator, reachable: np.ndarray) -> np.ndarray:
    """Times of day following the hourly profile, each below its day's `reachable` share."""
    cdf = _utc_hour_cdf()
    return np.interp(rng.random(len(reachable)) * reachable, cdf, _HOUR_EDGES).astype(np.int64)


def _reachable_share(day_starts: np.ndarray, now: float) -> np.ndarray:
    """Share of each day's calls that can already have started at `now` (1 for past days)."""
    elapsed = np.clip(now - day_starts, 0, _DAY_SECONDS)
    return np.interp(elapsed, _HOUR_EDGES, _utc_hour_cdf())


def sample_times_over_days(rng: np.random.Generator, count: int, first_day_start: int, days: int) -> np.ndarray:
    """`count` start times over whole days: a function of the generator and the day boundaries
    alone, never of the time now (the caller drops those not started yet), so the same seed
    gives the same calls for every past day whenever the data is generated."""
    day_starts = first_day_start + _DAY_SECONDS * np.arange(days, dtype=np.int64)
    weekday = (first_day_start // _DAY_SECONDS + 3 + np.arange(days)) % 7  # 1970-01-01 was a Thursday
    trend = 1.0 + 0.3 * np.arange(days) / max(days - 1, 1)
    weights = np.array(content.WEEKDAY_WEIGHTS)[weekday] * trend * rng.lognormal(0.0, 0.08, days)
    day_of_call = np.repeat(np.arange(days), rng.multinomial(count, weights / weights.sum()))
    return day_starts[day_of_call] + _seconds_of_day(rng, np.ones(count))


def sample_times_in_day(rng: np.random.Generator, count: int, day_start: int, now: float) -> np.ndarray:
    reachable = _reachable_share(np.array([day_start]), now)
    if reachable[0] <= 0:
        raise ValueError("cannot add calls to a day that has not started yet")
    return np.sort(day_start + _seconds_of_day(rng, np.repeat(reachable, count)))


def _zipf_weights(count: int, exponent: float = 0.9) -> np.ndarray:
    weights = 1.0 / np.arange(1, count + 1) ** exponent
    return weights / weights.sum()


def _normalised(weights) -> np.ndarray:
    weights = np.asarray(weights, dtype=float)
    return weights / weights.sum()


def _conditional_choice(rng: np.random.Generator, given: np.ndarray, table) -> np.ndarray:
    """Per row, a category drawn from table[given] (rows of probabilities)."""
    cumulative = np.cumsum(np.asarray(table, dtype=float), axis=1)[:, :-1]
    return (rng.random(len(given))[:, None] >= cumulative[given]).sum(axis=1)


def _caller_areas() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(city code, area code, probability) for each city's area codes."""
    rows = [(code, int(area), weight / len(areas))
            for code, (_city, _state, areas, weight) in enumerate(content.CITIES) for area in areas]
    cities, areas, weights = zip(*rows)
    return np.array(cities), np.array(areas, dtype=np.int64), _normalised(weights)


_CALLER_AREAS = _caller_areas()


def sample_attributes(rng: np.random.Generator, count: int, catalog: Catalog,
                      fixed: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Every column but started/idnum. `fixed` pins number/campaign/outcome to one code."""
    fixed = fixed or {}

    def pick(name: str, options: int, probabilities) -> np.ndarray:
        if name in fixed:
            return np.full(count, fixed[name], dtype=_DTYPES[name])
        return rng.choice(options, count, p=probabilities).astype(_DTYPES[name])

    generated_numbers = len(catalog.number_traffic)
    number = pick("number", generated_numbers, _normalised(catalog.number_traffic))
    outcome = pick("outcome", len(content.OUTCOMES), _normalised(content.OUTCOME_WEIGHTS))
    median, sigma = (np.array(part)[outcome] for part in zip(*content.DURATION_GIVEN_OUTCOME))
    duration = np.clip(np.rint(median * np.exp(sigma * rng.standard_normal(count))), 1, 3_600).astype(np.int32)
    usual_source = np.array(catalog.number_source_codes)[np.minimum(number, generated_numbers - 1)]
    source = np.where(rng.random(count) < 0.85, usual_source, rng.integers(0, len(content.SOURCES), count))
    city, area, area_weights = _CALLER_AREAS
    area_pick = rng.choice(len(area), count, p=area_weights)
    recording_enabled = np.array([n["recording_enabled"] for n in catalog.numbers])[number]
    too_short = (outcome == content.OUTCOMES.index("abandoned")) & (
        duration < content.ABANDONED_UNRECORDED_BELOW_SECONDS)
    return {
        "number": number,
        "outcome": outcome,
        "sentiment": _conditional_choice(rng, outcome, content.SENTIMENT_GIVEN_OUTCOME).astype(np.int8),
        "duration": duration,
        "campaign": pick("campaign", len(catalog.campaign_ids), _zipf_weights(len(catalog.campaign_ids))),
        "affiliate": pick("affiliate", len(catalog.affiliate_ids), _zipf_weights(len(catalog.affiliate_ids))),
        "source": source.astype(np.int8),
        "city": city[area_pick].astype(np.int8),
        "caller": area[area_pick] * 10_000_000 + rng.integers(2_000_000, 10_000_000, count),
        "has_recording": recording_enabled & ~too_short,
    }
