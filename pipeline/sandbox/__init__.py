"""Offline sandbox of the vendor's Call Tracking API: deterministic data, fault injection, two hosts."""

from .data import SandboxData
from .faults import parse_assignment as parse_fault_assignment
from .server import (
    TOKENS,
    Faults,
    RequestRecord,
    Sandbox,
    build_api_app,
    build_storage_app,
    run_sandbox,
)

__all__ = [
    "TOKENS",
    "Faults",
    "RequestRecord",
    "Sandbox",
    "SandboxData",
    "build_api_app",
    "build_storage_app",
    "parse_fault_assignment",
    "run_sandbox",
]
