"""A PostgreSQL cluster of its own in a temp dir, on a free loopback port: the lake's catalog for
the lake tests (tests/lake/conftest.py) and the lake bench (bench/lake.py).

Uses the server binaries `pg_config --bindir` names (Debian's postgresql package; .ci/run installs
it where missing). postgres refuses to run as root: as root, the cluster belongs to a system user
of its own, created once.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

PG_USER_NAME = "callsync-pg"
PG_SUPERUSER = "callsync"
PG_PASSWORD = "lake-test-password"  # a throwaway cluster's; handed to libpq only through PGPASSWORD


class ClusterError(RuntimeError):
    """The cluster could not be set up: the message says what is missing."""


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bindir() -> Path:
    found = shutil.which("pg_config")
    if found is None:
        raise ClusterError("pg_config not found: install Debian's postgresql package (.ci/run does)")
    bindir = Path(subprocess.run([found, "--bindir"], check=True, capture_output=True, text=True).stdout.strip())
    if not (bindir / "initdb").is_file():
        raise ClusterError(f"{bindir}/initdb not found: install Debian's postgresql server package (.ci/run does)")
    return bindir


def _cluster_owner() -> str | None:
    """None: run postgres as ourselves. As root: a dedicated system user, created once."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_USER_NAME)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER_NAME],
            check=True,
        )
    return PG_USER_NAME


@dataclass
class PostgresCluster:
    bindir: Path
    datadir: Path
    port: int
    owner: str | None
    _names = itertools.count(1)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        """A server binary run as the cluster's owner, output captured."""
        done = subprocess.run(args, user=self.owner, capture_output=True, text=True, cwd=self.datadir.parent)
        if done.returncode != 0:
            raise ClusterError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def create_database(self) -> str:
        name = f"lake_{next(self._names)}"
        env = {**os.environ, "PGPASSWORD": PG_PASSWORD}
        subprocess.run(
            [str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_SUPERUSER, name],
            check=True, env=env, capture_output=True,
        )
        return name

    def catalog(self, database: str) -> str:
        """DuckLake's catalog string for one database: ``postgres:<libpq conninfo>``, no password
        (libpq reads PGPASSWORD from the environment, as a real deployment's would, or ~/.pgpass)."""
        return f"postgres:dbname={database} host=127.0.0.1 port={self.port} user={PG_SUPERUSER}"


@contextmanager
def running_postgres(*, fsync: bool = False) -> Iterator[PostgresCluster]:
    """A cluster with password auth, started for the block and removed after it."""
    bindir = _pg_bindir()
    owner = _cluster_owner()
    root = Path(tempfile.mkdtemp(prefix="callsync-pg-"))
    datadir = root / "data"
    pwfile = root / "pwfile"
    pwfile.write_text(PG_PASSWORD + "\n")
    if owner is not None:
        shutil.chown(root, owner)
        shutil.chown(pwfile, owner)
    cluster = PostgresCluster(bindir=bindir, datadir=datadir, port=0, owner=owner)
    try:
        cluster.run(
            str(bindir / "initdb"), "-D", str(datadir), "-U", PG_SUPERUSER, f"--pwfile={pwfile}",
            "--auth=scram-sha-256", "--encoding=UTF8", "--no-sync",
        )
        for _ in range(3):  # a free port can be taken by someone else before postgres binds it
            cluster.port = _free_loopback_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={cluster.port} "
                f"-c unix_socket_directories='{root}' -c fsync={'on' if fsync else 'off'}"
            )
            pg_ctl = [str(bindir / "pg_ctl"), "-D", str(datadir), "-o", options, "-l", str(root / "log"), "-w", "start"]
            if subprocess.run(pg_ctl, user=owner, capture_output=True, cwd=root).returncode == 0:
                break
        else:
            raise ClusterError(f"postgres did not start: {(root / 'log').read_text()[-2000:]}")
        yield cluster
    finally:
        subprocess.run([str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "fast", "-w", "stop"],
                       user=owner, capture_output=True, cwd=root)
        shutil.rmtree(root, ignore_errors=True)
