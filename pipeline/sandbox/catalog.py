"""The account's small, slowly changing objects: tracking numbers, call flows, campaigns, affiliates."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, time as dtime, timedelta, timezone

from .content import (
    CITIES,
    FLOW_NAMES,
    NUMBER_SPECS,
    NUMBER_TYPES,
    SOURCES,
    TOLL_FREE_PREFIXES,
    VANITY_WORDS,
)

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
CAMPAIGN_COUNT = 8
AFFILIATE_COUNT = 25


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_iso() -> str:
    return iso_utc(datetime.now(timezone.utc))


def short_id(rng: random.Random, prefix: str, taken: set[str], width: int = 6) -> str:
    while True:
        candidate = prefix + "".join(rng.choice(ALPHABET) for _ in range(width))
        if candidate not in taken:
            taken.add(candidate)
            return candidate


class NumberUnavailable(ValueError):
    """No number of the kind asked for is left (vanity numbers are "subject to availability")."""


@dataclass
class Catalog:
    numbers: list[dict]
    flows: dict[str, dict]
    campaign_ids: list[str]
    affiliate_ids: list[str]
    number_source_codes: list[int]  # usual `source` of calls to each generated number
    number_traffic: list[float]      # share of calls landing on each generated number
    rng: random.Random               # for ids and phone numbers minted later (POST)
    taken_ids: set[str]

    @classmethod
    def generate(cls, seed: int, first_day: date) -> "Catalog":
        rng = random.Random(f"catalog-{seed}")
        taken: set[str] = set()
        created = datetime.combine(first_day - timedelta(days=90), dtime(10, 0), timezone.utc)
        flows = [_flow(short_id(rng, "flow_", taken), name, rng, created) for name in FLOW_NAMES]
        catalog = cls(
            numbers=[],
            flows={flow["id"]: flow for flow in flows},
            campaign_ids=[short_id(rng, "camp_", taken) for _ in range(CAMPAIGN_COUNT)],
            affiliate_ids=[short_id(rng, "aff_", taken) for _ in range(AFFILIATE_COUNT)],
            number_source_codes=[SOURCES.index(spec[2]) for spec in NUMBER_SPECS],
            number_traffic=[spec[3] for spec in NUMBER_SPECS],
            rng=rng,
            taken_ids=taken,
        )
        for name, kind, _source, _share, recording, flow_slot in NUMBER_SPECS:
            number = catalog.new_number(kind, None, name, created + timedelta(days=rng.randint(0, 60)))
            number.update(call_flow_id=flows[flow_slot]["id"], recording_enabled=recording)
        return catalog

    def new_number(self, kind: str, area_code: str | None, display_name: str | None,
                   created: datetime | None = None) -> dict:
        if kind not in NUMBER_TYPES:
            raise ValueError(f"type must be one of {', '.join(NUMBER_TYPES)}")
        if area_code is not None and not (len(area_code) == 3 and area_code.isdigit() and area_code[0] not in "01"):
            raise ValueError("area_code must be a 3-digit US area code")
        number = {
            "id": short_id(self.rng, "num_", self.taken_ids),
            "phone_number": self._unused_phone(kind, area_code),
            "display_name": display_name or f"{kind.replace('_', ' ').title()} Line {len(self.numbers) + 1}",
            "type": kind,
            "status": "active",
            "call_flow_id": None,
            "recording_enabled": True,
            "created_at": iso_utc(created or datetime.now(timezone.utc)),
        }
        self.numbers.append(number)
        return number

    def number_index(self, number_id: str) -> int | None:
        """Position of a number by its id (or, leniently, its phone number)."""
        for index, number in enumerate(self.numbers):
            if number_id in (number["id"], number["phone_number"]):
                return index
        return None

    def numbers_using(self, flow_id: str) -> list[str]:
        return [number["id"] for number in self.numbers if number["call_flow_id"] == flow_id]

    def _unused_phone(self, kind: str, area_code: str | None) -> str:
        used = {number["phone_number"] for number in self.numbers}
        if kind == "vanity" and used.issuperset("+1800" + word for word in VANITY_WORDS.values()):
            raise NumberUnavailable("no vanity number is available")
        while True:
            phone = self._phone(kind, area_code)
            if phone not in used:
                return phone

    def _phone(self, kind: str, area_code: str | None) -> str:
        rng = self.rng
        if kind == "vanity":
            return "+1800" + rng.choice(list(VANITY_WORDS.values()))
        if kind == "toll_free":
            prefix = area_code if area_code in TOLL_FREE_PREFIXES else rng.choice(TOLL_FREE_PREFIXES)
        else:
            prefix = area_code or rng.choice(rng.choice(CITIES)[2])
        return f"+1{prefix}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"

    def create_flow(self, body: dict) -> dict:
        stamp = now_iso()
        flow = {**body, "id": short_id(self.rng, "flow_", self.taken_ids), "created_at": stamp, "updated_at": stamp}
        self.flows[flow["id"]] = flow
        return flow

    def update_flow(self, flow_id: str, changes: dict) -> dict | None:
        flow = self.flows.get(flow_id)
        if flow is None:
            return None
        protected = {"id": flow["id"], "created_at": flow["created_at"]}
        flow.update(changes)
        flow.update(protected, updated_at=_later_stamp(flow["updated_at"]))
        return flow

    def delete_flow(self, flow_id: str) -> bool:
        return self.flows.pop(flow_id, None) is not None


def _later_stamp(previous: str) -> str:
    """Now, but strictly after `previous`, so a quick PATCH still visibly bumps updated_at."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    before = datetime.strptime(previous, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return iso_utc(max(now, before + timedelta(seconds=1)))


def _flow(flow_id: str, name: str, rng: random.Random, created: datetime) -> dict:
    forward_to = f"+1{rng.choice(CITIES)[2][0]}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
    steps = [
        {"type": "greeting", "message": f"Thanks for calling! You've reached {name}."},
        {"type": "record", "enabled": True, "announce": True},
    ]
    if "IVR" in name or "Receptionist" in name:
        steps.append({"type": "menu", "prompt": "Press 1 for sales, 2 for service.", "options": [
            {"digit": "1", "label": "Sales", "action": "forward", "to": forward_to},
            {"digit": "2", "label": "Service", "action": "voicemail"},
        ]})
    steps.append({"type": "forward", "to": forward_to, "timeout_seconds": rng.choice((20, 30, 45))})
    steps.append({"type": "voicemail", "transcribe": True})
    return {
        "id": flow_id,
        "name": name,
        "description": f"{name} routing",
        "status": "active",
        "steps": steps,
        "business_hours": {"timezone": "America/New_York", "weekdays": {"start": "08:00", "end": "18:00"}},
        "created_at": iso_utc(created),
        "updated_at": iso_utc(created + timedelta(days=rng.randint(1, 30))),
    }
