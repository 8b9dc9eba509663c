"""[database] keys of the lake backend (#18): validated before anything connects."""

from __future__ import annotations

import re

import pytest

from pipeline.config import load_settings
from pipeline.errors import ConfigError
from pipeline.lake import LakeStore
from tests.conftest import REPO

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
        "postgres:postgresql://callsync@127.0.0.1:1/lake?password=hunter2&sslmode=disable",
        "postgres:postgres://db.internal/lake?sslmode=require&PassWord=hunter2",
        "postgres:postgresql://db.internal/lake?pass%77ord=hunter2",
        "postgres:dbname=lake sslcert=c.pem sslkey=k.pem sslpassword=hunter2",
        "postgres:postgresql://db.internal/lake?sslpassword=hunter2",
    ],
)
def test_a_catalog_password_is_refused_and_never_repeated(tmp_path, catalog):
    path = tmp_path / "callsync.toml"
    path.write_text(f'[database]\nlake_catalog = "{catalog}"\n{DATA}')
    with pytest.raises(ConfigError, match="PGPASSWORD or ~/.pgpass") as raised:
        load_settings(path)
    assert "hunter2" not in str(raised.value)


def test_the_example_configs_lake_keys_uncommented_name_a_lake_store(tmp_path):
    text = (REPO / "config.example.toml").read_text()
    lake = re.sub(r"(?m)^# ?((lake_[a-z_0-9]+|schema) = )", r"\1", text)
    lake = re.sub(r"(?m)^path = ", "# path = ", lake)
    (tmp_path / "callsync.toml").write_text(lake)
    store = load_settings(tmp_path / "callsync.toml").database.store()
    assert isinstance(store, LakeStore)
    assert (store.catalog, store.data_path, store.schema) == (
        "postgres:dbname=lake host=db.internal user=callsync", "s3://acme-lake/callsync/", "main"
    )
    assert store.s3_endpoint == "http://minio.internal:9000"
    assert (store.keep_snapshots_days, store.lease_s, store.orphans_after_s) == (7, 120, 3600)
    assert store.extensions == ("ducklake", "postgres_scanner", "httpfs", "aws")


def test_a_local_data_path_and_a_sqlite_catalog_are_relative_to_the_config(tmp_path):
    (tmp_path / "callsync.toml").write_text('[database]\nlake_catalog = "sqlite:meta.sqlite"\nlake_data_path = "lake"\n')
    store = load_settings(tmp_path / "callsync.toml").database.store()
    assert store.catalog == f"sqlite:{tmp_path / 'meta.sqlite'}"
    assert store.data_path == f"{tmp_path / 'lake'}/"


def test_a_bad_s3_endpoint_is_refused(tmp_path):
    (tmp_path / "callsync.toml").write_text(LAKE + DATA + 'lake_s3_endpoint = "minio:9000"\n')
    with pytest.raises(ConfigError, match=r"\[database\] lake_s3_endpoint: .*http://host:port"):
        load_settings(tmp_path / "callsync.toml")
