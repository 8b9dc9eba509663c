"""Static catalogues and per-call content (transcripts, recording bytes) for the sandbox."""

from __future__ import annotations

import hashlib
import random

OUTCOMES = ("qualified", "unqualified", "voicemail", "abandoned")
OUTCOME_WEIGHTS = (0.35, 0.30, 0.15, 0.20)
SENTIMENTS = ("positive", "neutral", "negative")
# Row = outcome, columns = P(positive, neutral, negative).
SENTIMENT_GIVEN_OUTCOME = (
    (0.65, 0.28, 0.07),
    (0.15, 0.50, 0.35),
    (0.05, 0.85, 0.10),
    (0.05, 0.55, 0.40),
)
# Lognormal duration per outcome: (median seconds, sigma).
DURATION_GIVEN_OUTCOME = ((260.0, 0.55), (95.0, 0.70), (38.0, 0.40), (11.0, 0.75))
# Abandoned calls shorter than this were never recorded.
ABANDONED_UNRECORDED_BELOW_SECONDS = 8

SOURCES = (
    "google_ads", "facebook", "bing_ads", "organic", "referral",
    "tv", "radio", "email", "direct", "yelp",
)

# (display name, type, usual source, share of traffic, recording enabled, flow slot)
NUMBER_SPECS = (
    ("Google Ads Pool - 1", "toll_free", "google_ads", 0.16, True, 0),
    ("Google Ads Pool - 2", "toll_free", "google_ads", 0.14, True, 0),
    ("Google Ads Pool - 3", "local", "google_ads", 0.10, True, 0),
    ("Facebook Pool - 1", "local", "facebook", 0.09, True, 1),
    ("Facebook Pool - 2", "local", "facebook", 0.07, True, 1),
    ("Bing Ads Pool - 1", "toll_free", "bing_ads", 0.06, True, 0),
    ("Website Main Line", "local", "organic", 0.10, True, 3),
    ("Referral Partners", "local", "referral", 0.06, True, 1),
    ("TV Spot - National", "vanity", "tv", 0.07, True, 3),
    ("Radio - Morning Drive", "toll_free", "radio", 0.05, True, 2),
    ("Email Campaign Line", "local", "email", 0.05, True, 1),
    ("Legacy Directory Line", "local", "yelp", 0.05, False, 2),
)
NUMBER_TYPES = ("local", "toll_free", "vanity")
TOLL_FREE_PREFIXES = ("800", "888", "877", "866")
VANITY_WORDS = {"HOMEPRO": "4663776", "FIXITNW": "3494869", "SUNPOWR": "7867697"}

FLOW_NAMES = ("Main IVR", "Sales Direct Forward", "After Hours Voicemail", "AI Receptionist")

# (city, state, area codes, relative call volume)
CITIES = (
    ("New York", "NY", ("212", "718", "917"), 8.3), ("Los Angeles", "CA", ("213", "310", "323"), 3.9),
    ("Chicago", "IL", ("312", "773"), 2.7), ("Houston", "TX", ("713", "281", "832"), 2.3),
    ("Phoenix", "AZ", ("602", "480"), 1.6), ("Philadelphia", "PA", ("215", "267"), 1.6),
    ("San Antonio", "TX", ("210",), 1.5), ("San Diego", "CA", ("619", "858"), 1.4),
    ("Dallas", "TX", ("214", "469", "972"), 1.3), ("San Jose", "CA", ("408",), 1.0),
    ("Austin", "TX", ("512", "737"), 1.0), ("Jacksonville", "FL", ("904",), 0.95),
    ("Fort Worth", "TX", ("817",), 0.93), ("Columbus", "OH", ("614",), 0.9),
    ("Charlotte", "NC", ("704", "980"), 0.88), ("Indianapolis", "IN", ("317",), 0.88),
    ("San Francisco", "CA", ("415", "628"), 0.87), ("Seattle", "WA", ("206",), 0.75),
    ("Denver", "CO", ("303", "720"), 0.72), ("Washington", "DC", ("202",), 0.69),
    ("Nashville", "TN", ("615",), 0.69), ("Oklahoma City", "OK", ("405",), 0.68),
    ("Boston", "MA", ("617", "857"), 0.65), ("El Paso", "TX", ("915",), 0.6),
    ("Portland", "OR", ("503", "971"), 0.65), ("Las Vegas", "NV", ("702",), 0.64),
    ("Detroit", "MI", ("313",), 0.63), ("Memphis", "TN", ("901",), 0.6),
    ("Louisville", "KY", ("502",), 0.6), ("Baltimore", "MD", ("410", "443"), 0.58),
    ("Milwaukee", "WI", ("414",), 0.57), ("Albuquerque", "NM", ("505",), 0.56),
    ("Tucson", "AZ", ("520",), 0.54), ("Sacramento", "CA", ("916",), 0.52),
    ("Atlanta", "GA", ("404", "678", "470"), 0.5), ("Kansas City", "MO", ("816",), 0.51),
    ("Miami", "FL", ("305", "786"), 0.44), ("Raleigh", "NC", ("919", "984"), 0.47),
    ("Minneapolis", "MN", ("612",), 0.43), ("Tampa", "FL", ("813",), 0.4),
    ("New Orleans", "LA", ("504",), 0.38), ("Cleveland", "OH", ("216",), 0.37),
)

# Relative call volume per Eastern local hour (0..23).
EASTERN_HOURLY_WEIGHTS = (
    0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.4, 0.8, 1.5, 2.6, 3.0, 3.0,
    2.8, 2.8, 2.9, 2.8, 2.5, 2.0, 1.4, 1.1, 0.9, 0.7, 0.5, 0.3,
)
EASTERN_UTC_OFFSET_HOURS = -5
WEEKDAY_WEIGHTS = (1.0, 1.05, 1.05, 1.0, 0.95, 0.55, 0.4)  # Monday first

COMPANY = "Brightline Home Services"
PRODUCTS = (
    "solar panel installation", "HVAC tune-up", "water heater replacement", "roof inspection",
    "home security system", "premium maintenance plan", "air duct cleaning", "heat pump upgrade",
)
PRICES = ("$89", "$129", "$249", "$499", "$1,200", "$4,800", "$39 a month", "$19.99 a month")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
TIMES = ("8 AM", "9:30 AM", "10 AM", "11 AM", "1 PM", "2:30 PM", "4 PM")
FIRST_NAMES = ("Maria", "James", "Linda", "Robert", "Aisha", "Kevin", "Sofia", "Daniel", "Priya", "Tom")

_CALLER_OPENERS = (
    "Hi, I'd like to learn about your pricing for a {product}.",
    "Hello, I saw your ad and I'm calling about a {product}.",
    "Hi there, do you have any availability this week for a {product}?",
    "I'm calling to get a quote on a {product} for my house.",
    "Yeah hi, my neighbor recommended you for a {product}.",
)
_AGENT_PRICING = (
    "Our {product} starts at {price}, and we offer financing at zero percent for 18 months.",
    "For a {product} most customers pay around {price}, including parts and labor.",
    "Right now the {product} is {price} with our spring promotion.",
    "The {product} is {price}, and members of the maintenance plan get ten percent off.",
)
_CALLER_FOLLOWUPS = (
    "Is there a warranty on that?",
    "Do you charge extra for weekend appointments?",
    "How long does the installation usually take?",
    "Can I get a discount if I book today?",
    "Do you offer financing or payment plans?",
    "Are your technicians licensed and insured?",
)
_AGENT_ANSWERS = (
    "Yes, everything comes with a two year warranty on labor.",
    "There's no extra charge on Saturdays, but Sundays are closed.",
    "Most jobs take about three to four hours.",
    "If you book today I can waive the {price} diagnostic fee.",
    "We have monthly payment plans starting at {price}.",
    "All of our technicians are licensed, insured and background checked.",
)
_QUALIFIED_CLOSE = (
    ("agent", "I can book you an appointment for {day} at {time}. Does that work?"),
    ("caller", "{day} at {time} works great, let's book it."),
    ("agent", "Perfect, you're confirmed for {day} at {time}. You'll get a text reminder."),
    ("caller", "Thanks so much, see you then."),
)
_UNQUALIFIED_REASONS = (
    ("caller", "Actually I'm just price shopping right now, not ready to book."),
    ("agent", "Unfortunately we don't service that zip code yet."),
    ("caller", "Oh sorry, I think I dialed the wrong number."),
    ("caller", "I was calling about a job application, not a service."),
    ("agent", "That product is out of stock until next month, can we call you back?"),
)
_UNQUALIFIED_CLOSE = (
    ("caller", "Okay, I'll think about it and call back later."),
    ("agent", "No problem, thanks for calling {company}. Have a great day."),
)


def transcript_segments(call_id: str, outcome: str, duration_seconds: int) -> list[dict]:
    """3-12 realistic segments, deterministic for a call id."""
    rng = random.Random(_stable_int(call_id, b"transcript"))
    words = {
        "company": COMPANY, "product": rng.choice(PRODUCTS), "price": rng.choice(PRICES),
        "day": rng.choice(DAYS), "time": rng.choice(TIMES), "name": rng.choice(FIRST_NAMES),
    }
    lines = _script_for(outcome, rng)
    stamps = _timestamps(rng, len(lines), duration_seconds)
    return [
        {"speaker": speaker, "text": text.format(**words), "timestamp": stamp}
        for (speaker, text), stamp in zip(lines, stamps)
    ]


def _script_for(outcome: str, rng: random.Random) -> list[tuple[str, str]]:
    greeting = ("ai", "Hi, thanks for calling {company}! This call may be recorded. How can I help you today?")
    if outcome == "voicemail":
        return [
            ("ai", "You've reached {company}. We're away right now, please leave a message after the tone."),
            ("caller", "Hi, this is {name}, I'm calling about a {product}."),
            ("caller", "Please call me back when you can, I'm free {day} after {time}."),
        ][: rng.randint(2, 3)] + [("ai", "Thank you, your message has been saved. Goodbye.")]
    if outcome == "abandoned":
        return [greeting, ("caller", "Hello? Hi, is this about the {product}..."), ("ai", "Are you still there?")]
    lines = [greeting, ("caller", rng.choice(_CALLER_OPENERS)), ("agent", rng.choice(_AGENT_PRICING))]
    for _ in range(rng.randint(0, 2)):
        lines += [("caller", rng.choice(_CALLER_FOLLOWUPS)), ("agent", rng.choice(_AGENT_ANSWERS))]
    if outcome == "qualified":
        return lines + list(_QUALIFIED_CLOSE[: rng.randint(2, 4)])
    return lines + [rng.choice(_UNQUALIFIED_REASONS)] + list(_UNQUALIFIED_CLOSE[: rng.randint(1, 2)])


def _timestamps(rng: random.Random, count: int, duration_seconds: int) -> list[float]:
    span = max(float(duration_seconds) * 0.9, float(count))
    inner = sorted(rng.uniform(1.0, span) for _ in range(count - 1))
    return [0.0] + [round(t, 1) for t in inner]


_MP3_FRAME_HEADER = b"\xff\xfb\x90\x64"  # MPEG-1 layer III, 128 kbit/s
_MP3_FRAME_BYTES = 417
# Far below a real 128 kbit/s (16,000 bytes a second), so that demos and benchmarks are
# about requests, not bytes; SandboxData.recording_bytes_per_second changes it.
RECORDING_BYTES_PER_SECOND = 40


def recording_bytes(call_id: str, duration_seconds: int, bytes_per_second: int = RECORDING_BYTES_PER_SECOND) -> bytes:
    """An ID3 tag followed by MP3-looking frames of pseudo-random payload."""
    tag = b"ID3\x04\x00\x00\x00\x00\x00\x00"  # ID3v2.4, no frames
    rng = random.Random(_stable_int(call_id, b"recording"))
    body = bytearray(rng.randbytes(2_000 + int(duration_seconds) * bytes_per_second - len(tag)))
    for start in range(0, len(body) - _MP3_FRAME_BYTES + 1, _MP3_FRAME_BYTES):
        body[start : start + len(_MP3_FRAME_HEADER)] = _MP3_FRAME_HEADER
    return tag + bytes(body)


def _stable_int(text: str, salt: bytes) -> int:
    digest = hashlib.blake2b(text.encode(), digest_size=8, key=salt).digest()
    return int.from_bytes(digest, "big")
