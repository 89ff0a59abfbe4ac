"""The SQLite engine: one writer thread with group commit, a small read pool.

Why this shape (DESIGN §6): SQLite allows one writer at a time, and a
``COMMIT`` with ``synchronous=FULL`` costs an fsync. So every write goes to a
single writer thread which takes *all* the writes queued at that moment,
runs each inside its own ``SAVEPOINT`` (one failing write rolls back alone),
and commits them together: one fsync for many writes. A caller's ``await``
returns only after the commit, which is what lets a handler answer 2xx
knowing the data is durable.

Reads run on a pool of read-only connections through ``trio.to_thread``; in
WAL mode they never block the writer nor each other. No request handler
touches SQLite on the Trio thread.

Storage trouble has a name. When SQLite refuses a write for a reason outside
the server -- the disk is full, the file or its file system is read-only, the
disk reports I/O errors -- the write fails with
:class:`~swfed.core.errors.StorageUnavailable` (503
``SW_STORAGE_UNAVAILABLE``, saying what to do) instead of a bare
``sqlite3.OperationalError``: nothing of its batch was stored, and the same
write succeeds once the admin has fixed the disk (every write is tried
afresh, nothing is latched). The writer logs ``storage.unavailable`` at most
once a minute (with SQLite's message and how many writes failed since the
last line) and ``storage.recovered`` at the first commit after it.

Storage functions come in pairs (Synapse style): a sync ``_foo_txn(conn, …)``
that runs on a database thread, and an ``async def foo()`` that schedules it.
The sync functions also serve the CLI, which opens the file directly
(:func:`open_direct`) whether or not the server runs.
"""

from __future__ import annotations

import functools
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from swfed import logs
from swfed.core.errors import StorageUnavailable
from swfed.storage.files import bump_stamp
from swfed.storage.migrations import migrate
from swfed.storage.touched import Touched

T = TypeVar("T")

#: How many queued writes one commit takes at most.
MAX_GROUP = 256
#: ``storage.unavailable`` is logged at most this often (seconds).
TROUBLE_LOG_SECONDS = 60.0

#: SQLite primary result codes that mean "the storage refuses writes now":
#: (reason, what the admin should do).
_TROUBLE = {
    13: ("disk_full", "the disk holding the database is full: free disk space under "
                      "data_dir; writes resume by themselves"),
    8: ("read_only", "the database is read-only: make data_dir and the database file "
                     "writable by the server's user, or remount its file system read-write; "
                     "writes resume by themselves"),
    10: ("io_error", "the disk holding the database reports I/O errors: check it (dmesg) "
                     "and the free space under data_dir; writes resume once it works"),
    14: ("io_error", "the database file cannot be opened: check that data_dir exists and "
                     "is writable by the server's user"),
}
_TROUBLE_TEXT = (("database or disk is full", 13), ("readonly database", 8),
                 ("disk i/o error", 10), ("unable to open database", 14))


def storage_trouble(exc: BaseException) -> StorageUnavailable | None:
    """The :class:`StorageUnavailable` a SQLite error means, or None (not trouble)."""
    if not isinstance(exc, sqlite3.Error):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary not in _TROUBLE:
        text = str(exc).lower()
        primary = next((c for fragment, c in _TROUBLE_TEXT if fragment in text), None)
    if primary is None:
        return None
    reason, what = _TROUBLE[primary]
    trouble = StorageUnavailable(f"the server cannot write to its database ({exc}): {what}",
                                 reason=reason)
    trouble.__cause__ = exc
    return trouble


class SqliteConn(sqlite3.Connection):
    """A SQLite connection that says its dialect and collects what its current
    write touched (swfed.storage.touched)."""

    dialect = "sqlite"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.touched = Touched()


def connect(path: Path, *, synchronous: str = "FULL", busy_timeout_ms: int = 5000,
            readonly: bool = False) -> SqliteConn:
    """Open a connection with the pragmas every swfed connection uses."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False, factory=SqliteConn)
    else:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                               factory=SqliteConn)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA foreign_keys = ON")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    assert isinstance(conn, SqliteConn)
    return conn


def open_direct(path: Path, *, synchronous: str = "FULL",
                busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A migrated read-write connection for the CLI (no threads, no Trio)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path, synchronous=synchronous, busy_timeout_ms=busy_timeout_ms)
    migrate(conn)
    return conn


#: The stamp the CLI bumps when its commit moved ``auth_version`` (swfed.storage.sessions).
SESSIONS_STAMP = "sessions.changed"


def auth_version_txn(conn: sqlite3.Connection) -> int:
    """The number that moves whenever a token may stop meaning its user (migration 7)."""
    return int(conn.execute("SELECT version FROM auth_version").fetchone()[0])


def run_in_transaction(conn: Any, fn: Callable[..., T], *args: Any,
                       **kwargs: Any) -> T:
    """Run ``fn(conn, *args, **kwargs)`` in one immediate transaction (CLI use).

    A commit that changed who a token belongs to bumps the sessions stamp, so a
    running server forgets the users it remembered for tokens. On PostgreSQL a
    serialization failure or deadlock with the running server (40001, 40P01)
    runs ``fn`` again, a few times.
    """
    for attempt in range(4):
        conn.execute("BEGIN IMMEDIATE" if conn.dialect == "sqlite" else "BEGIN")
        try:
            before = auth_version_txn(conn)
            result = fn(conn, *args, **kwargs)
            changed = auth_version_txn(conn) != before
            conn.execute("COMMIT")
        except BaseException as exc:
            try:
                conn.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - the engine ended it already; exc is the news
                pass
            if getattr(exc, "sqlstate", None) in ("40001", "40P01") and attempt < 3:
                continue
            raise
        break
    if changed:
        if conn.dialect == "sqlite":
            db_file = Path(conn.execute("PRAGMA database_list").fetchone()[2])
        else:  # PostgreSQL: the stamps live in data_dir all the same (pg.open_direct)
            db_file = conn.stamp_file
        bump_stamp(db_file, SESSIONS_STAMP)
    return result


@attrs.define
class _Write:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    done: trio.Event
    token: trio.lowlevel.TrioToken
    result: Any = None
    error: BaseException | None = None
    touched: Touched | None = None


class Database:
    """One SQLite file: a writer thread with group commit and a read pool.

    Use as ``async with Database.open(path) as db``; leaving the block stops
    the writer after it has committed everything already queued.
    """

    def __init__(self, path: Path, *, synchronous: str = "FULL", read_connections: int = 4,
                 busy_timeout_ms: int = 5000, page_limit_file: Path | None = None) -> None:
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._writer_thread: threading.Thread | None = None
        self._readers: list[sqlite3.Connection] = []
        self._read_slots = trio.Semaphore(read_connections)
        self._n_readers = read_connections
        self._after_commit: list[Callable[[Touched], None]] = []
        #: ``auth_version`` as of the last commit (swfed.storage.sessions).
        self.auth_version = 0
        #: Commits and writes done, for the benchmark and metrics.
        self.commits = 0
        self.writes = 0
        #: The storage trouble the last failed write met; None once a write
        #: (other than the /healthz probe) stored something again.
        self.trouble: StorageUnavailable | None = None
        self._trouble_since = 0.0
        self._trouble_logged_at: float | None = None
        self._failed_writes = 0
        self._reported = False  # a storage.unavailable line awaits its storage.recovered
        #: Test hook (SWFED_TEST_MAX_PAGES_FILE): a file holding a page limit for
        #: the writer, so tests without root can fill "the disk" and free it.
        self._page_limit_file = page_limit_file
        self._page_limit: int | None = None
        self._default_max_pages: int | None = None

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def setup() -> sqlite3.Connection:
            conn = connect(self.path, synchronous=self._synchronous,
                           busy_timeout_ms=self._busy_timeout_ms)
            migrate(conn)
            return conn

        writer_conn = await trio.to_thread.run_sync(setup)
        self.auth_version = auth_version_txn(writer_conn)
        self._readers = [
            connect(self.path, synchronous=self._synchronous,
                    busy_timeout_ms=self._busy_timeout_ms, readonly=True)
            for _ in range(self._n_readers)
        ]
        self._writer_thread = threading.Thread(
            target=self._writer_loop, args=(writer_conn,), name="swfed-sqlite-writer",
            daemon=True)
        self._writer_thread.start()

    async def close(self) -> None:
        if self._writer_thread is not None:
            self._queue.put(None)
            thread = self._writer_thread
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(thread.join)
            self._writer_thread = None
        for conn in self._readers:
            conn.close()
        self._readers = []

    def on_commit(self, callback: Callable[[Touched], None]) -> None:
        """Call ``callback(touched)`` on the Trio thread after a commit that touched
        something (once per group commit, with what its stored writes touched)."""
        self._after_commit.append(callback)

    # -- writes --------------------------------------------------------------

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, *args, **kwargs)`` on the writer thread; return after COMMIT.

        The write cannot be taken back once queued, so waiting for it is
        shielded from cancellation: a cancelled caller still only moves on
        once it is known whether the data is on disk.

        Raises whatever ``fn`` raised (nothing of it stored), or
        StorageUnavailable when the database refused the batch (disk full,
        read-only, I/O error).
        """
        if self._writer_thread is None:
            raise RuntimeError("database is not open")
        if kwargs:
            fn = functools.partial(fn, **kwargs)
        job = _Write(fn, args, trio.Event(), trio.lowlevel.current_trio_token())
        self._queue.put(job)
        with trio.CancelScope(shield=True):
            await job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[no-any-return]

    def _writer_loop(self, conn: sqlite3.Connection) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_GROUP:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._run_batch(conn, batch)
        conn.close()

    def _run_batch(self, conn: SqliteConn, batch: list[_Write]) -> None:
        if self._page_limit_file is not None:
            self._apply_page_limit(conn)
        changes = conn.total_changes
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT w")
                conn.touched = Touched()
                try:
                    job.result = job.fn(conn, *job.args)
                    job.touched = conn.touched
                except Exception as exc:  # the job's own error, reported to its caller
                    if storage_trouble(exc) is not None:
                        # SQLite may have rolled the whole transaction back
                        # already: the batch fails as one, below.
                        raise
                    conn.execute("ROLLBACK TO w")
                    job.error = exc  # what it touched is rolled back with it
                conn.execute("RELEASE w")
            auth_version = auth_version_txn(conn)
            conn.execute("COMMIT")
            self.auth_version = auth_version
            self.commits += 1
            self.writes += len(batch)
            if (self.trouble is not None and conn.total_changes > changes
                    and any(job.fn is not health_write_txn for job in batch)):
                # Only a commit that stored something counts: an empty one
                # (nothing to update) or the health probe proves nothing.
                self._storage_recovered()
        except Exception as exc:  # the commit itself failed: nothing of the batch is stored
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            trouble = storage_trouble(exc)
            if trouble is not None:
                self._storage_failed(trouble, len(batch))
            for job in batch:
                job.result = None
                job.touched = None
                # one error per caller: each raises its own (tracebacks differ)
                job.error = exc if trouble is None else storage_trouble(exc)
        # one hop back to Trio per batch (per Trio run: in the server there is one)
        by_run: dict[trio.lowlevel.TrioToken, list[_Write]] = {}
        for job in batch:
            by_run.setdefault(job.token, []).append(job)
        for token, jobs in by_run.items():
            token.run_sync_soon(self._finish, jobs)

    def _storage_failed(self, trouble: StorageUnavailable, writes: int) -> None:
        """Count a failed batch; log ``storage.unavailable`` at most once a minute."""
        now = time.monotonic()
        if self.trouble is None:
            self._trouble_since = now
        self.trouble = trouble
        self._failed_writes += writes
        if (self._trouble_logged_at is None
                or now - self._trouble_logged_at >= TROUBLE_LOG_SECONDS):
            logs.log("storage.unavailable", level="error", reason=trouble.reason,
                     sqlite_message=str(trouble.__cause__), data_dir=str(self.path.parent),
                     failed_writes=self._failed_writes, message=trouble.message,
                     next_report_in_s=int(TROUBLE_LOG_SECONDS))
            self._trouble_logged_at = now
            self._failed_writes = 0
            self._reported = True

    def _storage_recovered(self) -> None:
        assert self.trouble is not None
        if self._reported:  # one storage.recovered per storage.unavailable line
            logs.log("storage.recovered", level="warning", reason=self.trouble.reason,
                     after_s=round(time.monotonic() - self._trouble_since, 1),
                     failed_writes_since_last_report=self._failed_writes)
            self._reported = False
        self.trouble = None
        # _trouble_logged_at stays: storage.unavailable is at most once a
        # minute even when writes fail and succeed by turns.
        self._failed_writes = 0

    def _apply_page_limit(self, conn: sqlite3.Connection) -> None:
        """Test hook: a positive number in the file caps the database at (at
        least) its current size, 0 or no file lifts the cap."""
        assert self._page_limit_file is not None
        try:
            limit = int(self._page_limit_file.read_text().strip() or 0)
        except (OSError, ValueError):
            limit = 0
        if limit == self._page_limit:
            return
        if self._default_max_pages is None:
            self._default_max_pages = int(conn.execute("PRAGMA max_page_count").fetchone()[0])
        conn.execute(f"PRAGMA max_page_count = {limit if limit > 0 else self._default_max_pages}")
        self._page_limit = limit

    def _finish(self, batch: list[_Write]) -> None:
        touched = Touched()
        for job in batch:
            if job.touched is not None:
                touched.update(job.touched)
        # the hooks run before any caller resumes: what a caller does next
        # (answer 2xx, read its own write) sees delivery and streams already woken
        if touched:
            for callback in self._after_commit:
                try:
                    callback(touched)
                except Exception:  # noqa: BLE001 - a hook's bug must not strand the writers
                    logs.log_exception("storage.commit_hook_failed")
        for job in batch:
            job.done.set()

    # -- reads ---------------------------------------------------------------

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, *args, **kwargs)`` on a read connection in a worker thread.

        Raises StorageUnavailable when the disk fails the read (I/O error).
        """
        if kwargs:
            fn = functools.partial(fn, **kwargs)
        async with self._read_slots:
            conn = self._readers.pop()
            try:
                return await trio.to_thread.run_sync(_read_txn, conn, fn, args)
            except sqlite3.Error as exc:
                trouble = storage_trouble(exc)
                if trouble is None:
                    raise
                raise trouble from exc
            finally:
                self._readers.append(conn)

    async def backup(self, target: Path) -> None:
        """Online backup of the whole file to ``target`` (consistent snapshot)."""
        await trio.to_thread.run_sync(backup_file, self.path, target)


def _read_txn(conn: sqlite3.Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    # One read transaction so multi-statement reads see one snapshot.
    conn.execute("BEGIN")
    try:
        return fn(conn, *args)
    finally:
        conn.execute("COMMIT")


def backup_file(source: Path, target: Path) -> None:
    """Copy a live database with SQLite's online backup API."""
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(str(source))
    try:
        dst = sqlite3.connect(str(target))
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def health_write_txn(conn: sqlite3.Connection, now: int) -> None:
    """A real write, for /healthz: fails if the file or its disk is not writable."""
    conn.execute("INSERT INTO health (id, checked_at) VALUES (1, ?)"
                 " ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at", (now,))
