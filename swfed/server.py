"""The process: one ``trio.run``, one nursery (DESIGN §1).

::

    serve()
     ├─ signal watcher: SIGINT/SIGTERM set the shutdown event
     ├─ HTTP: hypercorn's trio worker serving the quart-trio app
     └─ background services (federation sender, key scheduler, housekeeping)

One shutdown path, as in hypercorn: the shutdown event stops the listener,
in-flight requests get ``graceful_timeout_seconds`` to finish, then the
nursery is cancelled and the database writer drains and closes. Writes that
were acknowledged had already committed, so nothing acknowledged is lost.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve as hypercorn_serve

from swfed import logs
from swfed.app import Notifier, State, TenantDirectory, create_app, now_ms
from swfed.config import Config
from swfed.federation.client import FederationClient
from swfed.federation.keys import run_key_scheduler
from swfed.federation.service import Federation
from swfed.housekeeping import run_housekeeping
from swfed.storage import tenants as tenants_db
from swfed.storage.db import Database

#: Background services started after the listener is up; each is
#: ``async fn(state, task_status)``. Federation registers its tasks here.
Service = Callable[..., Awaitable[None]]


def db_path(config: Config) -> Path:
    return config.server.data_dir / "swfed.sqlite3"


def open_database(config: Config) -> Database:
    return Database(db_path(config), synchronous=config.storage.synchronous,
                    read_connections=config.storage.read_connections,
                    busy_timeout_ms=config.storage.busy_timeout_ms)


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


async def serve(config: Config, *, services: list[Service] | None = None,
                shutdown: trio.Event | None = None,
                task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the server until SIGINT/SIGTERM (or ``shutdown`` is set)."""
    shutdown = shutdown or trio.Event()
    db = open_database(config)
    await db.start()
    try:
        await db.write(tenants_db.ensure_default_tenant_txn, config.server.name, now_ms())
        notifier = Notifier()
        db.on_commit(notifier.wake)
        directory = TenantDirectory(db, config.server.name,
                                    federation_enabled=config.federation.enabled)
        await directory.refresh()
        state = State(config=config, db=db, tenants=directory, notifier=notifier,
                      clock=_clock())
        client = FederationClient(config.federation)
        state.federation = Federation(state, client)
        app = create_app(state)

        async with client, trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, shutdown)

            async def run_http(task_status: trio.TaskStatus[list[str]]) -> None:
                await hypercorn_serve(app, _hypercorn_config(config),
                                      shutdown_trigger=shutdown.wait, task_status=task_status)
                # The listener has drained: stop everything else too.
                nursery.cancel_scope.cancel()

            # Keys first: the descriptor must be right from the first request.
            await nursery.start(run_key_scheduler, state)
            binds = await nursery.start(run_http)
            await nursery.start(state.federation.sender.run)
            await nursery.start(state.federation.repairer.run)
            await nursery.start(run_housekeeping, state)
            for service in services or []:
                await nursery.start(service, state)
            logs.log("server.listening", addresses=binds, server_name=config.server.name,
                     data_dir=str(config.server.data_dir))
            task_status.started(binds)
    finally:
        with trio.CancelScope(shield=True):
            await db.close()
        logs.log("server.stopped")


def run(config: Config) -> None:
    """Blocking entry point used by the CLI."""
    trio.run(partial(serve, config))
