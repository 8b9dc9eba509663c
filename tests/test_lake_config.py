"""[database] keys of the lake backend (#18, in progress): validated now, refused until it lands."""

from __future__ import annotations

import re

import pytest

from pipeline.config import load_settings
from pipeline.errors import ConfigError
from tests.conftest import REPO, run_cli

LAKE = '[database]\nlake_catalog = "postgres:dbname=lake host=db.internal user=callsync"\n'
DATA = 'lake_data_path = "s3://acme-lake/callsync/"\n'


@pytest.mark.parametrize(
    "toml, fragments",
    [
        (LAKE + 'path = "callsync.duckdb"\n' + DATA, ["[database] path and lake_catalog", "not both"]),
        (LAKE + DATA + 'schema = "Brand-A"\n', ["[database] schema", "lower-case letters"]),
        (LAKE + DATA + 'schema = "a; DROP SCHEMA main"\n', ["[database] schema"]),
        (LAKE, ["[database] lake_data_path", "required with lake_catalog"]),
        ('[database]\nlake_catalog = "dbname=lake"\n' + DATA, ["[database] lake_catalog", "'postgres:'"]),
        ('[database]\nschema = "brand_a"\n', ["[database] schema", "only used with lake_catalog"]),
        ('[database]\nlake_data_path = "/srv/lake"\n', ["[database] lake_data_path", "only used with lake_catalog"]),
        ('[database]\nschem = "brand_a"\n', ["[database] schem", "did you mean schema?"]),
    ],
)
def test_lake_keys_are_validated(tmp_path, toml, fragments):
    path = tmp_path / "callsync.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    for fragment in fragments:
        assert fragment in str(raised.value)


@pytest.mark.parametrize(
    "catalog",
    [
        "postgres:dbname=lake host=db user=callsync password=hunter2",
        "postgres:dbname=lake PASSWORD = hunter2",
        "postgres:postgresql://callsync:hunter2@db.internal/lake",
    ],
)
def test_a_catalog_password_is_refused_and_never_repeated(tmp_path, catalog):
    path = tmp_path / "callsync.toml"
    path.write_text(f'[database]\nlake_catalog = "{catalog}"\n{DATA}')
    with pytest.raises(ConfigError, match="PGPASSWORD or ~/.pgpass") as raised:
        load_settings(path)
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize("command", [["sync"], ["backfill", "--start", "2026-01-01", "--end", "2026-01-02"], ["query", "daily_calls"], ["status"]])
async def test_a_lake_config_exits_2_until_the_lake_backend_lands(tmp_path, command):
    (tmp_path / "callsync.toml").write_text(LAKE + DATA + 'schema = "brand_a"\n')
    result = await run_cli(*command, cwd=tmp_path)
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "[database] lake_catalog: the lake backend is not available in this version yet" in lines[0]
    assert not list(tmp_path.glob("*.duckdb")), "nothing may be written"


def test_the_example_configs_lake_keys_uncommented_are_refused_until_the_backend_lands(tmp_path):
    text = (REPO / "config.example.toml").read_text()
    lake = re.sub(r"(?m)^# ?((lake_[a-z_]+|schema) = )", r"\1", text)
    lake = re.sub(r"(?m)^path = ", "# path = ", lake)
    (tmp_path / "callsync.toml").write_text(lake)
    with pytest.raises(ConfigError, match="the lake backend is not available in this version yet"):
        load_settings(tmp_path / "callsync.toml")
