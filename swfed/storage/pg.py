"""The PostgreSQL engine, beside the SQLite one (db.py): same face, same guarantees.

psycopg 3's sync API on worker threads (its async classes run only on
asyncio): one writer thread takes every write queued at that moment, runs
each inside its own ``SAVEPOINT`` (a failing write rolls back alone) and
commits them together, exactly like the SQLite writer, so the transactions
see the one-writer-at-a-time world they were written for and a caller's
``await`` returns only after the COMMIT. Serialization failures and
deadlocks (40001, 40P01, which a CLI command writing at the same time can
cause) re-run the batch a few times. Reads run on a psycopg_pool pool, each
in one REPEATABLE READ READ ONLY transaction, through ``trio.to_thread``
(never abandoned: a cancelled reader waits for its thread, which holds a
connection). Every connection sets ``statement_timeout`` and
``lock_timeout``, so no thread waits forever.

Storage trouble has a name here too: the disk full (53100), a read-only
database (25006), the connection lost or the server down (08…, 57P01,
refused connections) make the write fail with StorageUnavailable (503
``SW_STORAGE_UNAVAILABLE`` with Retry-After); the writer logs
``storage.unavailable`` at most once a minute, reconnects for the next batch
and logs ``storage.recovered`` at the first commit that stored something.

The :class:`PgConn` a transaction gets translates ``?`` placeholders to
psycopg's ``%s`` (outside string literals; a literal ``%`` is escaped) and
gives rows readable by column name and by index, like ``sqlite3.Row``.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import trio

from swfed import logs
from swfed.core.errors import StorageUnavailable
from swfed.storage.db import TROUBLE_LOG_SECONDS, Database, _Write, health_write_txn
from swfed.storage.migrations import migrate_pg
from swfed.storage.touched import Touched

try:  # the optional extra: pip install 'swfed[postgresql]'
    import psycopg
    import psycopg_pool
    from psycopg.adapt import Loader
except ImportError:  # pragma: no cover - checked by startup.check_storage
    psycopg = None  # type: ignore[assignment]
    psycopg_pool = None  # type: ignore[assignment]
    Loader = object  # type: ignore[assignment,misc]

T = TypeVar("T")

INSTALL_HINT = "pip install 'swfed[postgresql]'"
#: How often a batch is tried when PostgreSQL reports a serialization failure or deadlock.
RETRIES = 4
_RETRY_CODES = {"40001", "40P01"}
#: SQLSTATEs that mean "the database refuses writes now": (reason, what to do).
_TROUBLE = {
    "53100": ("disk_full", "the disk holding the PostgreSQL database is full: free space on "
                           "the database server; writes resume by themselves"),
    "53200": ("out_of_memory", "the PostgreSQL server is out of memory: check it; writes "
                               "resume by themselves"),
    "25006": ("read_only", "the PostgreSQL database is read-only (a standby, or "
                           "default_transaction_read_only): point [storage] url at the "
                           "primary; writes resume by themselves"),
    "57P01": ("unreachable", "the PostgreSQL server shut down: start it again; writes "
                             "resume by themselves"),
    "57P02": ("unreachable", "the PostgreSQL server crashed: check its log; writes resume "
                             "once it is back"),
    "57P03": ("unreachable", "the PostgreSQL server is starting or shutting down: wait; "
                             "writes resume by themselves"),
}
_UNREACHABLE = ("unreachable", "the server cannot reach its PostgreSQL database: check that "
                               "PostgreSQL runs and [storage] url; writes resume by themselves")


def available() -> bool:
    return psycopg is not None


def storage_trouble(exc: BaseException) -> StorageUnavailable | None:
    """The StorageUnavailable a psycopg error means, or None (not trouble)."""
    if psycopg is None:
        return None
    if psycopg_pool is not None and isinstance(exc, psycopg_pool.PoolTimeout):
        reason, what = _UNREACHABLE
    elif isinstance(exc, psycopg.Error):
        state = exc.sqlstate or ""
        if state in _TROUBLE:
            reason, what = _TROUBLE[state]
        elif state.startswith("08") or (not state and isinstance(exc, psycopg.OperationalError)):
            reason, what = _UNREACHABLE
        else:
            return None
    else:
        return None
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    trouble = StorageUnavailable(f"the server cannot write to its database ({message}): {what}",
                                 reason=reason)
    trouble.__cause__ = exc
    return trouble


# -- the connection a transaction gets -------------------------------------------

_LITERAL_OR_MARK = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?|%")


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> str:
    """``?`` → ``%s`` and ``%`` → ``%%``, outside string literals and quoted names."""
    def one(m: re.Match[str]) -> str:
        text = m.group(0)
        if text == "?":
            return "%s"
        if text == "%":
            return "%%"
        return text.replace("%", "%%") if text[0] == "'" else text
    return _LITERAL_OR_MARK.sub(one, sql)


class Row:
    """A row readable as ``row["name"]``, ``row[0]``, unpacked, or ``dict(row)``."""

    __slots__ = ("_values", "_index")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = tuple(values)
        self._index = index

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._index)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        return self._values == (other._values if isinstance(other, Row) else other)

    def __hash__(self) -> int:
        return hash(self._values)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._index, self._values, strict=False))!r})"


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    index: dict[str, int] = {}
    for i, column in enumerate(cursor.description or ()):
        index.setdefault(column.name, i)
    return lambda values: Row(values, index)


class _IntegralNumeric(Loader):  # type: ignore[misc,valid-type]
    """SUM() over BIGINT is NUMERIC in PostgreSQL: give ints, as SQLite does."""

    def load(self, data: Any) -> int | float:
        value = Decimal(bytes(data).decode())
        return int(value) if value == value.to_integral_value() else float(value)


class PgConn:
    """The :class:`~swfed.storage.conn.Conn` of the PostgreSQL engine."""

    dialect = "postgresql"

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.touched = Touched()
        self.stamp_file: Path | None = None

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        cur = self.raw.cursor()
        # psycopg prepares a statement run often (prepare_threshold): our SQL
        # texts are constants, so most are parsed and planned once per connection
        cur.execute(translate(sql), tuple(parameters) if parameters is not None else None)
        return cur

    def close(self) -> None:
        self.raw.close()

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any:
        cur = self.raw.cursor()
        rows = [tuple(p) for p in parameters]
        if rows:
            cur.executemany(translate(sql), rows)
        return cur


def _configure(raw: Any, statement_timeout_ms: int, lock_timeout_ms: int) -> None:
    raw.row_factory = _row_factory
    raw.adapters.register_loader("numeric", _IntegralNumeric)
    raw.execute(f"SET statement_timeout = {int(statement_timeout_ms)}")
    raw.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
    raw.execute("SET TIME ZONE 'UTC'")


def connect(url: str, *, statement_timeout_ms: int = 30_000,
            lock_timeout_ms: int = 10_000) -> PgConn:
    """One autocommit connection (transactions are begun explicitly)."""
    raw = psycopg.connect(url, autocommit=True, connect_timeout=5)
    _configure(raw, statement_timeout_ms, lock_timeout_ms)
    return PgConn(raw)


def open_direct(url: str, stamp_file: Path) -> PgConn:
    """A migrated connection for the CLI (no threads, no Trio); its commits that
    move auth_version bump the stamps beside ``stamp_file`` (db.run_in_transaction)."""
    conn = connect(url)
    conn.stamp_file = stamp_file
    migrate_pg(conn)
    return conn


def _is_retry(exc: BaseException) -> bool:
    return psycopg is not None and isinstance(exc, psycopg.Error) and (
        exc.sqlstate in _RETRY_CODES)


class PgDatabase(Database):
    """A PostgreSQL database with the face of :class:`swfed.storage.db.Database`."""

    dialect = "postgresql"

    def __init__(self, url: str, stamp_file: Path, *, read_connections: int = 4,
                 statement_timeout_ms: int = 30_000, lock_timeout_ms: int = 10_000) -> None:
        # path: where the CLI's stamp files live (data_dir), as with SQLite
        super().__init__(stamp_file, read_connections=read_connections)
        self.url = url
        self.label = _url_label(url)
        self._statement_timeout_ms = statement_timeout_ms
        self._lock_timeout_ms = lock_timeout_ms
        self._pool: Any = None
        self._writer: PgConn | None = None
        self._commit_sent = False

    def _connect(self) -> PgConn:
        return connect(self.url, statement_timeout_ms=self._statement_timeout_ms,
                       lock_timeout_ms=self._lock_timeout_ms)

    async def start(self) -> None:
        def setup() -> PgConn:
            conn = self._connect()
            try:
                migrate_pg(conn)
            except BaseException:
                conn.raw.close()
                raise
            return conn

        self._writer = await trio.to_thread.run_sync(setup)
        from swfed.storage.db import auth_version_txn
        self.auth_version = await trio.to_thread.run_sync(auth_version_txn, self._writer)
        configure = functools.partial(_configure_pooled, statement_timeout_ms=(
            self._statement_timeout_ms), lock_timeout_ms=self._lock_timeout_ms)
        self._pool = psycopg_pool.ConnectionPool(
            self.url, min_size=1, max_size=self._n_readers, open=False, timeout=5,
            kwargs={"autocommit": True, "connect_timeout": 5}, configure=configure,
            reconnect_timeout=0)
        await trio.to_thread.run_sync(functools.partial(self._pool.open, wait=False))
        self._writer_thread = threading.Thread(
            target=self._writer_loop, args=(self._writer,), name="swfed-pg-writer", daemon=True)
        self._writer_thread.start()

    async def close(self) -> None:
        if self._writer_thread is not None:
            self._queue.put(None)
            thread = self._writer_thread
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(thread.join)
            self._writer_thread = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(pool.close)

    # -- writes ----------------------------------------------------------------

    def _run_batch(self, conn: Any, batch: list[_Write]) -> None:  # noqa: C901
        error: BaseException | None = None
        for attempt in range(RETRIES):
            try:
                if self._writer is None or self._writer.raw.closed or self._writer.raw.broken:
                    self._reconnect()
                assert self._writer is not None
                stored = self._try_batch(self._writer, batch)
            except Exception as exc:  # noqa: BLE001 - the batch failed as one, below
                error = exc
                if _is_retry(exc) and attempt + 1 < RETRIES:
                    time.sleep(0.01 * (attempt + 1))
                    continue
                if (attempt == 0 and not self._commit_sent and storage_trouble(exc) is not None
                        and self._writer is not None and self._writer.raw.broken):
                    # the connection died while idle (a restarted server): nothing of
                    # the batch can have been committed, so run it once more afresh
                    continue
                break
            else:
                error = None
                self.commits += 1
                self.writes += len(batch)
                if (self.trouble is not None and stored
                        and any(job.fn is not health_write_txn for job in batch)):
                    self._storage_recovered()
                break
        if error is not None:
            trouble = storage_trouble(error)
            if trouble is not None:
                self._storage_failed(trouble, len(batch))
            for job in batch:
                job.result = None
                job.touched = None
                job.error = error if trouble is None else storage_trouble(error)
        by_run: dict[trio.lowlevel.TrioToken, list[_Write]] = {}
        for job in batch:
            by_run.setdefault(job.token, []).append(job)
        for token, jobs in by_run.items():
            token.run_sync_soon(self._finish, jobs)

    def _reconnect(self) -> None:
        if self._writer is not None:
            try:
                self._writer.raw.close()
            except Exception:  # noqa: BLE001 - it is gone either way
                pass
            self._writer = None
        self._writer = self._connect()

    def _try_batch(self, conn: PgConn, batch: list[_Write]) -> bool:
        """Run the batch in one transaction; True when a job stored something."""
        from swfed.storage.db import auth_version_txn
        stored = False
        self._commit_sent = False
        try:
            conn.execute("BEGIN")
            for job in batch:
                job.result = job.error = job.touched = None
                conn.execute("SAVEPOINT w")
                conn.touched = Touched()
                try:
                    job.result = job.fn(conn, *job.args)
                    job.touched = conn.touched
                    stored = stored or job.fn is not health_write_txn
                except Exception as exc:  # the job's own error, reported to its caller
                    if storage_trouble(exc) is not None or _is_retry(exc):
                        raise
                    conn.execute("ROLLBACK TO SAVEPOINT w")
                    job.error = exc
                conn.execute("RELEASE SAVEPOINT w")
            auth_version = auth_version_txn(conn)
            self._commit_sent = True  # from here on the outcome may be unknown: no rerun
            conn.execute("COMMIT")
        except BaseException:
            try:
                if not conn.raw.closed and not conn.raw.broken:
                    conn.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - the connection is gone: reconnect next time
                pass
            raise
        self.auth_version = auth_version
        return stored

    def _storage_failed(self, trouble: StorageUnavailable, writes: int) -> None:
        now = time.monotonic()
        if self.trouble is None:
            self._trouble_since = now
        self.trouble = trouble
        self._failed_writes += writes
        if (self._trouble_logged_at is None
                or now - self._trouble_logged_at >= TROUBLE_LOG_SECONDS):
            logs.log("storage.unavailable", level="error", reason=trouble.reason,
                     backend="postgresql", database=self.label,
                     postgresql_message=str(trouble.__cause__).strip(),
                     failed_writes=self._failed_writes, message=trouble.message,
                     next_report_in_s=int(TROUBLE_LOG_SECONDS))
            self._trouble_logged_at = now
            self._failed_writes = 0
            self._reported = True

    # -- reads -----------------------------------------------------------------

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if kwargs:
            fn = functools.partial(fn, **kwargs)
        if self._pool is None:
            raise RuntimeError("database is not open")
        try:
            return await trio.to_thread.run_sync(_read_txn, self._pool, fn, args)
        except Exception as exc:
            trouble = storage_trouble(exc)
            if trouble is None:
                raise
            raise trouble from exc

    async def backup(self, target: Any) -> None:
        raise RuntimeError(
            "online backup is for the SQLite file: back a PostgreSQL database up with "
            "PostgreSQL's own tools (pg_dump, or base backups and WAL archiving)")


def _configure_pooled(raw: Any, *, statement_timeout_ms: int, lock_timeout_ms: int) -> None:
    _configure(raw, statement_timeout_ms, lock_timeout_ms)


def _read_txn(pool: Any, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    # A pooled connection may have died while idle (the server restarted): the
    # pool drops it, checks its other idle ones, and the read runs again once.
    for attempt in (1, 2):
        dead = False
        with pool.connection() as raw:
            conn = PgConn(raw)
            try:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                try:
                    return fn(conn, *args)
                finally:
                    if not raw.closed and not raw.broken:
                        conn.execute("COMMIT")
            except Exception as exc:
                if attempt == 1 and (raw.closed or raw.broken) and (
                        storage_trouble(exc) is not None):
                    dead = True
                else:
                    raise
        if dead:
            pool.check()  # drop the other idle connections that died with it
    raise AssertionError("unreachable")


def _url_label(url: str) -> str:
    """The URL without its password, for logs."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)
