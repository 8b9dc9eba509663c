"""`callsync numbers` and `callsync flows` through the real CLI, against the sandbox over loopback."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import pty
import signal

import click
import duckdb
import pytest
from aiohttp import web

from pipeline import account
from pipeline.cli import cli
from pipeline.errors import UsageError
from tests.conftest import CliResult, run_cli, serve_app, start_cli, write_config

NO_TERMINAL = b""  # standard input is a pipe: the commands must not wait for a person


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def changes_sent(sandbox) -> list[tuple[str, str, int]]:
    return [(r.method, r.path, r.status) for r in sandbox.requests if r.method != "GET"]


@pytest.fixture
def workdir(sandbox, tmp_path):
    write_config(tmp_path, sandbox.base_url)
    return tmp_path


async def cli_run(workdir, *args: str, **kwargs):
    return await run_cli(*args, cwd=workdir, input=kwargs.pop("input", NO_TERMINAL), **kwargs)


def test_every_numbers_and_flows_command_documents_itself():
    for group in ("numbers", "flows"):
        assert isinstance(cli.commands[group], click.Group) and cli.commands[group].help
        for name, command in cli.commands[group].commands.items():
            assert command.help and command.help.strip(), f"{group} {name} has no help text"
            for param in command.params:
                if param.param_type_name == "option":
                    assert param.help, f"{group} {name} {param.name} has no help text"


def assert_refused(runs: list, expected: list[list[str]], sandbox, *, printing_nothing: bool = False) -> None:
    """Each run exited 2 with one line holding its fragments, and nothing was sent."""
    for run, fragments in zip(runs, expected, strict=True):
        assert run.code == 2, run.stderr
        line = one_line_error(run)
        assert all(fragment in line for fragment in fragments), line
        if printing_nothing:
            assert run.stdout == "", "a refused input prints nothing, not even a dry run's plan"
    assert sandbox.requests == [], "nothing is sent"


async def test_lists_and_show_in_every_format(sandbox, workdir):
    flow_id, flow = next(iter(sandbox.data.flows.items()))
    (workdir / "api-only").mkdir()
    api_only = write_config(workdir / "api-only", sandbox.base_url, database={"path": "no/such/folder/x.duckdb"})
    runs = await asyncio.gather(*(
        cli_run(workdir, *args)
        for args in (
            ("numbers", "list", "--format", "json"), ("numbers", "list", "--format", "csv"), ("numbers", "list"),
            ("flows", "list", "--format", "json"), ("flows", "list"),
            ("flows", "show", flow_id, "--format", "json"), ("flows", "show", flow_id, "--format", "csv"),
            ("flows", "show", flow_id), ("numbers", "list", "--config", str(api_only), "--format", "json"),
        )
    ))
    assert all(run.code == 0 for run in runs), [run.stderr for run in runs]
    numbers_json, numbers_csv, numbers_table, flows_json, flows_table, show_json, show_csv, show_table, api_only_run = runs
    assert json.loads(api_only_run.stdout) == sandbox.data.numbers, "no database needed to talk to the API"
    assert json.loads(numbers_json.stdout) == sandbox.data.numbers, "exactly the API's objects"
    assert [row["id"] for row in csv_rows(numbers_csv.stdout)] == [n["id"] for n in sandbox.data.numbers]
    assert sandbox.data.numbers[0]["phone_number"] in numbers_table.stdout
    assert f"({len(sandbox.data.numbers)} numbers)" in numbers_table.stdout
    assert json.loads(flows_json.stdout) == list(sandbox.data.flows.values())
    assert flow["name"] in flows_table.stdout and "(4 flows)" in flows_table.stdout
    assert json.loads(show_json.stdout) == flow
    fields = {row["field"]: row["value"] for row in csv_rows(show_csv.stdout)}
    assert fields["name"] == flow["name"] and json.loads(fields["steps"]) == flow["steps"]
    assert flow["description"] in show_table.stdout


async def test_changes_in_every_format_and_the_next_sync_shows_them(sandbox, workdir):
    created = await cli_run(workdir, "flows", "create", "--json", '{"name": "Spanish Line", "steps": [{"type": "voicemail"}]}', "--format", "json")
    assert created.code == 0, created.stderr
    kept = json.loads(created.stdout)
    assert kept == sandbox.data.flows[kept["id"]] and kept["steps"] == [{"type": "voicemail"}]
    assert "call_flows" in created.stderr, "the next-sync note goes to stderr beside JSON"
    (workdir / "flow.json").write_text('{"name": "Overflow", "steps": []}')
    from_file = await cli_run(workdir, "flows", "create", "--file", "flow.json")
    assert from_file.code == 0 and "Overflow" in from_file.stdout and "callsync sync`" in from_file.stdout
    gone = next(f for f in sandbox.data.flows.values() if f["name"] == "Overflow")
    assert (await cli_run(workdir, "sync", "--no-media")).code == 0

    renamed = await cli_run(workdir, "flows", "update", kept["id"], "--file", "-", "--format", "csv", input=b'{"name": "Linea"}')
    assert renamed.code == 0, renamed.stderr
    assert {row["field"]: row["value"] for row in csv_rows(renamed.stdout)}["name"] == "Linea"
    described = await cli_run(workdir, "flows", "update", kept["id"], "--json", '{"description": "es"}', "--format", "json")
    assert json.loads(described.stdout) == sandbox.data.flows[kept["id"]]
    assert sandbox.data.flows[kept["id"]]["name"] == "Linea"
    deleted = await cli_run(workdir, "flows", "delete", gone["id"], "--yes")
    assert deleted.code == 0 and f"deleted flow {gone['id']}" in deleted.stdout and "call_flows" in deleted.stdout
    assert gone["id"] not in sandbox.data.flows

    bought = await cli_run(workdir, "numbers", "buy", "--type", "local", "--area-code", "415", "--display-name", "SF Office", "--format", "json")
    assert bought.code == 0, bought.stderr
    number = json.loads(bought.stdout)
    assert number == {key: sandbox.data.numbers[-1][key] for key in ("id", "phone_number", "type", "status")}
    assert number["phone_number"].startswith("+1415") and "tracking_numbers" in bought.stderr
    bought_table = await cli_run(workdir, "numbers", "buy", "--type", "vanity")
    assert bought_table.code == 0 and sandbox.data.numbers[-1]["id"] in bought_table.stdout
    assert "tracking_numbers" in bought_table.stdout

    assert (await cli_run(workdir, "sync", "--no-media")).code == 0
    with duckdb.connect(str(workdir / "callsync.duckdb"), read_only=True) as db:
        numbers = dict(db.execute("SELECT id, display_name FROM tracking_numbers WHERE deleted_at IS NULL").fetchall())
        flows = {row[0]: row[1:] for row in db.execute("SELECT id, name, deleted_at IS NOT NULL, raw->>'description' FROM call_flows").fetchall()}
    assert numbers[number["id"]] == "SF Office" and sandbox.data.numbers[-1]["id"] in numbers
    assert len(numbers) == len(sandbox.data.numbers)
    assert flows[kept["id"]] == ("Linea", False, "es")
    assert flows[gone["id"]][1] is True, "a flow deleted upstream is marked deleted"


async def test_dry_run_prints_the_request_and_sends_nothing(sandbox, workdir):
    flow_id = next(iter(sandbox.data.flows))
    plans = {
        ("numbers", "buy", "--type", "local", "--area-code", "212"): ("POST", "/api/call-tracking/numbers", {"type": "local", "area_code": "212"}),
        ("flows", "create", "--json", '{"name": "Maybe"}'): ("POST", "/api/call-tracking/flows", {"name": "Maybe"}),
        ("flows", "update", flow_id, "--json", '{"name": "Maybe"}'): ("PATCH", f"/api/call-tracking/flows/{flow_id}", {"name": "Maybe"}),
        ("flows", "delete", flow_id): ("DELETE", f"/api/call-tracking/flows/{flow_id}", None),  # no --yes needed
    }
    runs = await asyncio.gather(
        *(cli_run(workdir, *args, "--dry-run", "--format", "json") for args in plans),
        cli_run(workdir, "numbers", "buy", "--type", "toll_free", "--dry-run"),
    )
    for run, (method, path, body) in zip(runs, plans.values()):
        assert run.code == 0, run.stderr
        assert json.loads(run.stdout) == {"method": method, "path": path, "body": body, "url": sandbox.base_url + path}
    text = runs[-1]
    assert text.code == 0 and f"would send POST {sandbox.base_url}/api/call-tracking/numbers" in text.stdout
    assert '"type": "toll_free"' in text.stdout and "nothing was sent" in text.stdout
    assert not any("sandbox-token" in run.stdout + run.stderr for run in runs)
    assert sandbox.requests == [], "a dry run sends nothing"


async def test_a_token_without_calls_write_exits_3_naming_the_scope(sandbox, workdir):
    flow_id = next(iter(sandbox.data.flows))
    buy, delete, listing = await asyncio.gather(
        cli_run(workdir, "numbers", "buy", "--type", "local", token="sandbox-readonly"),
        cli_run(workdir, "flows", "delete", flow_id, "--yes", token="sandbox-readonly"),
        cli_run(workdir, "numbers", "list", token="sandbox-readonly"),
    )
    for result in (buy, delete):
        assert result.code == 3 and "calls:write" in one_line_error(result)
    assert listing.code == 0, "reading needs calls:read only"


async def test_bad_input_exits_2_before_any_request(sandbox, workdir):
    runs = await asyncio.gather(
        cli_run(workdir, "flows", "create", "--json", '{"name": '),
        cli_run(workdir, "flows", "update", "flow_x", "--file", "-", input=b'  ["a list"]'),
        cli_run(workdir, "numbers", "buy", "--type", "satellite"),
        cli_run(workdir, "numbers", "buy", "--type", "local", "--area-code", "41"),
        cli_run(workdir, "numbers", "buy", "--type", "local", "--area-code", "４１５"),  # fullwidth digits
        cli_run(workdir, "numbers", "buy", "--type", "local", "--area-code", "٤١٥", "--dry-run"),  # Arabic-Indic
    )
    expected = [
        ["--json", "not valid JSON", "line 1, column 10"],
        ["--file - (standard input)", "expected a JSON object", "an array", "line 1, column 3"],
        ["--type 'satellite'", "local, toll_free, vanity"],
        ["--area-code '41'", "three digits"],
        ["--area-code '４１５'", "three digits"],
        ["--area-code '٤١٥'", "three digits"],
    ]
    assert_refused(runs, expected, sandbox)


async def test_hostile_json_input_exits_2_in_one_line_and_sends_nothing(sandbox, workdir):
    (workdir / "deep.json").write_text("[" * 100_000)
    (workdir / "deepobj.json").write_text('{"a": ' * 101 + "1" + "}" * 101)
    (workdir / "bigint.json").write_text('{"n": ' + "9" * 5000 + "}")
    runs = await asyncio.gather(
        cli_run(workdir, "flows", "create", "--file", "deep.json", "--dry-run"),
        cli_run(workdir, "flows", "create", "--file", "deepobj.json"),
        cli_run(workdir, "flows", "update", "flow_x", "--file", "-", input=b'{"a": ' + b"[" * 100_000),
        cli_run(workdir, "flows", "create", "--file", "bigint.json", "--dry-run", "--format", "json"),
        cli_run(workdir, "flows", "create", "--json", '{"n": -' + "1" * 4301 + "}"),
    )
    expected = [
        ["--file deep.json", "nested too deeply", "at most 100 levels"],
        ["--file deepobj.json", "nested too deeply"],
        ["--file - (standard input)", "nested too deeply"],
        ["--file bigint.json", "an integer of 5000 digits", "at most 4300"],
        ["--json", "an integer of 4301 digits"],
    ]
    assert_refused(runs, expected, sandbox, printing_nothing=True)
    nested = '{"a": ' * 99 + '["ok"]' + "}" * 99  # 100 levels: accepted
    assert account.read_json_input(None, nested, io.BytesIO(b""))["a"]["a"]


async def test_text_that_is_not_utf8_exits_2_and_nothing_is_sent(sandbox, workdir):
    flow_id = next(iter(sandbox.data.flows))
    (workdir / "latin1.json").write_bytes(b'{\n  "name": "Caf\xe9"}')
    not_utf8 = "SF\udcff"  # how Python holds the byte 0xff of argv; the child gets the byte itself
    runs = await asyncio.gather(
        cli_run(workdir, "flows", "create", "--file", "-", input=b'{"name":"a\xffb"}'),
        cli_run(workdir, "flows", "update", flow_id, "--file", "latin1.json"),
        cli_run(workdir, "flows", "create", "--json", '{"name": "%s"}' % not_utf8),
        cli_run(workdir, "flows", "create", "--json", '{"name": "a\\ud800b"}'),
        cli_run(workdir, "flows", "create", "--json", '{"\\udfff": 1, "name": "x"}', "--dry-run"),
        cli_run(workdir, "numbers", "buy", "--type", "local", "--display-name", not_utf8),
        cli_run(workdir, "numbers", "buy", "--type", "local", "--display-name", not_utf8, "--dry-run", "--format", "json"),
        cli_run(workdir, "flows", "delete", "flow_" + not_utf8, "--yes"),
        cli_run(workdir, "flows", "update", "flow_" + not_utf8, "--json", "{}", "--dry-run", "--format", "json"),
    )
    expected = [
        ["--file - (standard input)", "not UTF-8 text at line 1, column 11", "0xff"],
        ["--file latin1.json", "not UTF-8 text at line 2, column 15", "0xe9"],
        ["--json", "not UTF-8 text", "byte 0xff"],
        ["--json", "lone surrogate", "\\ud800"],
        ["--json", "lone surrogate", "\\udfff"],
        ["--display-name", "not UTF-8 text", "byte 0xff at character 3"],
        ["--display-name", "not UTF-8 text"],
        ["FLOW_ID", "not UTF-8 text"],
        ["FLOW_ID", "not UTF-8 text"],
    ]
    assert_refused(runs, expected, sandbox, printing_nothing=True)
    assert not [n for n in sandbox.data.numbers if (n.get("display_name") or "").startswith("SF")]

    plan = await cli_run(workdir, "flows", "create", "--json", '{"name": "Línea ☎ \\u00e9"}', "--dry-run", "--format", "json")
    assert plan.code == 0 and json.loads(plan.stdout)["body"] == {"name": "Línea ☎ é"}, "valid JSON, valid UTF-8"


async def test_nan_and_infinity_are_refused_with_exit_2(sandbox, workdir):
    runs = await asyncio.gather(
        cli_run(workdir, "flows", "create", "--json", '{"name": "n", "x": NaN}', "--format", "json"),
        cli_run(workdir, "flows", "create", "--file", "-", input=b'{"name": "n", "x": [-Infinity]}'),
        cli_run(workdir, "flows", "update", "flow_x", "--json", '{"x": Infinity}', "--dry-run", "--format", "json"),
        cli_run(workdir, "flows", "create", "--json", '{"name": "n", "x": 1e999}'),
    )
    expected = [["--json", "NaN is not JSON"], ["standard input", "-Infinity is not JSON"],
                ["--json", "Infinity is not JSON"], ["--json", "1e999", "too large"]]
    assert_refused(runs, expected, sandbox)
    assert account.read_json_input(None, '{"x": 1.5e300, "y": "NaN"}', io.BytesIO(b"")) == {"x": 1.5e300, "y": "NaN"}


async def test_json_input_over_4_mb_is_refused_without_reading_it_all(sandbox, workdir):
    limit = 4 * 1024 * 1024  # account.MAX_JSON_INPUT_BYTES
    (workdir / "big.json").write_bytes(b'{"name": "x", "pad": "' + b"a" * limit + b'"}')
    (workdir / "fits.json").write_bytes(b'{"name": "x", "pad": "' + b"a" * (limit - 30) + b'"}')
    with open(workdir / "huge.json", "wb") as huge:  # 200 MB, sparse: only what is read costs memory
        huge.truncate(200 * 1024 * 1024)
    runs = await asyncio.gather(
        cli_run(workdir, "flows", "create", "--file", "big.json", "--dry-run"),
        cli_run(workdir, "flows", "create", "--file", "huge.json", "--dry-run"),
        cli_run(workdir, "flows", "update", "flow_x", "--file", "-", input=(workdir / "big.json").read_bytes()),
        cli_run(workdir, "flows", "create", "--file", "fits.json", "--dry-run", "--format", "json"),
    )
    for run, source in zip(runs[:3], ("--file big.json", "--file huge.json", "--file - (standard input)")):
        assert run.code == 2, run.stderr
        line = one_line_error(run)
        assert source in line and "more than 4 MB of JSON" in line, line
    assert runs[3].code == 0 and len(json.loads(runs[3].stdout)["body"]["pad"]) == limit - 30
    assert sandbox.requests == []


def test_json_input_errors_name_the_input_and_the_position(tmp_path):
    (tmp_path / "bad.json").write_text('{\n  "name": "x",\n  "steps": [1, 2,]\n}\n')
    cases = [
        (dict(file=str(tmp_path / "bad.json"), text=None), ["bad.json", "line 3, column 18"]),
        (dict(file=str(tmp_path / "missing.json"), text=None), ["missing.json", "cannot read"]),
        (dict(file=None, text='\n\n   "text"'), ["--json", "a string", "line 3, column 4"]),
        (dict(file=None, text="[]"), ["--json", "an array", "line 1, column 1"]),
        (dict(file=None, text=""), ["--json", "not valid JSON", "line 1, column 1"]),
        (dict(file="x.json", text="{}"), ["exactly one of"]),
        (dict(file=None, text=None), ["exactly one of"]),
    ]
    for given, fragments in cases:
        with pytest.raises(UsageError) as caught:
            account.read_json_input(given["file"], given["text"], io.BytesIO(b""))
        assert all(fragment in str(caught.value) for fragment in fragments), str(caught.value)
    assert account.read_json_input("-", None, io.BytesIO(b'{"a": [1]}')) == {"a": [1]}


async def test_an_unknown_flow_exits_1_naming_it(sandbox, workdir):
    runs = await asyncio.gather(
        cli_run(workdir, "flows", "show", "flow_nope00"),
        cli_run(workdir, "flows", "update", "flow_nope00", "--json", '{"name": "x"}'),
        cli_run(workdir, "flows", "delete", "flow_nope00", "--yes"),
    )
    for run in runs:
        assert run.code == 1 and "flow flow_nope00 not found" in one_line_error(run)


async def test_the_apis_4xx_message_is_shown_with_exit_1(sandbox, workdir):
    in_use = sandbox.data.numbers[0]["call_flow_id"]
    refused, nameless = await asyncio.gather(
        cli_run(workdir, "flows", "delete", in_use, "--yes"),
        cli_run(workdir, "flows", "create", "--json", '{"steps": []}'),
    )
    assert refused.code == 1 and "409" in one_line_error(refused) and f"flow {in_use} is in use by" in refused.stderr
    assert in_use in sandbox.data.flows
    assert nameless.code == 1 and "400" in one_line_error(nameless) and "name is required" in nameless.stderr


@pytest.mark.parametrize("first_answer, gone", [
    ("drop", True),  # deleted, then the connection drops before the 204 leaves (aiohttp resends it itself)
    ("hold", True),  # deleted, then the 204 is held past [api] timeout_s
    ("503", True),  # a 5xx: it may have acted
    ("429", False),  # the API said it did not act: the retry's 404 means not found
    ("404", False),  # a 404 to the first attempt: not found
])
async def test_a_delete_whose_retry_finds_the_flow_gone_succeeds(tmp_path, first_answer, gone):
    attempts: list[str] = []
    never = asyncio.Event()

    async def delete(request: web.Request) -> web.StreamResponse:
        attempts.append(request.match_info["flow_id"])
        if len(attempts) > 1 or first_answer == "404":
            return web.json_response({"error": "not_found", "message": "flow not found"}, status=404)
        if first_answer == "drop":
            request.transport.abort()
            raise asyncio.CancelledError()
        if first_answer == "hold":
            await never.wait()
        return web.json_response({"error": "x"}, status=int(first_answer), headers={"Retry-After": "0"})

    app = web.Application()
    app.router.add_delete("/api/call-tracking/flows/{flow_id}", delete)
    async with serve_app(app) as base_url:
        write_config(tmp_path, base_url, api={"timeout_s": 0.5})
        runs, sent = [], []
        for extra in ((), ("--format", "json")):
            attempts.clear()
            runs.append(await cli_run(tmp_path, "flows", "delete", "flow_a1", "--yes", *extra))
            sent.append(len(attempts))
        never.set()
    table, as_json = runs
    assert sent == [1, 1] if first_answer == "404" else sent == [2, 2], "sent once, retried once on its failure"
    if not gone:
        for run in (table, as_json):
            assert run.code == 1 and "flow flow_a1 not found" in one_line_error(run)
        return
    assert table.code == 0, table.stderr
    assert "flow flow_a1 was already gone when the DELETE was retried" in table.stdout
    assert as_json.code == 0 and as_json.stdout == "", as_json.stderr
    assert "already gone when the DELETE was retried" in as_json.stderr and "Traceback" not in as_json.stderr


async def run_on_terminal(workdir, *args: str, answer: bytes):
    """The CLI with a pseudo-terminal as standard input, the person's answer already typed."""
    controller, terminal = pty.openpty()
    try:
        process = await start_cli(*args, cwd=workdir, stdin=terminal)
        os.close(terminal)
        terminal = None
        os.write(controller, answer)
        stdout, stderr = await process.communicate()
    finally:
        if terminal is not None:
            os.close(terminal)
        os.close(controller)
    return process.returncode, stdout.decode(), stderr.decode()


async def test_delete_asks_on_a_terminal_and_refuses_without_one(sandbox, workdir):
    created = await cli_run(workdir, "flows", "create", "--json", '{"name": "Short lived"}', "--format", "json")
    flow_id = json.loads(created.stdout)["id"]

    refused = await cli_run(workdir, "flows", "delete", flow_id)
    assert refused.code == 2 and "--yes" in one_line_error(refused) and "not a terminal" in refused.stderr

    code, _stdout, stderr = await run_on_terminal(workdir, "flows", "delete", flow_id, answer=b"n\n")
    assert code == 1 and f"Delete call flow {flow_id}?" in stderr and "not deleted" in stderr
    assert flow_id in sandbox.data.flows
    assert not [r for r in sandbox.requests if r.method == "DELETE"], "nothing sent until confirmed"

    code, stdout, stderr = await run_on_terminal(workdir, "flows", "delete", flow_id, "--format", "json", answer=b"y\n")
    assert code == 0 and f"Delete call flow {flow_id}?" in stderr and stdout.strip() == "", "no body, as the API"
    assert flow_id not in sandbox.data.flows


async def test_a_purchase_dropped_after_the_server_acted_is_sent_once_and_reported_uncertain(sandbox, workdir):
    sandbox.faults.drop_after_post_rate = 1.0
    result = await cli_run(workdir, "numbers", "buy", "--type", "local", "--display-name", "Paid once", "--format", "json")
    assert result.code == 4, "its own exit code: look before trying again"
    line = one_line_error(result)
    assert "may or may not have taken effect" in line and "not sent again" in line and "listed" in line
    assert changes_sent(sandbox) == [("POST", "/api/call-tracking/numbers", 0)], "sent once, never again"
    listing = json.loads(result.stdout)
    assert listing == sandbox.data.numbers and listing[-1]["display_name"] == "Paid once"

    flows = await cli_run(workdir, "flows", "create", "--json", '{"name": "Made once"}')
    assert flows.code == 4 and "may or may not have taken effect" in one_line_error(flows)
    assert "Made once" in flows.stdout and "flows)" in flows.stdout, "the flows, as a table"
    assert [r.status for r in sandbox.requests if r.method == "POST" and r.path.endswith("/flows")] == [0]


async def wait_for_request(sandbox, method: str, process) -> None:
    """Wait on the sandbox's request log, not on the clock."""
    while not any(r.method == method for r in sandbox.requests):
        assert process.returncode is None, "the command ended before its request arrived"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_during_a_purchase_says_it_may_have_taken_effect(sandbox, workdir, signal_number):
    sandbox.faults.latency_ms = 60_000  # the purchase is made on arrival; its answer is held
    process = await start_cli("numbers", "buy", "--type", "toll_free", "--format", "json", cwd=workdir,
                              stdin=asyncio.subprocess.DEVNULL)
    await wait_for_request(sandbox, "POST", process)
    sandbox.faults.latency_ms = 0  # the listing that follows is answered at once
    process.send_signal(signal_number)
    stdout, stderr = await process.communicate()
    result = CliResult(process.returncode, stdout.decode(), stderr.decode())
    assert result.code == 128 + signal_number, result.stderr
    line = one_line_error(result)
    name = signal.Signals(signal_number).name
    assert f"interrupted by {name} while the request was in flight" in line
    assert "may or may not have taken effect" in line and "listed on standard output" in line
    assert [r.method for r in sandbox.requests if r.method == "POST"] == ["POST"], "sent once"
    assert json.loads(result.stdout) == sandbox.data.numbers and sandbox.data.numbers[-1]["type"] == "toll_free"


async def test_a_signal_during_a_flow_change_says_it_may_have_taken_effect(sandbox, workdir):
    flow_id = next(iter(sandbox.data.flows))
    sandbox.faults.latency_ms = 60_000
    process = await start_cli("flows", "update", flow_id, "--json", '{"name": "x"}', cwd=workdir,
                              stdin=asyncio.subprocess.DEVNULL)
    await wait_for_request(sandbox, "PATCH", process)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = await process.communicate()
    result = CliResult(process.returncode, stdout.decode(), stderr.decode())
    assert result.code == 143 and "may or may not have taken effect" in one_line_error(result)
    assert f"flows show {flow_id}" in result.stderr and result.stdout == ""
