"""Where callsync's data lives: the one seam a storage backend enters through.

A run talks to a ``Store``: ``lock()`` (one run at a time), ``open()`` (the
read-write connection the run holds from start to end), ``transaction(conn)``
and ``publish(conn)`` (make what is committed visible to analysts). Readers
(``callsync query``, ``status``) use ``read_only()``. The SQL in sql/ is the same
whatever the store: ``FileStore`` here, ``pipeline.lake.LakeStore`` for a DuckLake.

``FileStore`` is one DuckDB file. ``[database] path`` is what analysts,
dashboards and `callsync query` open: a symlink to the newest *published
snapshot*. callsync never opens it. It writes to a working database of its own,
in a hidden folder beside it (``.callsync/<name>``), that no one else opens, so no
analyst session, read-only or read-write, can make a run wait, and a run never
makes them wait. To publish, the writer checkpoints the working database and
copies it to a new snapshot file in that folder (reflink, else copy_file_range,
else a plain copy), syncs it, and renames a fresh symlink over ``path``: a reader
sees the old snapshot or the new one, never a torn one, and a session already
open keeps reading the snapshot it opened (its file is unlinked, not changed).

Why a symlink and not the snapshot itself renamed over ``path``: DuckDB replays a
write-ahead log named after the file it opened, and a byte copy keeps the working
database's identity, so a log an analyst's read-write session wrote beside an
older snapshot would be replayed onto a newer one (DuckDB checks only the
checkpoint iteration, which an analyst's own checkpoints can reach). DuckDB
resolves the symlink and names the log after the snapshot's own file, so each
snapshot has a log name of its own and never sees another's.

Imports nothing heavier than duckdb: the read-only commands start fast.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Protocol

import duckdb

from pipeline.errors import (
    CallsyncError,
    ConfigError,
    DatabaseLockedError,
    DatabaseMemoryError,
    DiskError,
    command_hint,
    first_line,
)
from pipeline.sqlfiles import MIGRATIONS_TABLE, run_sql

WORKING_DIR = ".callsync"
PUBLISH_PREFIX = ".callsync-publish-"  # the new symlink, in path's folder, before its rename
SNAPSHOT_INFIX = ".snapshot-"
REWRITE_SUFFIX = ".rewrite-tmp"  # the working database's rewrite, before its rename  # .callsync/<name>.snapshot-<hex time>
FICLONE = 0x40049409  # linux/fs.h: share the source's extents (btrfs, xfs, ...)
_COPY_CHUNK = 1 << 30
log_ = logging.getLogger("callsync.store")


@dataclass(frozen=True)
class Published:
    """What one publish did: the snapshot's size, how long it took, how it was copied."""

    path: Path | str
    bytes: int
    seconds: float
    method: str  # reflink, copy_file_range, copy, rewrite; a lake's: commit, purge


class Store(Protocol):
    path: Path | str  # what messages call it
    renews_connections: bool  # whether the writer reopens its connection after a checkpoint

    def lock(self) -> ContextManager[object]: ...

    def check_lock(self) -> None:
        """Raise if this run may no longer write (a lake's lease was lost)."""

    def open(self) -> duckdb.DuckDBPyConnection: ...

    def transaction(self, conn: duckdb.DuckDBPyConnection) -> ContextManager[None]: ...

    def checkpoint(self, conn: duckdb.DuckDBPyConnection) -> None: ...

    def is_published(self) -> bool: ...

    def exists(self) -> bool:
        """Whether a run has made the database, published or not."""

    def publish(self, conn: duckdb.DuckDBPyConnection, *, rewrite: bool = False) -> Published: ...

    def rewrite(self, then: Callable[[duckdb.DuckDBPyConnection], None]) -> None:
        """After an erasure, with no connection open: no byte of erased rows is left;
        ``then(conn)`` runs on the result, in its transaction."""

    def upkeep_due(self, conn: duckdb.DuckDBPyConnection) -> bool:
        """Whether ``after_run`` has work (asked on the run's own connection, before it closes)."""

    def after_run(self) -> dict[str, Any] | None:
        """Upkeep once a run's writer has closed, under the lock (a lake compacts)."""

    def compact(self, conn: duckdb.DuckDBPyConnection) -> dict[str, Any]: ...

    def read_only(self) -> ContextManager[duckdb.DuckDBPyConnection]: ...

    def is_locked(self) -> bool: ...

    def describe(self, conn: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        """For `callsync status`: where the data is and how fresh."""


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    conn.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class FileStore:
    """A DuckDB working file that callsync alone opens, published as ``path``."""

    renews_connections = True  # see load.Writer: a connection held for a whole run grew with the table

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.working = self.path.parent / WORKING_DIR / self.path.name

    def lock(self) -> ContextManager[object]:
        from pipeline.state import RunLock

        return RunLock(self.path)

    def check_lock(self) -> None:
        """The lock file's flock lasts as long as the process: nothing to check."""

    def is_locked(self) -> bool:
        return not lock_is_free(self.path)

    def transaction(self, conn: duckdb.DuckDBPyConnection) -> ContextManager[None]:
        return transaction(conn)

    def checkpoint(self, conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute("CHECKPOINT")

    def is_published(self) -> bool:
        return self.path.exists()

    def exists(self) -> bool:
        return self.working.exists() or self.is_published()

    def upkeep_due(self, conn: duckdb.DuckDBPyConnection) -> bool:
        return False

    def after_run(self) -> None:
        return None

    def rewrite(self, then: Callable[[duckdb.DuckDBPyConnection], None]) -> None:
        """COPY FROM DATABASE into a temp file beside the working database, flushed, renamed over
        it, and published. The copy holds no freed block, so no byte of erased rows; the snapshot
        published from it neither, and the publish deletes the older snapshots."""
        temp = self.working.with_name(self.working.name + REWRITE_SUFFIX)
        _remove(temp)
        conn = self.open()
        try:
            _copy_database_into(conn, temp, then)
        except duckdb.Error as exc:
            _remove(temp)
            raise DiskError(f"{self.working}: could not rewrite the database: {first_line(exc)}") from None
        finally:
            conn.close()
        try:
            _fsync_file(temp)
            os.replace(temp, self.working)
            _fsync_dir(self.working.parent)
        except OSError as exc:
            _remove(temp)
            raise DiskError(f"{self.working}: could not rewrite the database: {exc.strerror}") from None
        conn = self.open()
        try:
            self._publish(conn, rewrite=False, keep_previous=False)
        finally:
            conn.close()

    def compact(self, conn: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        return {"note": "a DuckDB file needs no compaction (compact is for a lake)"}

    def describe(self, conn: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        """When the snapshot was published, how far the working database is ahead, sizes."""
        sizes = self.sizes()
        published, changed = sizes["published_at"], sizes["working_changed_at"]
        behind = max(0.0, changed - published) if published is not None and changed is not None else None
        return {
            "snapshot": {
                "published_at": _utc(published),
                "published_bytes": sizes["published_bytes"],
                "previous_bytes": sizes["previous_bytes"],
                "working": sizes["working"],
                "working_bytes": sizes["working_bytes"],
                "working_changed_at": _utc(changed),
                "behind_s": behind,
                "run_going": self.is_locked(),
                "free_bytes": sizes["free_bytes"],
            }
        }

    def open(self) -> duckdb.DuckDBPyConnection:
        """The working database, read-write; call under ``lock()``. Removes what a killed
        publish left, and on the first run takes over a ``path`` an older callsync wrote."""
        try:
            self.working.parent.mkdir(parents=True, exist_ok=True)
            self.remove_stale_files()
            if not self.working.exists() and self.path.exists():
                self._take_over()
        except OSError as exc:
            raise DiskError(f"{self.working.parent}: cannot prepare the working database: {exc.strerror}") from None
        try:
            return duckdb.connect(str(self.working))
        except duckdb.Error as exc:
            raise DiskError(f"{self.working}: {first_line(exc)}") from None

    @contextmanager
    def session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Lock, open, and publish when done: for short writes outside a run (demo, tests)."""
        with self.lock():
            conn = self.open()
            try:
                yield conn
                self.publish(conn)
            finally:
                conn.close()

    def _take_over(self) -> None:
        """A path from before snapshots was callsync's own database: copy it, with the log of
        commits a killed run had not checkpointed yet, to become the working database.
        DuckDB names that log after the file it resolves, so for a path that is the user's
        symlink the log is beside its target. A snapshot of ours (the working database
        was lost) comes without its log: that one would be an analyst's session's."""
        source = Path(os.path.realpath(self.path))
        ours = source.parent == Path(os.path.realpath(self.working.parent))
        if not ours:
            _refuse_foreign(self.path)
        log = Path(f"{source}.wal")
        staged = self.working.with_name(self.working.name + ".takeover")
        _remove(Path(f"{self.working}.wal"))
        if log.exists() and not ours:
            _copy_durably(log, Path(f"{staged}.wal"))
            os.replace(f"{staged}.wal", f"{self.working}.wal")
        _copy_durably(source, staged)
        os.replace(staged, self.working)
        _fsync_dir(self.working.parent)
        if source != self.path.absolute():
            log_.warning(
                "%s: took over %s, which it led to, as the working database %s; %s stays where it is"
                " (callsync no longer uses it): remove it once you no longer need it",
                self.path, source, self.working, source,
            )

    def publish(self, conn: duckdb.DuckDBPyConnection, *, rewrite: bool = False) -> Published:
        """Make a complete copy of what ``conn`` has committed the snapshot ``path`` shows.

        The snapshot it replaces is kept until the next publish (or the next run), except
        after a rewrite: DuckDB resolves the symlink, then opens the file it names several
        times, so a session opening ``path`` at the moment of the rename still finds that
        file (removed at once, it got an error, or read-write an empty new database). The
        one before is removed first, so the disk holds no more during a publish than before.

        ``rewrite=False`` checkpoints and copies the working file's bytes: fast, but the
        copy carries DuckDB's freed blocks, which may still hold deleted rows.
        ``rewrite=True`` builds the snapshot afresh (ATTACH + COPY FROM DATABASE): only
        live rows reach it, so data erased from the working database leaves the
        published file too (and the previous snapshot's file is deleted). It costs a
        full rewrite: use it after an erasure.
        Either way, lack of space is a DiskError and leaves the old snapshot in place."""
        return self._publish(conn, rewrite=rewrite, keep_previous=not rewrite)

    def _publish(self, conn: duckdb.DuckDBPyConnection, *, rewrite: bool, keep_previous: bool) -> Published:
        started = time.monotonic()
        self.remove_stale_files(keep_previous=False)
        snapshot = self.working.parent / f"{self.path.name}{SNAPSHOT_INFIX}{time.time_ns():x}"
        link = self.path.parent / f"{PUBLISH_PREFIX}{self.path.name}-{os.getpid()}"
        try:
            if rewrite:
                _rewrite_into(conn, snapshot)
                method = "rewrite"
                _fsync_file(snapshot)
            else:
                conn.execute("CHECKPOINT")
                method = _copy_durably(self.working, snapshot)
            _fsync_dir(snapshot.parent)
            _remove(link)
            os.symlink(os.path.relpath(snapshot, self.path.parent), link)
            os.replace(link, self.path)
            _fsync_dir(self.path.parent)
        except (OSError, duckdb.Error) as exc:
            for leftover in (snapshot, Path(f"{snapshot}.wal"), link):
                _remove(leftover)
            raise _publish_error(self.path, self.working, exc) from None
        self.remove_stale_files(keep_previous=keep_previous)
        return Published(self.path, snapshot.stat().st_size, time.monotonic() - started, method)

    def remove_stale_files(self, *, keep_previous: bool = True) -> None:
        """Every snapshot but the one ``path`` shows and, with ``keep_previous``, the one it
        replaced (each with any log an analyst's session left beside it); a killed
        publish's files; and a log from before snapshots. Only the lock holder publishes,
        so none of them is being written. A session still open on an old snapshot keeps
        reading it: its file is unlinked, not changed."""
        files = self._snapshot_files()
        kept = {snapshot.name for snapshot in self._kept_snapshots(files, keep_previous)}
        for leftover in files:
            if leftover.name.removesuffix(".wal") not in kept:
                _remove(leftover)
        for leftover in self.path.parent.glob(f"{glob.escape(PUBLISH_PREFIX + self.path.name)}-*"):
            _remove(leftover)
        if self.path.is_symlink():
            _remove(Path(f"{self.path}.wal"))

    def _current_snapshot(self) -> Path | None:
        return self.path.parent / os.readlink(self.path) if self.path.is_symlink() else None

    def _snapshot_files(self) -> list[Path]:
        """Every snapshot file in the working folder, with the logs beside them."""
        return list(self.working.parent.glob(f"{glob.escape(self.path.name)}{SNAPSHOT_INFIX}*"))

    def _kept_snapshots(self, files: list[Path], keep_previous: bool) -> list[Path]:
        """Of ``files``, the snapshot ``path`` shows and, with ``keep_previous``, the newest
        one older than it: the one it replaced. (A killed publish's file is newer than the
        current snapshot: its publish began after that one's.)"""
        current = self._current_snapshot()
        if current is None:
            return []
        if not keep_previous:
            return [current]
        older = [
            snapshot for snapshot in files
            if not snapshot.name.endswith(".wal") and _published_ns(snapshot) < _published_ns(current)
        ]
        return [current, *sorted(older, key=_published_ns)[-1:]]

    @contextmanager
    def read_only(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The published snapshot, read-only. Never waits: nothing callsync does holds it."""
        if not self.path.exists():
            raise DiskError(f"{self.path}: database does not exist yet (run `{command_hint('sync')}` first)")
        conn = self._connect_read_only()
        try:
            yield conn
        finally:
            conn.close()

    def _connect_read_only(self, tries: int = 3) -> duckdb.DuckDBPyConnection:
        for attempt in range(tries):
            try:
                return duckdb.connect(str(self.path), read_only=True)
            except duckdb.Error as exc:
                # DuckDB resolved the symlink, then a publish moved it on and removed that
                # snapshot before DuckDB opened it: the newer one is there.
                moved_on = "does not exist" in str(exc) and self.path.exists()
                if not moved_on or attempt == tries - 1:
                    raise _read_error(self.path, exc) from None
        raise AssertionError("unreachable")

    def sizes(self) -> dict[str, object]:
        """For `callsync status`: the files' sizes and times, and the free space. The time of
        a publish is its symlink's: an analyst's read-write session can change the snapshot
        file, never the link."""
        published = _stat(self.path)  # the snapshot the symlink shows
        published_at = (os.lstat(self.path) if self.path.is_symlink() else published).st_mtime if published else None
        previous = self._kept_snapshots(self._snapshot_files(), keep_previous=True)[1:]
        working = _stat(self.working)
        log = _stat(Path(f"{self.working}.wal"))
        working_bytes = (working.st_size if working else 0) + (log.st_size if log else 0)
        working_changed = max((item.st_mtime for item in (working, log) if item), default=None)
        return {
            "published_bytes": published.st_size if published else None,
            "published_at": published_at,
            "previous_bytes": sum(snapshot.stat().st_size for snapshot in previous if snapshot.exists()),
            "working": str(self.working),
            "working_bytes": working_bytes if working else None,
            "working_changed_at": working_changed,
            "free_bytes": shutil.disk_usage(self.path.parent).free if self.path.parent.exists() else None,
        }


def _refuse_foreign(path: Path) -> None:
    """A DuckDB file with tables but none of callsync's is someone else's database (a
    [database] path pointing at the wrong file): taking it over would publish over it."""
    try:
        with duckdb.connect(str(path), read_only=True) as conn:
            tables = [row[0] for row in run_sql(conn, "user_tables").fetchall()]
    except duckdb.Error as exc:
        raise DiskError(f"{path}: cannot take it over as callsync's database: {first_line(exc)}") from None
    if tables and MIGRATIONS_TABLE not in tables:
        raise ConfigError(
            f"{path}: a database callsync did not make (tables {', '.join(tables[:5])}, no {MIGRATIONS_TABLE});"
            " callsync publishes its snapshot at [database] path: move that file away, or set another path"
        )


def _published_ns(snapshot: Path) -> int:
    """When its publish began, from its name (``<name>.snapshot-<hex time_ns>``)."""
    try:
        return int(snapshot.name.rsplit(SNAPSHOT_INFIX, 1)[1], 16)
    except ValueError:
        return -1


def _utc(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, timezone.utc)


def as_store(database: Path | str | Store) -> Store:
    """A store as given, or the DuckDB file at a path (e.g. `--database FILE`)."""
    return FileStore(database) if isinstance(database, (str, Path)) else database


def lock_is_free(database_path: Path) -> bool:
    """Whether no run holds ``<database>.lock`` (pipeline.state.RunLock), checked here
    without importing the sync's modules, so that status starts fast."""
    try:
        with Path(str(database_path) + ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
    except BlockingIOError:
        return False
    except OSError:
        return True  # no lock file can be made there: no run can hold it either
    return True


def _copy_database_into(conn: duckdb.DuckDBPyConnection, temp: Path, then: Callable[[duckdb.DuckDBPyConnection], None]) -> None:
    """Everything of the open database into a new file; ``then(conn)`` runs on the copy."""
    name = conn.execute("SELECT current_database()").fetchall()[0][0]
    conn.execute("CHECKPOINT")
    conn.execute("ATTACH ? AS rewritten", [str(temp)])
    try:
        conn.execute(f'COPY FROM DATABASE "{name}" TO rewritten')
        conn.execute("USE rewritten")
        with transaction(conn):
            then(conn)
    finally:
        conn.execute(f'USE "{name}"')
        conn.execute("DETACH rewritten")


def is_out_of_memory(exc: BaseException) -> bool:
    """DuckDB's memory_limit reached, whatever the exception's class (on COMMIT, in a checkpoint)."""
    return isinstance(exc, duckdb.Error) and any(words in str(exc) for words in ("could not allocate", "failed to pin block"))


def _rewrite_into(conn: duckdb.DuckDBPyConnection, temp: Path) -> None:
    source = conn.execute("SELECT current_database()").fetchone()[0]
    _remove(temp)
    conn.execute("ATTACH ? AS callsync_snapshot", [str(temp)])
    try:
        conn.execute(f'COPY FROM DATABASE "{source}" TO callsync_snapshot')
    finally:
        conn.execute("DETACH callsync_snapshot")  # checkpoints the new file: no log is left beside it


def _copy_durably(source: Path, target: Path) -> str:
    """Copy with the fastest means the filesystem offers, then fsync the copy."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        method = _copy(src.fileno(), dst.fileno(), os.fstat(src.fileno()).st_size)
        os.fsync(dst.fileno())
    return method


def _copy(src: int, dst: int, size: int) -> str:
    try:
        fcntl.ioctl(dst, FICLONE, src)
        return "reflink"
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
    try:
        copied = 0
        while copied < size:
            step = os.copy_file_range(src, dst, min(_COPY_CHUNK, size - copied), copied, copied)
            if step == 0:
                break
            copied += step
        if copied == size:
            return "copy_file_range"
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    os.lseek(src, 0, os.SEEK_SET)
    os.lseek(dst, 0, os.SEEK_SET)
    os.ftruncate(dst, 0)
    with open(src, "rb", closefd=False) as reader, open(dst, "wb", closefd=False) as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
    return "copy"


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _publish_error(path: Path, working: Path, exc: BaseException) -> CallsyncError:
    if isinstance(exc, duckdb.OutOfMemoryException) or is_out_of_memory(exc):
        return DatabaseMemoryError(
            f"database ran out of memory: {first_line(exc)} (raise [database] memory_limit);"
            f" {path.name} still holds the previous snapshot"
        )
    no_space = (isinstance(exc, OSError) and exc.errno in _NO_SPACE) or any(
        words in str(exc).lower() for words in ("no space left", "disk quota", "file too large")
    )
    if no_space:
        size = working.stat().st_size if working.exists() else 0
        return DiskError(
            f"{path}: could not publish, no space left in {path.parent.absolute()} (publishing needs another"
            f" {size / 1e6:.0f} MB); the working database is intact and {path.name} still holds the previous snapshot"
        )
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc)
    return DiskError(f"{path}: could not publish: {reason}; {path.name} still holds the previous snapshot")


def _read_error(path: Path, exc: BaseException) -> BaseException:
    message = first_line(exc)
    if "lock" in message.lower():
        return DatabaseLockedError(
            f"{path}: another process holds it read-write (an analyst's session?): "
            "close it, or wait for the next publish, which replaces the file"
        )
    if "wal" in message.lower():
        return DiskError(f"{path}.wal was left by another session and does not belong to this snapshot: {message}")
    return DiskError(f"{path}: {message}")

