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
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from swfed.storage.migrations import migrate

T = TypeVar("T")

#: How many queued writes one commit takes at most.
MAX_GROUP = 256


def connect(path: Path, *, synchronous: str = "FULL", busy_timeout_ms: int = 5000,
            readonly: bool = False) -> sqlite3.Connection:
    """Open a connection with the pragmas every swfed connection uses."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA foreign_keys = ON")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


def open_direct(path: Path, *, synchronous: str = "FULL",
                busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A migrated read-write connection for the CLI (no threads, no Trio)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path, synchronous=synchronous, busy_timeout_ms=busy_timeout_ms)
    migrate(conn)
    return conn


def run_in_transaction(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any,
                       **kwargs: Any) -> T:
    """Run ``fn(conn, *args, **kwargs)`` in one immediate transaction (CLI use)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args, **kwargs)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


@attrs.define
class _Write:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    done: trio.Event
    token: trio.lowlevel.TrioToken
    result: Any = None
    error: BaseException | None = None


class Database:
    """One SQLite file: a writer thread with group commit and a read pool.

    Use as ``async with Database.open(path) as db``; leaving the block stops
    the writer after it has committed everything already queued.
    """

    def __init__(self, path: Path, *, synchronous: str = "FULL", read_connections: int = 4,
                 busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._writer_thread: threading.Thread | None = None
        self._readers: list[sqlite3.Connection] = []
        self._read_slots = trio.Semaphore(read_connections)
        self._n_readers = read_connections
        self._after_commit: list[Callable[[], None]] = []
        #: Commits and writes done, for the benchmark and metrics.
        self.commits = 0
        self.writes = 0

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def setup() -> sqlite3.Connection:
            conn = connect(self.path, synchronous=self._synchronous,
                           busy_timeout_ms=self._busy_timeout_ms)
            migrate(conn)
            return conn

        writer_conn = await trio.to_thread.run_sync(setup)
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

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on the Trio thread after every commit."""
        self._after_commit.append(callback)

    # -- writes --------------------------------------------------------------

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, *args, **kwargs)`` on the writer thread; return after COMMIT.

        The write cannot be taken back once queued, so waiting for it is
        shielded from cancellation: a cancelled caller still only moves on
        once it is known whether the data is on disk.
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

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Write]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT w")
                try:
                    job.result = job.fn(conn, *job.args)
                except Exception as exc:  # the job's own error, reported to its caller
                    conn.execute("ROLLBACK TO w")
                    job.error = exc
                conn.execute("RELEASE w")
            conn.execute("COMMIT")
            self.commits += 1
            self.writes += len(batch)
        except Exception as exc:  # the commit itself failed: nothing of the batch is stored
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for job in batch:
                job.result = None
                job.error = exc
        for job in batch:
            job.token.run_sync_soon(self._finish, job)

    def _finish(self, job: _Write) -> None:
        job.done.set()
        if job.error is None:
            for callback in self._after_commit:
                callback()

    # -- reads ---------------------------------------------------------------

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, *args, **kwargs)`` on a read connection in a worker thread."""
        if kwargs:
            fn = functools.partial(fn, **kwargs)
        async with self._read_slots:
            conn = self._readers.pop()
            try:
                return await trio.to_thread.run_sync(_read_txn, conn, fn, args)
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
