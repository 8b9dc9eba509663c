"""HTTPS: the client verifies every host's certificate against the CAs it is given,
never against nothing (see pipeline.tls). The sandbox serves over TLS with a
certificate from the tests' own authority (trustme); the CLI runs in a subprocess."""

from __future__ import annotations

import ssl
from datetime import timedelta

import duckdb
import pytest
import trustme

from pipeline.sandbox import SandboxData, run_sandbox
from tests.conftest import TOKEN, run_cli, write_config


@pytest.fixture
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_a_run_over_https_trusts_the_authority_ssl_cert_file_names(tmp_path, authority, server_tls):
    data = SandboxData.generate(seed=3, calls=200, days=3)
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    async with run_sandbox(data=data, tls=server_tls) as sandbox:
        assert sandbox.base_url.startswith("https://") and sandbox.storage_url.startswith("https://")
        write_config(tmp_path, sandbox.base_url, media={"dir": "media", "allow_private_addresses": True})
        start = (data.today - timedelta(days=2)).isoformat()
        result = await run_cli("backfill", "--start", start, "--end", data.today.isoformat(), cwd=tmp_path,
                               env={"SSL_CERT_FILE": str(tmp_path / "ca.pem")})
    assert result.code == 0, result.stderr
    with duckdb.connect(str(tmp_path / "callsync.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == len(data.calls_between(data.today - timedelta(days=2), data.today))
        recordings = conn.execute("SELECT count(*) FROM recordings").fetchone()[0]
    assert recordings > 0  # the storage host's downloads went over verified TLS too


async def test_a_certificate_no_trusted_authority_signed_stops_the_run_in_one_line(tmp_path, server_tls):
    stranger = trustme.CA()  # SSL_CERT_FILE names an authority that did not sign the sandbox's certificate
    stranger.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    data = SandboxData.generate(seed=3, calls=50, days=2)
    async with run_sandbox(data=data, tls=server_tls) as sandbox:
        write_config(tmp_path, sandbox.base_url)
        result = await run_cli("backfill", "--start", data.today.isoformat(), "--end", data.today.isoformat(),
                               "--no-media", cwd=tmp_path, env={"SSL_CERT_FILE": str(tmp_path / "other-ca.pem")})
        assert not any(record.path.endswith("/calls") for record in sandbox.requests)  # nothing was sent
    assert result.code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("callsync: error:")]
    assert len(errors) == 1 and "TLS certificate not trusted" in errors[0] and "SSL_CERT_FILE" in errors[0]
    assert "Traceback" not in result.stderr and TOKEN not in result.stderr + result.stdout
    assert "retry" not in result.stderr.lower()
