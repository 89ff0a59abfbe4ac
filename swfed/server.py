"""The process: one ``trio.run``, one nursery (DESIGN §1).

::

    serve()
     ├─ signal watcher: SIGINT/SIGTERM set the shutdown event
     ├─ HTTP: hypercorn's trio worker serving the quart-trio app
     └─ background services (federation sender, key scheduler, come-back
        announcements, housekeeping, the systemd watchdog)

One shutdown path, as in hypercorn: the shutdown event stops the listener,
in-flight requests get ``graceful_timeout_seconds`` to finish, then the
nursery is cancelled and the database writer drains and closes. Writes that
were acknowledged had already committed, so nothing acknowledged is lost.

Start-up mistakes (unreadable TLS or CA files, an unwritable data_dir, a
port in use) are found before anything runs (``swfed.startup``) and end the
start with one line. Under systemd the process says READY=1 once it
listens, pings the watchdog and says STOPPING=1 when it drains
(``swfed.sdnotify``).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve as hypercorn_serve

from swfed import logs, sdnotify
from swfed.app import Notifier, State, TenantDirectory, create_app, now_ms
from swfed.backups import run_backups
from swfed.config import Config, ConfigError
from swfed.core.errors import StorageUnavailable
from swfed.federation.announce import run_announcer
from swfed.federation.client import FederationClient
from swfed.federation.keys import run_key_scheduler
from swfed.federation.service import Federation
from swfed.housekeeping import run_housekeeping
from swfed.startup import bind_sockets, close_binds, preflight, snapshot_before_migrations
from swfed.storage import tenants as tenants_db
from swfed.storage.db import Database, health_write_txn
from swfed.storage.files import (
    DataDirBusy,
    fix_for,
    lock_data_dir,
    loose_files,
    private_umask,
    unlock_data_dir,
)

#: Background services started after the listener is up; each is
#: ``async fn(state, task_status)``. Federation registers its tasks here.
Service = Callable[..., Awaitable[None]]


def db_path(config: Config) -> Path:
    return config.server.data_dir / "swfed.sqlite3"


#: Test hook: a file holding a page limit for the database writer, so tests
#: without root can fill "the disk" (SQLITE_FULL) and free it again.
MAX_PAGES_FILE_ENV = "SWFED_TEST_MAX_PAGES_FILE"


def open_database(config: Config) -> Database:
    if config.storage.backend == "postgresql":
        from swfed.storage.pg import PgDatabase

        return PgDatabase(config.storage.url, db_path(config),
                          read_connections=config.storage.read_connections,
                          lock_timeout_ms=config.storage.busy_timeout_ms)
    limit_file = os.environ.get(MAX_PAGES_FILE_ENV, "").strip()
    if limit_file:
        logs.log("server.page_limit_hook", level="warning", file=limit_file,
                 message=f"{MAX_PAGES_FILE_ENV} is set: database size capped (tests only)")
    return Database(db_path(config), synchronous=config.storage.synchronous,
                    read_connections=config.storage.read_connections,
                    busy_timeout_ms=config.storage.busy_timeout_ms,
                    page_limit_file=Path(limit_file) if limit_file else None)


def _hypercorn_config(config: Config) -> HyperConfig:
    hc = HyperConfig()
    hc.bind = list(config.server.bind)
    hc.graceful_timeout = config.server.graceful_timeout_seconds
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.keep_alive_timeout = 75
    if config.server.tls.enabled:
        hc.certfile = str(config.server.tls.certfile)
        hc.keyfile = str(config.server.tls.keyfile)
    return hc


async def _watch_signals(shutdown: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            logs.log("server.stopping", signal=signal.Signals(signum).name)
            shutdown.set()
            return


async def _announce_stopping(shutdown: trio.Event) -> None:
    await shutdown.wait()
    # Before the drain: systemd then waits TimeoutStopSec, not the watchdog.
    sdnotify.notify("STOPPING=1", "STATUS=draining requests")


#: Test hook: shift this server's clock (ms) to reproduce skew between peers.
CLOCK_OFFSET_ENV = "SWFED_TEST_CLOCK_OFFSET_MS"


def _clock() -> Callable[[], int]:
    raw = os.environ.get(CLOCK_OFFSET_ENV, "").strip()
    if not raw:
        return now_ms
    offset = int(raw)
    logs.log("server.clock_offset", level="warning", offset_ms=offset,
             message=f"{CLOCK_OFFSET_ENV} is set: this server's clock is shifted (tests only)")
    return lambda: now_ms() + offset


#: While our own database refuses writes, the sender is paused and a probe
#: write is tried this often (seconds); delivery resumes after the first success.
STORAGE_PROBE_SECONDS = 5.0


async def run_sender(state: State,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """The federation sender, paused while our own storage refuses writes.

    A peer queue that cannot record a delivery (our disk is full) must neither
    take the process down nor spin: the sender stops, nothing leaves the
    outbox (every row stays until a delivery is recorded), and it starts
    again, re-reading the outbox, once a probe write commits.
    """
    sender = state.federation.sender
    started = False
    logged_at: float | None = None
    pauses = 0
    while True:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(sender.run)
                if not started:
                    started = True
                    task_status.started()
        except* StorageUnavailable:
            pauses += 1
        sender.queues.clear()  # their tasks ended with the sender's nursery
        now = trio.current_time()
        # At most a line a minute, even if writes fail and succeed by turns.
        loud = logged_at is None or now - logged_at >= 60
        if loud:
            logs.log("federation.sender.paused", level="warning", reason="storage unavailable",
                     pauses=pauses, retry_every_s=STORAGE_PROBE_SECONDS)
            logged_at, pauses = now, 0
        while True:
            await trio.sleep(STORAGE_PROBE_SECONDS)
            try:
                await state.db.write(health_write_txn, state.clock())
                break
            except StorageUnavailable:
                continue
        logs.log("federation.sender.resumed", level="info" if loud else "debug")


async def serve(config: Config, *, services: list[Service] | None = None,
                shutdown: trio.Event | None = None,
                task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the server until SIGINT/SIGTERM (or ``shutdown`` is set)."""
    shutdown = shutdown or trio.Event()
    private_umask()
    preflight(config)
    try:
        lock = lock_data_dir(config.server.data_dir)
    except DataDirBusy as exc:
        raise ConfigError(f"{config.path}: [server] data_dir: {config.server.data_dir} is in "
                          f"use by another swfed (pid {exc.pid or '?'} holds {exc.path}): "
                          "stop it, or give this one its own data_dir") from None
    try:
        await _serve_locked(config, services=services, shutdown=shutdown,
                            task_status=task_status)
    finally:
        unlock_data_dir(lock)


async def _serve_locked(config: Config, *, services: list[Service] | None,
                        shutdown: trio.Event,
                        task_status: trio.TaskStatus[list[str]]) -> None:
    loose = loose_files(config.server.data_dir, db_path(config))
    if loose:
        logs.log("storage.permissions", level="warning",
                 message="the data directory or database can be read by other users of this "
                 "machine, and it holds the signing keys",
                 files={str(p): oct(m) for p, m in loose},
                 fix=fix_for(config.server.data_dir, db_path(config)))
    hyper = _hypercorn_config(config)
    hyper.bind = bind_sockets(config, hyper.backlog)
    try:
        snapshot_before_migrations(config)
    except BaseException:
        close_binds(hyper.bind)
        raise
    db = open_database(config)
    try:
        await db.start()
    except BaseException:
        close_binds(hyper.bind)
        raise
    try:
        await db.write(tenants_db.ensure_default_tenant_txn, config.server.name, now_ms())
        notifier = Notifier()
        db.on_commit(notifier.committed)
        directory = TenantDirectory(db, config.server.name,
                                    federation_enabled=config.federation.enabled)
        await directory.refresh()
        state = State(config=config, db=db, tenants=directory, notifier=notifier,
                      clock=_clock())
        client = FederationClient(config.federation)
        state.federation = Federation(state, client)
        db.on_commit(state.federation.committed)
        directory.on_new_tenants(state.federation.tenants_added)
        app = create_app(state)

        async with client, trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, shutdown)
            nursery.start_soon(_announce_stopping, shutdown)

            async def run_http(task_status: trio.TaskStatus[list[str]]) -> None:
                await hypercorn_serve(app, hyper,
                                      shutdown_trigger=shutdown.wait, task_status=task_status)
                # The listener has drained: stop everything else too.
                nursery.cancel_scope.cancel()

            # Keys first: the descriptor must be right from the first request.
            await nursery.start(run_key_scheduler, state)
            binds = await nursery.start(run_http)
            await nursery.start(run_sender, state)
            await nursery.start(state.federation.repairer.run)
            await nursery.start(state.federation.media.run)
            # Listening and delivering: now tell our peers we are back.
            await nursery.start(run_announcer, state)
            await nursery.start(run_housekeeping, state)
            await nursery.start(run_backups, state)
            for service in services or []:
                await nursery.start(service, state)
            logs.log("server.listening", addresses=binds, server_name=config.server.name,
                     data_dir=str(config.server.data_dir))
            # Migrated, listening, delivering: `systemctl start` may return now.
            sdnotify.notify("READY=1", f"STATUS=listening on {' '.join(binds)}")
            # systemd arms the watchdog once the start is complete, so pings from here on.
            interval = sdnotify.watchdog_interval()
            if interval is not None:
                await nursery.start(sdnotify.run_watchdog, interval)
            task_status.started(binds)
    finally:
        with trio.CancelScope(shield=True):
            await db.close()
        logs.log("server.stopped")


#: The cyclic collector's first threshold (Python's default is 700 allocations).
GC_GEN0_THRESHOLD = 10_000


def run(config: Config) -> None:
    """Blocking entry point used by the CLI."""
    tune_gc()
    trio.run(partial(serve, config))


def tune_gc() -> None:
    """Shorter and fewer pauses of Python's cyclic garbage collector.

    Every module, class and function loaded by now lives as long as the
    process: ``gc.freeze()`` moves them out of the collector's sight, so a
    full collection looks only at what requests left behind. The first
    generation is collected after 10,000 new objects instead of 700: a
    request allocates hundreds, and reference counting frees most of them
    long before a collection would look. A collection stops every request;
    at 500 messages/s (scripts/bench --mode latency) the sender spent 215 ms
    in them per run with pauses up to 27 ms, and 16 ms with none over 6 ms
    after this (POST p99 55 -> 30 ms, send -> peer's stream p99 95 -> 65 ms).
    """
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
    gc.freeze()
