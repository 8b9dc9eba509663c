"""The command line: thin commands over pipeline.sync, .media, .analytics and .sandbox.

Every user error is a CallsyncError with a one-line message; ``main`` maps it to
its exit code (see pipeline.errors) and never shows a traceback for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import date
from typing import Any, Callable

import click

from pipeline import __version__
from pipeline.config import Settings, load_settings
from pipeline.errors import CallsyncError, UsageError
from pipeline.extract import CallFilters
from pipeline.logs import setup_logging
from pipeline.sync import RunSummary

log = logging.getLogger("callsync")


def config_option(command: Callable) -> Callable:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        help="Config file (default: $CALLSYNC_CONFIG, else ./callsync.toml).",
    )(command)


def run_options(command: Callable) -> Callable:
    """Options shared by the commands that sync: they all speak the same flags."""
    for option in reversed(
        [
            config_option,
            click.option("--no-media", is_flag=True, help="Skip recordings and transcripts this run."),
            click.option(
                "--log-format",
                type=click.Choice(["text", "json"]),
                default="text",
                show_default=True,
                help="Logs on stderr: human lines, or JSON lines for log shippers.",
            ),
            click.option("--progress/--no-progress", default=None, help="Progress bar (default: only on a TTY)."),
            click.option("-v", "--verbose", is_flag=True, help="Debug logs, including each retry."),
        ]
    ):
        command = option(command)
    return command


def parse_date(_ctx: Any, param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param=param) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="callsync")
def cli() -> None:
    """callsync keeps a local, queryable DuckDB copy of a call-tracking account."""


@cli.command()
@run_options
@click.option("--today", callback=parse_date, hidden=True, help="Pretend today is this UTC date (testing).")
def sync(config_path, no_media, log_format, progress, verbose, today) -> None:
    """Incremental sync, for cron: from the watermark minus lookback_days through today."""
    from pipeline import sync as engine

    settings = _settings(config_path, log_format, verbose)
    with _progress_bar(progress) as bar:
        summary = asyncio.run(
            engine.sync(settings, today=today, with_media=not no_media, on_plan=bar.plan, on_window_done=bar.advance)
        )
    _finish(summary)


@cli.command()
@run_options
@click.option("--start", required=True, callback=parse_date, help="First day (YYYY-MM-DD, UTC).")
@click.option("--end", required=True, callback=parse_date, help="Last day, inclusive (YYYY-MM-DD, UTC).")
@click.option("--number-id", help="Only calls to this tracking number.")
@click.option("--campaign-id", help="Only calls of this campaign.")
@click.option("--outcome", type=click.Choice(["qualified", "unqualified", "voicemail", "abandoned"]))
@click.option("--force", is_flag=True, help="Fetch again windows an earlier backfill already committed.")
def backfill(config_path, no_media, log_format, progress, verbose, start, end, number_id, campaign_id, outcome, force):
    """One-off load of [--start, --end]; a re-run skips windows already committed."""
    from pipeline import sync as engine

    if end < start:
        raise UsageError(f"--end {end} is before --start {start}")
    settings = _settings(config_path, log_format, verbose)
    filters = CallFilters(number_id=number_id, campaign_id=campaign_id, outcome=outcome)
    with _progress_bar(progress) as bar:
        summary = asyncio.run(
            engine.backfill(
                settings,
                start,
                end,
                filters=filters,
                force=force,
                with_media=not no_media,
                on_plan=bar.plan,
                on_window_done=bar.advance,
            )
        )
    _finish(summary)


@cli.command()
@config_option
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
def status(config_path, output_format) -> None:
    """Last sync, watermark, recent runs, row counts, rejected records, pending media."""
    from pipeline import report

    settings = load_settings(config_path)
    facts = report.status(settings.database.path)
    click.echo(json.dumps(facts, indent=2, default=str) if output_format == "json" else report.render_status(facts))


def _settings(config_path: str | None, log_format: str, verbose: bool) -> Settings:
    setup_logging(log_format, verbose)
    settings = load_settings(config_path)
    settings.require_token()
    return settings


def _finish(summary: RunSummary) -> None:
    click.echo(summary.line())
    if summary.error:
        raise _Exit(summary.error, summary.exit_code)
    if summary.exit_code:
        for failure in summary.failures[:5]:
            log.error(failure)
    sys.exit(summary.exit_code)


class _Exit(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class _ProgressBar:
    """A rich progress bar over windows; a no-op when not on a TTY (cron)."""

    def __init__(self, enabled: bool):
        self._progress = None
        self._task = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("windows"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
            )

    def __enter__(self) -> _ProgressBar:
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._progress:
            self._progress.stop()

    def plan(self, windows: int) -> None:
        if self._progress:
            self._task = self._progress.add_task("windows", total=windows)

    def advance(self, _window: object) -> None:
        if self._progress and self._task is not None:
            self._progress.advance(self._task)


def _progress_bar(requested: bool | None) -> _ProgressBar:
    return _ProgressBar(sys.stderr.isatty() if requested is None else requested)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("callsync: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except (CallsyncError, _Exit) as exc:
        click.echo(f"callsync: error: {exc}", err=True)
        sys.exit(getattr(exc, "code", None) if isinstance(exc, _Exit) else exc.exit_code)
    except KeyboardInterrupt:
        click.echo("callsync: interrupted", err=True)
        sys.exit(130)


def command_names() -> list[str]:
    return sorted(cli.commands)


