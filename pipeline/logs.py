"""Logging on stderr: human lines by default, one JSON object per line for log shippers."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        return json.dumps(entry, default=str)


_format = {"value": "text"}


def json_logs() -> bool:
    """Whether --log-format json is in force (so even fatal errors are JSON lines)."""
    return _format["value"] == "json"


def json_requested(argv: list[str]) -> bool:
    """Whether the command line asks for JSON logs, for errors raised before logging is set up."""
    return "--log-format=json" in argv or any(a == "--log-format" and b == "json" for a, b in zip(argv, argv[1:]))


def fatal_line(message: str, exit_code: int, *, as_json: bool | None = None) -> str:
    """The one line on stderr that ends a command: JSON when logs are JSON."""
    if not (json_logs() if as_json is None else as_json):
        return message
    return json.dumps({
        "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "level": "error" if exit_code not in (0, 130, 143) else "warning",
        "logger": "callsync",
        "message": message,
        "event": "fatal",
        "exit_code": exit_code,
    })


def setup_logging(log_format: str = "text", verbose: bool = False) -> None:
    _format["value"] = log_format
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    # Everything else that logs (asyncio, aiohttp, Python's warnings) goes the same way, so
    # that with JSON logs every line on stderr is JSON.
    logging.captureWarnings(True)
    logging.getLogger().handlers[:] = [handler]
    root = logging.getLogger("callsync")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    # Retries are routine; show them only when asked.
    logging.getLogger("callsync.client").setLevel(logging.DEBUG if verbose else logging.WARNING)
