"""Shared fixtures: a real sandbox over loopback, real config files, real DuckDB files."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp import web

from pipeline.config import Settings, load_settings
from pipeline.sandbox import Faults, SandboxData, run_sandbox

TOKEN = "sandbox-token"
REPO = Path(__file__).resolve().parent.parent
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@pytest.fixture
def small_data() -> SandboxData:
    return SandboxData.generate(seed=7, calls=1_500, days=10)


@pytest.fixture
def faults() -> Faults:
    return Faults(shuffle_pages=True)


@pytest.fixture
async def sandbox(small_data: SandboxData, faults: Faults):
    async with run_sandbox(data=small_data, faults=faults, host="127.0.0.1", port=0) as running:
        yield running


def write_config(directory: Path, base_url: str, **sections: dict[str, Any]) -> Path:
    """A callsync.toml pointing at base_url; ``sections`` override keys per table (None drops one)."""
    tables: dict[str, dict[str, Any]] = {
        "api": {"base_url": base_url, "backoff_initial_s": 0.01, "backoff_max_s": 0.2},
        "database": {"path": "callsync.duckdb"},
        "media": {"dir": "media"},
    }
    for name, values in sections.items():
        tables.setdefault(name, {}).update(values)
    lines = []
    for name, values in tables.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None)
    path = directory / "callsync.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml_value(value: Any) -> str:
    if isinstance(value, date) or (isinstance(value, str) and _ISO_DATE.fullmatch(value)):
        return str(value)  # a TOML date: the config refuses a date in quotes
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return '"' + str(value) + '"'


@pytest.fixture
def make_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CALLSYNC_TOKEN", TOKEN)

    def make(base_url: str, **sections: dict[str, Any]) -> Settings:
        return load_settings(write_config(tmp_path, base_url, **sections))

    return make


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


async def run_cli(
    *args: str, cwd: Path, token: str | None = TOKEN, env: dict[str, str] | None = None, input: bytes | None = None
) -> CliResult:
    """The real CLI in a subprocess; the test's event loop keeps serving the sandbox meanwhile.
    ``input``: what its standard input reads (a pipe, so never a terminal)."""
    stdin = asyncio.subprocess.PIPE if input is not None else None
    process = await start_cli(*args, cwd=cwd, token=token, env=env, stdin=stdin)
    stdout, stderr = await process.communicate(input)
    return CliResult(process.returncode, stdout.decode(), stderr.decode())


async def start_cli(
    *args: str, cwd: Path, token: str | None = TOKEN, env: dict[str, str] | None = None, stdin: Any = None
):
    child_env = {key: value for key, value in os.environ.items() if not key.startswith("CALLSYNC_")}
    if token is not None:
        child_env["CALLSYNC_TOKEN"] = token
    child_env.update(env or {})
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline",
        *args,
        cwd=cwd,
        env=child_env,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """A small aiohttp app of a test's own on loopback, for the block; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serve_raw(answer: bytes) -> AsyncIterator[str]:
    """A raw TCP server on loopback that reads a request's head and writes ``answer``, however
    malformed as HTTP, then closes; yields its base URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()
