"""Recordings and transcripts: jobs, streaming downloads, atomic files. (Being built.)"""

from __future__ import annotations

from typing import Any


async def fetch_pending(client, writer, settings, *, run_id: str) -> dict[str, Any]:
    return {}
