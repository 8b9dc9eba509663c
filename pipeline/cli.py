"""The command line: thin commands over pipeline.sync, .media, .analytics and .sandbox.

Every user error is a CallsyncError with a one-line message; ``main`` maps it to
its exit code (see pipeline.errors) and never shows a traceback for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import time
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import click

from pipeline import __version__
from pipeline.configpath import find_config, store_for
from pipeline.errors import CallsyncError, UsageError, command_hint
from pipeline.logs import fatal_line, json_logs, json_requested, setup_logging

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.sync import RunSummary

log = logging.getLogger("callsync")


def config_option(command: Callable) -> Callable:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        help="Config file (default: $CALLSYNC_CONFIG, else ./callsync.toml).",
    )(command)


def _apply(command: Callable, options: list[Callable]) -> Callable:
    for option in reversed(options):
        command = option(command)
    return command


def log_options(command: Callable) -> Callable:
    """How a run logs: every command that talks to the API speaks the same flags."""
    return _apply(
        command,
        [
            click.option(
                "--log-format",
                type=click.Choice(["text", "json"]),
                default="text",
                show_default=True,
                help="Logs on stderr: human lines, or JSON lines for log shippers.",
            ),
            click.option("-v", "--verbose", is_flag=True, help="Debug logs, including each retry."),
            click.option(
                "--summary-format",
                type=click.Choice(["text", "json"]),
                default="text",
                show_default=True,
                expose_value=False,
                callback=_remember_summary_format,
                help="The run's summary on stdout: one human line, or one JSON object.",
            ),
        ],
    )


def _remember_summary_format(ctx: click.Context, _param: click.Parameter, value: str) -> str:
    ctx.meta["callsync.summary_format"] = value
    return value


def run_options(command: Callable) -> Callable:
    """Options shared by the commands that sync: they all speak the same flags."""
    return _apply(
        command,
        [
            config_option,
            click.option("--no-media", is_flag=True, help="Skip recordings and transcripts this run."),
            log_options,
            click.option("--progress/--no-progress", default=None, help="Progress bar (default: only on a TTY)."),
        ],
    )


def parse_date(_ctx: Any, param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param=param) from None


def _parse_moment(value: str | None, param: click.Parameter) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO timestamp (e.g. 2026-12-01T12:00:00Z)", param=param) from None
    if moment.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no timezone (add Z for UTC)", param=param)
    return moment


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="callsync")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """callsync keeps a local, queryable DuckDB copy of a call-tracking account."""
    if ctx.invoked_subcommand != "sandbox":
        _keep_numpy_out()


@contextlib.contextmanager
def _loading() -> Iterator[None]:
    """Around a run's imports (aiohttp, pydantic, pyarrow, DuckDB and ours): ~90k objects
    that live as long as the process. With the collector on, its passes over them while
    importing took ~70 ms of a 100-call backfill's ~0.6 s; frozen, the run's own passes
    skip them too."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _keep_numpy_out() -> None:
    """Before a command's imports. pyarrow imports NumPy whenever it is installed, for
    conversions callsync never makes; only the sandbox needs it (its data are NumPy
    columns). Kept out, a 200k-call backfill peaks ~12 MB lower (~202 MB, not ~214)."""
    if "numpy" not in sys.modules:
        sys.modules["numpy"] = None  # type: ignore[assignment]  # `import numpy` now raises ImportError


@cli.command()
@run_options
@click.option("--today", callback=parse_date, hidden=True, help="Pretend today is this UTC date (testing).")
def sync(config_path, no_media, log_format, progress, verbose, today) -> None:
    """Incremental sync, for cron: from the watermark minus lookback_days through today."""
    with _loading():
        from pipeline import sync as engine

    settings = _settings(config_path, log_format, verbose)
    with _progress_bar(progress) as bar:
        summary = asyncio.run(
            engine.sync(settings, today=today, with_media=not no_media, progress=bar)
        )
    _finish(summary)


@cli.command()
@run_options
@click.option("--start", required=True, callback=parse_date, help="First day (YYYY-MM-DD, UTC).")
@click.option("--end", required=True, callback=parse_date, help="Last day, inclusive (YYYY-MM-DD, UTC).")
@click.option("--number-id", help="Only calls to this tracking number.")
@click.option("--campaign-id", help="Only calls of this campaign.")
@click.option("--outcome", type=click.Choice(["qualified", "unqualified", "voicemail", "abandoned"]), help="Only calls with this outcome.")
@click.option("--force", is_flag=True, help="Fetch again windows an earlier backfill already committed.")
def backfill(config_path, no_media, log_format, progress, verbose, start, end, number_id, campaign_id, outcome, force):
    """One-off load of [--start, --end]; a re-run skips windows already committed."""
    with _loading():
        from pipeline import sync as engine
        from pipeline.extract import CallFilters

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
                progress=bar,
            )
        )
    _finish(summary)


@cli.command()
@config_option
@click.option(
    "--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="Human-readable text, or JSON for monitoring.",
)
@click.option(
    "--database",
    type=click.Path(dir_okay=False, path_type=Path),
    help="DuckDB file to report on, e.g. demo.duckdb (default: [database] path of the config).",
)
def status(config_path, output_format, database) -> None:
    """When the snapshot was published, last sync, watermark, recent runs, row counts, media."""
    from pipeline import report

    facts = report.status(database or _store(config_path))
    click.echo(json.dumps(facts, indent=2, default=str) if output_format == "json" else report.render_status(facts))


@cli.command()
@config_option
@click.option("--verify", is_flag=True, help="Re-hash stored recordings; fetch again those missing or changed.")
@click.option(
    "--ignore-backoff", is_flag=True, help="Ask again now for failed and not-yet-ready media, ignoring back-off."
)
@log_options
def media(config_path, verify, ignore_backoff, log_format, verbose) -> None:
    """Fetch the recordings and transcripts not stored yet (sync and backfill do it too)."""
    with _loading():
        from pipeline import sync as engine

    settings = _settings(config_path, log_format, verbose)
    with _progress_bar(None) as bar:
        summary = asyncio.run(engine.media(settings, verify=verify, ignore_backoff=ignore_backoff, progress=bar))
    _finish(summary)


@cli.command()
@config_option
@click.option("--start", callback=parse_date, help="First day (YYYY-MM-DD, UTC; default [sync] start_date, else the first synced day).")
@click.option("--end", callback=parse_date, help="Last day, inclusive (YYYY-MM-DD, UTC; default today).")
@click.option("--dry-run", is_flag=True, help="Only report what differs; change nothing.")
@click.option(
    "--full", is_flag=True,
    help="List every window in full, call by call, even where the totals match (costs a backfill's requests).",
)
@log_options
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: only on a TTY).")
def verify(config_path, start, end, dry_run, full, log_format, verbose, progress) -> None:
    """Compare the database with the API over a range, at the lowest cost, and mend what differs."""
    with _loading():
        from pipeline import verify as checking

    settings = _settings(config_path, log_format, verbose)
    with _progress_bar(progress) as bar:
        summary, report = asyncio.run(checking.verify(settings, start, end, dry_run=dry_run, full=full, progress=bar))
    click.echo(report.line())
    _finish(summary)


@cli.command()
@config_option
@click.option("--caller-number", "caller_numbers", multiple=True, metavar="+1NNNNNNNNNN",
              help="Erase every call from this number (repeatable). Matched on its digits.")
@click.option("--call-id", "call_ids", multiple=True, metavar="ID", help="Erase this call (repeatable).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (required without a terminal).")
@click.option("--list", "list_only", is_flag=True, help="Show the tombstones by date, without the numbers or ids.")
@log_options
def forget(config_path, caller_numbers, call_ids, yes, list_only, log_format, verbose) -> None:
    """Erase a caller or a call: rows, recordings, transcripts, rejected records; never synced again."""
    from pipeline import forget as erasing
    from pipeline.config import load_settings

    setup_logging(log_format, verbose)
    settings = load_settings(config_path)
    if list_only:
        rows = erasing.list_tombstones(settings)
        for created_at, kind, hash_prefix, run_id in rows:
            click.echo(f"{created_at:%Y-%m-%d %H:%M:%S}  {kind:<13}  {hash_prefix}  run {run_id}")
        click.echo(f"({len(rows)} tombstone{'' if len(rows) == 1 else 's'})")
        return
    erasing.forget_values(list(caller_numbers), list(call_ids))  # a usage error before any question
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("forget removes data for good: pass --yes when not on a terminal")
        what = len(caller_numbers) + len(call_ids)
        click.confirm(f"Erase {what} caller(s)/call(s) from {settings.database.store().path} and the media folder, for good?",
                      abort=True)
    summary = erasing.forget(settings, list(caller_numbers), list(call_ids))
    click.echo(summary.line())


@cli.command()
@config_option
@log_options
def compact(config_path, log_format, verbose) -> None:
    """A lake's upkeep: merge small files, expire old snapshots, delete files no snapshot needs."""
    from pipeline.config import load_settings

    setup_logging(log_format, verbose)
    store = load_settings(config_path).database.store()
    with store.lock():
        conn = store.open()
        try:
            done = store.compact(conn)
        finally:
            conn.close()
    if "note" in done:
        click.echo(f"nothing to do: {done['note']}")
        return
    per_table = ", ".join(f"{table} {files}" for table, files in done["files_per_table"].items() if files)
    click.echo(
        f"compacted {store.path}: {done['files_before']} -> {done['files_after']} data files ({per_table}),"
        f" {done['snapshots_expired']} snapshots expired, {done['files_removed']} old files"
        f" and {done['orphans_removed']} orphans removed"
    )


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8787, show_default=True, help="API port (0 = any free port).")
@click.option("--storage-port", default=0, show_default=True, help="Port of the 'storage' host recordings redirect to.")
@click.option("--seed", default=42, show_default=True, help="Same seed, same data.")
@click.option("--calls", default=20_000, show_default=True, help="Calls to generate.")
@click.option("--days", default=60, show_default=True, help="Spread over the last DAYS days (UTC).")
@click.option("--latency-ms", default=0.0, show_default=True, help="Every answer's time, the sandbox's own work included.")
@click.option("--error-rate", default=0.0, show_default=True, help="Fraction answered 500/502/503.")
@click.option("--drop-rate", default=0.0, show_default=True, help="Fraction whose connection is dropped.")
@click.option("--rate-limit", type=float, help="Requests per second per token; over it: 429 + Retry-After.")
@click.option("--drift-rate", default=0.0, show_default=True, help="Chance a listing sees a late call land in its window.")
@click.option("--redirect-recordings", is_flag=True, help="Serve recordings through a 302 to the storage host.")
@click.option("--fault", "fault_settings", multiple=True, metavar="NAME=VALUE",
              help="Any fault knob (repeatable), e.g. --fault cut_recordings=true --fault fault_day=2026-11-30;"
                   " GET /_admin/faults lists the names.")
@click.option("--today", callback=parse_date, help="Last day of the data, YYYY-MM-DD (default: today, UTC).")
@click.option(
    "--now", callback=lambda _ctx, param, value: _parse_moment(value, param),
    help="Pin the sandbox's clock, e.g. 2026-12-01T12:00:00Z: calls after it are not served yet.",
)
@click.option("--stop-on-eof", is_flag=True, hidden=True, help="Stop when standard input closes (for a parent process).")
def sandbox(
    host, port, storage_port, seed, calls, days, latency_ms, error_rate, drop_rate, rate_limit, drift_rate,
    redirect_recordings, fault_settings, today, now, stop_on_eof,
):
    """Serve an offline copy of the vendor API, with fault knobs, until Ctrl-C."""
    from pipeline import sandbox as vendor

    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: "sandbox stopped"
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a parent stopping it: no line, nothing to keep

    faults = vendor.Faults(
        latency_ms=latency_ms,
        error_rate=error_rate,
        drop_rate=drop_rate,
        rate_limit=rate_limit,
        drift_rate=drift_rate,
        redirect_recordings=redirect_recordings,
    )
    try:
        faults.update(**dict(vendor.parse_fault_assignment(setting) for setting in fault_settings))
        data = vendor.SandboxData.generate(seed=seed, calls=calls, days=days, today=today, now=now)
    except ValueError as exc:
        raise UsageError(f"sandbox: {exc}") from None

    unset_faults = vendor.Faults().as_dict()

    async def serve() -> None:
        async with contextlib.AsyncExitStack() as stack:
            try:
                running = await stack.enter_async_context(
                    vendor.run_sandbox(data=data, faults=faults, host=host, port=port, storage_port=storage_port)
                )
            except OSError as exc:
                raise CallsyncError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            click.echo(f"sandbox: {data.calls_total} calls over {days} days (seed {seed}) at {running.base_url}")
            click.echo(f"storage host: {running.storage_url}")
            if knobs_set := {name: value for name, value in faults.as_dict().items() if value != unset_faults[name]}:
                click.echo("faults: " + ", ".join(f"{name}={json.dumps(value)}" for name, value in knobs_set.items()))
            click.echo("tokens: " + ", ".join(f"{token} ({' '.join(sorted(scopes)) or 'no scopes'})" for token, scopes in vendor.TOKENS.items()))
            click.echo(f'try: curl -H "Authorization: Bearer sandbox-token" "{running.base_url}/api/call-tracking/calls?per_page=2"')
            click.echo(f'config: [api] base_url = "{running.base_url}"  and  export CALLSYNC_TOKEN=sandbox-token')
            await (_end_of_input() if stop_on_eof else asyncio.Event().wait())

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        click.echo("sandbox stopped")


@cli.command()
@click.argument("name_or_sql", required=False)
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="A query parameter (repeatable).")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="table for people; csv, or json (a list of objects), for programs.",
)
@click.option("--list", "list_only", is_flag=True, help="List the named queries and what each answers.")
@click.option(
    "--database",
    type=click.Path(dir_okay=False, path_type=Path),
    help="DuckDB file to query, e.g. demo.duckdb (default: [database] path of the config).",
)
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), hidden=True, help="Ignored: queries never wait now.")
@config_option
def query(name_or_sql, params, output_format, list_only, database, wait_s, config_path) -> None:
    """Run a named query (see --list) or ad-hoc SQL, on a read-only connection.

    NAME_OR_SQL is a query name from sql/queries, or SQL in quotes. It reads the
    snapshot the last publish left, at once. Errors in the query exit 2."""
    from pipeline import analytics

    if list_only:
        click.echo(_describe_queries(analytics.list_queries()))
        return
    if not name_or_sql:
        raise UsageError(f"give a query NAME or SQL (see `{command_hint('query --list')}`)")
    columns, rows = analytics.run_query(database or _store(config_path), name_or_sql, analytics.parse_params(params))
    if output_format == "csv":
        click.echo(analytics.to_csv(columns, rows), nl=False)
    elif output_format == "json":
        click.echo(analytics.to_json(columns, rows))
    else:
        _echo_table(analytics.to_table(columns, rows))
        click.echo(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")


@cli.command()
@click.option("--calls", type=click.IntRange(min=1), help="Calls to generate (first run; default 20000).")
@click.option(
    "--days", type=click.IntRange(1, 3660), help="Over this many days, ending yesterday, UTC (first run; default 60)."
)
@click.option("--seed", type=int, help="Same seed, same calls (first run; default 42).")
@click.option(
    "--database",
    type=click.Path(dir_okay=False, path_type=Path),
    default="demo.duckdb",
    show_default=True,
    help="DuckDB file to build, or bring up to date.",
)
@click.option(
    "--media-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default="demo-media",
    show_default=True,
    help="Folder for recordings.",
)
@click.option("--no-media", is_flag=True, help="Skip recordings and transcripts.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: only on a TTY).")
def demo(calls, days, seed, database, media_dir, no_media, progress) -> None:
    """Try callsync offline: serve the sandbox, backfill it with media, show a few tables.

    A later run reuses the data the database was built with (--seed, --calls, --days
    may be left out) and fetches only what is missing."""
    from pipeline import analytics
    from pipeline import demo as showcase

    setup_logging("text", False)
    with _progress_bar(progress) as bar:
        summary = showcase.run_demo(
            database,
            media_dir,
            seed=seed,
            calls=calls,
            days=days,
            with_media=not no_media,
            progress=bar,
        )
    _report(summary)
    for title, columns, rows in showcase.demo_tables(database, with_media=not no_media):
        _echo_table(analytics.to_table(columns, rows), title=title)
    click.echo(f"more: {command_hint(f'query --database {database} --list')}")
    sys.exit(summary.exit_code)


# --- numbers and flows: thin commands over pipeline.account ------------------------------

TABLE_FORMATS = ("table", "csv", "json")


def format_option(*formats: str) -> Callable:
    def decorate(command: Callable) -> Callable:
        return click.option(
            "--format",
            "output_format",
            type=click.Choice(list(formats)),
            default="table",
            show_default=True,
            help="table for people; " + ("csv, or " if "csv" in formats else "") + "json (the API's own objects) for programs.",
        )(command)

    return decorate


def account_options(*formats: str) -> Callable:
    """What every numbers and flows command speaks: --config, --format and the log flags."""

    def decorate(command: Callable) -> Callable:
        return _apply(command, [config_option, format_option(*formats), log_options])

    return decorate


def dry_run_option(command: Callable) -> Callable:
    return click.option(
        "--dry-run", is_flag=True, help="Print the request it would send (method, path, body) and send nothing."
    )(command)


def yes_option(command: Callable) -> Callable:
    return click.option("--yes", is_flag=True, help="Do not ask for confirmation (needed when not on a terminal).")(command)


def json_input_options(command: Callable) -> Callable:
    return _apply(
        command,
        [
            click.option("--file", "json_file", metavar="F", help="Read the JSON object from file F (- = standard input)."),
            click.option("--json", "json_text", metavar="TEXT", help="The JSON object itself."),
        ],
    )


def _check_number_type(_ctx: Any, _param: click.Parameter, value: str) -> str:
    from pipeline.account import number_type

    return number_type(value)


def _check_area_code(_ctx: Any, _param: click.Parameter, value: str | None) -> str | None:
    from pipeline.account import area_code

    return area_code(value)


def _check_text(_ctx: Any, param: click.Parameter, value: str | None) -> str | None:
    """A value sent to the API (a name, a flow id in the path): UTF-8 text only."""
    from pipeline.account import text_argument

    if value is None:
        return None
    name = f"--{param.name.replace('_', '-')}" if isinstance(param, click.Option) else param.human_readable_name
    return text_argument(value, name)


def flow_id_argument(command: Callable) -> Callable:
    return click.argument("flow_id", callback=_check_text)(command)


@cli.group()
def numbers() -> None:
    """The account's tracking numbers, from the API: list them, buy one."""


@numbers.command("list")
@account_options(*TABLE_FORMATS)
def numbers_list(config_path, output_format, log_format, verbose) -> None:
    """The account's tracking numbers, as the API has them now."""
    from pipeline import account

    numbers = _call_api(_api_settings(config_path, log_format, verbose), account.numbers)
    _echo_api_objects(numbers, account.NUMBER_COLUMNS, output_format, noun="number")


@numbers.command("buy")
@account_options(*TABLE_FORMATS)
@dry_run_option
@click.option(
    "--type", "kind", required=True, metavar="local|toll_free|vanity", callback=_check_number_type,
    help="The kind of number: local, toll_free or vanity.",
)
@click.option("--area-code", metavar="NNN", callback=_check_area_code, help="Three-digit area code, e.g. 415.")
@click.option("--display-name", metavar="TEXT", callback=_check_text, help="The number's name in the account.")
def numbers_buy(config_path, output_format, log_format, verbose, dry_run, kind, area_code, display_name) -> None:
    """Buy one tracking number and print it. It costs money: a request that may have
    gone through is never sent twice (the account's numbers are listed instead)."""
    from pipeline import account

    if dry_run:
        _echo_plan(account.planned_purchase(kind, area_code, display_name), config_path, output_format)
        return
    settings = _api_settings(config_path, log_format, verbose)
    try:
        number = _call_api(settings, account.buy_number, kind, area_code, display_name)
    except account.UncertainChange as exc:
        if exc.listing is not None:
            _echo_api_objects(exc.listing, account.NUMBER_COLUMNS, output_format, noun="number")
        raise
    _echo_api_object(number, output_format, account.NUMBER_COLUMNS)
    _note(account.next_sync_note("tracking_numbers"), output_format)


@cli.group()
def flows() -> None:
    """The account's call flows, from the API: list, show, create, update, delete."""


@flows.command("list")
@account_options(*TABLE_FORMATS)
def flows_list(config_path, output_format, log_format, verbose) -> None:
    """The account's call flows, as the API has them now."""
    from pipeline import account

    flows = _call_api(_api_settings(config_path, log_format, verbose), account.flows)
    _echo_api_objects(flows, account.FLOW_COLUMNS, output_format, noun="flow")


@flows.command("show")
@account_options(*TABLE_FORMATS)
@flow_id_argument
def flows_show(config_path, output_format, log_format, verbose, flow_id) -> None:
    """One call flow, every field of it."""
    from pipeline import account

    _echo_api_object(_call_api(_api_settings(config_path, log_format, verbose), account.flow, flow_id), output_format)


@flows.command("create")
@account_options(*TABLE_FORMATS)
@dry_run_option
@json_input_options
def flows_create(config_path, output_format, log_format, verbose, dry_run, json_file, json_text) -> None:
    """Create a call flow from a JSON object (sent as given) and print what the API returns."""
    from pipeline import account

    body = account.read_json_input(json_file, json_text, sys.stdin.buffer)
    if dry_run:
        _echo_plan(account.planned_create(body), config_path, output_format)
        return
    settings = _api_settings(config_path, log_format, verbose)
    try:
        created = _call_api(settings, account.create_flow, body)
    except account.UncertainChange as exc:
        if exc.listing is not None:
            _echo_api_objects(exc.listing, account.FLOW_COLUMNS, output_format, noun="flow")
        raise
    _echo_api_object(created, output_format)
    _note(account.next_sync_note("call_flows"), output_format)


@flows.command("update")
@account_options(*TABLE_FORMATS)
@dry_run_option
@json_input_options
@flow_id_argument
def flows_update(config_path, output_format, log_format, verbose, dry_run, json_file, json_text, flow_id) -> None:
    """Change a call flow: the fields to change as a JSON object; prints the flow the API returns."""
    from pipeline import account

    changes = account.read_json_input(json_file, json_text, sys.stdin.buffer)
    if dry_run:
        _echo_plan(account.planned_update(flow_id, changes), config_path, output_format)
        return
    updated = _call_api(_api_settings(config_path, log_format, verbose), account.update_flow, flow_id, changes)
    _echo_api_object(updated, output_format)
    _note(account.next_sync_note("call_flows"), output_format)


@flows.command("delete")
@account_options("table", "json")
@dry_run_option
@yes_option
@flow_id_argument
def flows_delete(config_path, output_format, log_format, verbose, dry_run, yes, flow_id) -> None:
    """Delete a call flow. On a terminal it asks first; elsewhere it needs --yes."""
    from pipeline import account

    if dry_run:
        _echo_plan(account.planned_delete(flow_id), config_path, output_format)
        return
    settings = _api_settings(config_path, log_format, verbose)
    _confirm_delete(flow_id, yes)
    deleted_now = _call_api(settings, account.delete_flow, flow_id)
    if output_format == "table":  # JSON: the API answers a delete with no body, and so do we
        click.echo(f"deleted flow {flow_id}" if deleted_now else account.gone_on_retry_note(flow_id))
    elif not deleted_now:
        _note(account.gone_on_retry_note(flow_id), output_format)
    _note(account.next_sync_note("call_flows"), output_format)


def _confirm_delete(flow_id: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"not deleting flow {flow_id}: standard input is not a terminal to confirm on; pass --yes")
    if not click.confirm(f"Delete call flow {flow_id}?", default=False, err=True):
        raise CallsyncError(f"flow {flow_id} not deleted")


def _api_settings(config_path: str | None, log_format: str, verbose: bool) -> Settings:
    """Settings for a command that talks to the API only: no database involved."""
    from pipeline.config import load_settings

    setup_logging(log_format, verbose)
    settings = load_settings(config_path)
    settings.require_token()
    return settings


def _call_api(settings: Settings, work: Callable, *args: Any) -> Any:
    """``work(client, *args)`` with a client of the configured API, on a fresh event loop."""
    from pipeline.sync import client_for

    async def run() -> Any:
        client = client_for(settings)
        client.options.count_resends = True  # flows delete: a 404 to aiohttp's own resend is not "not found"
        async with client:
            return await work(client, *args)

    return asyncio.run(run())


def _echo_plan(plan: Any, config_path: str | None, output_format: str) -> None:
    """--dry-run: the request that would go to the configured API (never the token)."""
    from pipeline.config import load_settings

    base_url = load_settings(config_path).api.base_url
    if output_format == "json":
        click.echo(json.dumps({**plan.as_dict(), "url": base_url + plan.path}, indent=2, ensure_ascii=False))
        return
    click.echo(f"dry run: would send {plan.method} {base_url}{plan.path}")
    if plan.body is not None:
        click.echo(json.dumps(plan.body, indent=2, ensure_ascii=False))
    click.echo("nothing was sent")


def _echo_api_objects(records: list[dict], columns: list[str], output_format: str, *, noun: str) -> None:
    if output_format == "json":
        click.echo(json.dumps(records, indent=2, ensure_ascii=False))
        return
    _echo_rows(columns, [tuple(_flat(record.get(column)) for column in columns) for record in records], output_format)
    if output_format == "table":
        click.echo(f"({len(records)} {noun}{'' if len(records) == 1 else 's'})")


def _echo_api_object(record: dict, output_format: str, columns: list[str] | None = None) -> None:
    """One object: a row under ``columns``, else one row per field."""
    if output_format == "json":
        click.echo(json.dumps(record, indent=2, ensure_ascii=False))
    elif columns:
        _echo_rows(columns, [tuple(_flat(record.get(column)) for column in columns)], output_format)
    else:
        _echo_rows(["field", "value"], [(key, _flat(value)) for key, value in record.items()], output_format)


def _echo_rows(columns: list[str], rows: list[tuple], output_format: str) -> None:
    from pipeline import analytics

    if output_format == "csv":
        click.echo(analytics.to_csv(columns, rows), nl=False)
    else:
        _echo_table(analytics.to_table(columns, rows))


def _flat(value: Any) -> Any:
    """Nested JSON as JSON text, for a table cell or a CSV field."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value


def _note(text: str, output_format: str) -> None:
    """A word for the person: under a table, or on stderr so that csv and json stay clean."""
    if output_format == "table":
        click.echo(f"note: {text}")
    else:
        click.echo(f"callsync: note: {text}", err=True)


def _store(config_path: str | None):
    found = find_config(config_path)
    if found is None:
        raise UsageError("which database? pass --database FILE, or --config FILE (or set $CALLSYNC_CONFIG)")
    return store_for(found)


def _describe_queries(queries: list) -> str:
    width = max((len(query.name) for query in queries), default=0)
    lines = []
    for query in queries:
        lines.append(f"{query.name:<{width}}  {query.description}")
        for param in query.params:
            default = "" if param.default is None else f" (default {param.default})"
            lines.append(f"{'':<{width}}    --param {param.name}=...  {param.description}{default}")
    return "\n".join(lines)


def _echo_table(table: Any, *, title: str | None = None) -> None:
    from rich.console import Console

    # On a terminal rich fits the table to its width; piped, rows are never wrapped.
    console = Console() if sys.stdout.isatty() else Console(width=1_000)
    if title:
        console.print(title, style="bold", highlight=False, soft_wrap=True)
    console.print(table)


async def _end_of_input() -> None:
    """Returns when standard input closes: the parent that started us is gone."""
    await asyncio.to_thread(sys.stdin.buffer.read)


def _settings(config_path: str | None, log_format: str, verbose: bool) -> Settings:
    from pipeline.config import load_settings

    setup_logging(log_format, verbose)
    settings = load_settings(config_path)
    settings.require_database_folder()
    settings.require_token()
    return settings


def _report(summary: RunSummary) -> None:
    """The run's one summary line on stdout (JSON with --summary-format json; with JSON logs
    also a `run_summary` event on stderr); its error (one line) ends the command."""
    context = click.get_current_context(silent=True)
    event = {"run_id": summary.run_id, "command": summary.command, "status": summary.status,
             "exit_code": summary.exit_code, **summary.record()}
    as_json = context is not None and context.meta.get("callsync.summary_format") == "json"
    click.echo(json.dumps(event, default=str) if as_json else summary.line())
    if json_logs():
        log.info(summary.line(), extra={"event": "run_summary", **event})
    if summary.status == "paused":
        log.warning(summary.error)
    elif summary.error:
        raise _Exit(summary.error, summary.exit_code)
    if summary.exit_code:
        for failure in summary.failures[:5]:
            log.error(failure)


def _finish(summary: RunSummary) -> None:
    _report(summary)
    sys.exit(summary.exit_code)


class _Exit(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class _ProgressBar:
    """Rich progress bars over days (as their windows commit) and media jobs (a sync.Progress); nothing when not
    on a TTY (cron)."""

    def __init__(self, enabled: bool):
        self._progress = None
        self._windows = None
        self._media = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            from rich.progress import TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description:<7}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("eta"), TimeRemainingColumn(), transient=True,
            )

    def __enter__(self) -> _ProgressBar:
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._progress:
            self._progress.stop()

    def plan(self, days: int) -> None:
        if self._progress:
            self._windows = self._progress.add_task("days", total=days)

    def window_done(self, window: Any) -> None:
        if self._progress and self._windows is not None:
            self._progress.advance(self._windows, window.days)

    def media_jobs_due(self, jobs: int) -> None:
        if self._progress:
            if self._media is None:
                self._media = self._progress.add_task("media", total=jobs)
            else:
                self._progress.update(self._media, total=jobs)

    def media_job_done(self) -> None:
        if self._progress:
            if self._media is None:
                self._media = self._progress.add_task("media", total=None)
            self._progress.advance(self._media)


class _ProgressLog:
    """Without a progress bar (cron, a pipe): a long run logs one INFO line per tenth of the
    days to fetch (when there are PROGRESS_MIN_DAYS or more) and at least one per minute, so
    it shows it is alive; a short cron sync stays quiet."""

    def __init__(self) -> None:
        self._summary: Any = None
        self._stats: Any = None
        self._days_planned = 0
        self._days_done = 0
        self._next_mark = 0
        self._media_done = 0
        self._media_due: int | None = None
        self._last_line = time.monotonic()

    def __enter__(self) -> _ProgressLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def watch(self, summary: Any, stats: Any) -> None:
        self._summary, self._stats = summary, stats

    def plan(self, days: int) -> None:
        self._days_planned, self._next_mark = days, self._step()

    def window_done(self, window: Any) -> None:
        self._days_done += window.days
        tenth_passed = self._days_planned >= PROGRESS_MIN_DAYS and self._days_done >= self._next_mark
        if tenth_passed or self._minute_passed():
            while self._next_mark <= self._days_done:
                self._next_mark += self._step()
            self._say()

    def media_jobs_due(self, jobs: int) -> None:
        self._media_due = jobs

    def media_job_done(self) -> None:
        self._media_done += 1
        if self._minute_passed():
            self._say()

    def _step(self) -> int:
        return max(1, self._days_planned // 10)

    def _minute_passed(self) -> bool:
        return time.monotonic() - self._last_line >= PROGRESS_EVERY_S

    def _say(self) -> None:
        self._last_line = time.monotonic()
        summary = self._summary
        if summary is None:
            return
        calls = summary.calls_new + summary.calls_updated + summary.calls_unchanged
        requests = self._stats.requests if self._stats is not None else 0
        due = "?" if self._media_due is None else str(self._media_due)
        log.info(
            "progress: days %d of %d (%d windows), calls %d, requests %d, media %d of %s done",
            self._days_done, self._days_planned, summary.windows_done, calls, requests, self._media_done, due,
            extra={
                "event": "progress", "days_done": self._days_done, "days_planned": self._days_planned,
                "windows_done": summary.windows_done, "calls": calls, "requests": requests,
                "media_done": self._media_done, "media_due": self._media_due,
            },
        )


PROGRESS_EVERY_S = 60.0
PROGRESS_MIN_DAYS = 20


def _progress_bar(requested: bool | None) -> _ProgressBar | _ProgressLog:
    enabled = sys.stderr.isatty() if requested is None else requested
    return _ProgressBar(enabled) if enabled else _ProgressLog()


def _one_line_usage_error(exc: click.ClickException) -> str:
    """click's usage errors as one line that names the option (it prints a usage block)."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        names = []
        while ctx.parent is not None:  # the root's name is how we were started (callsync, python -m ...)
            names.insert(0, ctx.info_name)
            ctx = ctx.parent
        message += f" (see `{command_hint(' '.join(names + ['--help']))}`)"
    return message


def main() -> None:
    """The `callsync` command. It ends with os._exit once its output is flushed: the
    interpreter's teardown of aiohttp, pydantic, pyarrow and DuckDB took ~0.2 s of CPU,
    a fifth of a short cron run. Every file is closed (and synced) by then."""
    try:
        _main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def _tune_process() -> None:
    """Before any library is imported (bench/startup.py's floor makes the same call)."""
    # The event loop thread is busy with parsing while the writer and file threads wake
    # up often: with the default 5 ms switch interval they fight over the GIL (tens of
    # futex calls per request). 50 ms made media downloads ~25% faster.
    sys.setswitchinterval(0.05)
    # Arrow's own allocator (mimalloc) keeps freed pages for reuse: the system one peaked
    # ~14 MB lower in a 200k-call backfill, as fast. Read when pyarrow is first imported.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    # pydantic looks for plugins in every installed package's entry points when it builds
    # its first validator (~5 ms of every run); callsync uses none.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def _stop_at_once(number: int, _frame: object) -> None:
    """SIGINT and SIGTERM outside the part of a run that stops cleanly (pipeline.interrupt
    handles them there): starting up, opening the database, publishing at the end. One
    line and 128 + the signal, at once; every commit is one transaction, so nothing
    committed is lost, and the next run publishes it. (Killed by the signal, a oneshot
    systemd unit counted as failed, and a JSON log got no line.)"""
    sys.stdout.flush()
    message = fatal_line(f"callsync: interrupted by {signal.Signals(number).name}", 128 + number, as_json=json_requested(sys.argv))
    click.echo(message, err=True)
    os._exit(128 + number)


def _main() -> None:
    _tune_process()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, _stop_at_once)
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        _exit_with("callsync: aborted", 130)
    except click.ClickException as exc:
        code = exc.exit_code if exc.exit_code else 2
        _exit_with(f"callsync: error: {_one_line_usage_error(exc)}", code, as_json=json_requested(sys.argv))
    except (CallsyncError, _Exit) as exc:
        code = exc.code if isinstance(exc, _Exit) else exc.exit_code
        _exit_with(f"callsync: {'' if code in (130, 143) else 'error: '}{exc}", code)
    except KeyboardInterrupt:
        _exit_with("callsync: interrupted", 130)


def _exit_with(message: str, code: int, *, as_json: bool | None = None) -> None:
    click.echo(fatal_line(message, code, as_json=as_json), err=True)
    sys.exit(code)
