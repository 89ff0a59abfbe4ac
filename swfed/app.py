"""The quart-trio app factory: routing, tenants by Host, the error boundary.

This is the one place where a :class:`~swfed.core.errors.SwfedError` (or a
framework HTTP error) becomes ``{"error": {"code", "message"}}``; handlers
only raise. Anything unexpected is logged with its traceback and answered
``500 SW_INTERNAL`` without details: a bug, never a data path.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import trio
from quart import Response, g, request
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import TrioBody, TrioRequest
from werkzeug.exceptions import HTTPException

from swfed import logs
from swfed.config import Config
from swfed.core.errors import BadRequest, StorageUnavailable, SwfedError
from swfed.core.ids import canonical_server_name
from swfed.metrics import Metrics
from swfed.storage import tenants as tenants_db
from swfed.storage.db import Database
from swfed.storage.files import read_stamp_at
from swfed.storage.sessions import SessionCache
from swfed.storage.tenants import Tenant
from swfed.storage.touched import Touched

T = TypeVar("T")

def now_ms() -> int:
    return int(time.time() * 1000)


class Notifier:
    """Wakes the streams of a tenant whose stream moved (the commit hook says which)."""

    def __init__(self) -> None:
        self._events: dict[int, trio.Event] = {}

    def current(self, tenant_id: int) -> trio.Event:
        """Take this *before* reading, then wait on it: no wake-up is lost."""
        event = self._events.get(tenant_id)
        if event is None:
            event = self._events[tenant_id] = trio.Event()
        return event

    def wake(self, tenant_ids: set[int]) -> None:
        for tenant_id in tenant_ids:
            event = self._events.pop(tenant_id, None)
            if event is not None:
                event.set()

    def committed(self, touched: Touched) -> None:
        """The commit hook: wake the streams of the tenants whose stream moved."""
        self.wake(touched.streams)


class TenantDirectory:
    """server_name -> Tenant, in memory; requests are routed by their Host.

    A known Host costs a dict lookup. A tenant created by the CLI while the
    server runs (it writes the SQLite file directly) must be served from its
    very first request, never by the default tenant. The CLI bumps a stamp
    file next to the database after its commit
    (:func:`~swfed.storage.tenants.bump_tenants_stamp`); a Host we do not know
    costs one ``stat()`` of that file, and only a changed stamp reloads the
    table. Reloads are coalesced, one in flight at a time, and a request that
    saw a changed stamp waits for a reload that *started after it looked*, so
    it sees every tenant committed before the stamp moved. The periodic
    :meth:`refresh` of the key scheduler stays as the safety net for tenants
    added some other way.

    Code that must act when a tenant appears (loading or generating its
    signing key) registers with :meth:`on_new_tenants`; it runs before the
    request that revealed the tenant is routed.
    """

    def __init__(self, db: Database, default_name: str, *,
                 federation_enabled: bool = True) -> None:
        self._db = db
        self._default_name = default_name
        #: [federation] enabled = false switches federation off for every tenant.
        self._federation_enabled = federation_enabled
        self._by_name: dict[str, Tenant] = {}
        self._by_id: dict[int, Tenant] = {}
        self._loaded = False
        self._stamp: tenants_db.Stamp = None
        self._stamp_path = tenants_db.tenants_stamp_path(db.path)
        self._reload_lock = trio.Lock()
        self._reloads_started = 0
        self._reloads_done = 0
        self._listeners: list[Callable[[list[Tenant]], Awaitable[None]]] = []
        #: Reloads caused by a changed stamp (tests, metrics).
        self.reloads = 0

    def on_new_tenants(self, listener: Callable[[list[Tenant]], Awaitable[None]]) -> None:
        """Await ``listener(tenants)`` whenever a reload finds tenants not seen before."""
        self._listeners.append(listener)

    async def refresh(self) -> None:
        """Reload every tenant (policy changes, new tenants)."""
        stamp = read_stamp_at(self._stamp_path)
        tenants = await self._db.read(tenants_db.list_tenants_txn)
        if not self._federation_enabled:
            tenants = [attrs.evolve(t, federation_enabled=False,
                                    policy=attrs.evolve(t.policy, federation_enabled=False))
                       for t in tenants]
        new = [t for t in tenants if t.server_name not in self._by_name]
        if new and self._loaded:
            # Before the new tenants are routed to: a request that finds one
            # must find it ready (its key loaded), whoever reloaded first.
            for listener in self._listeners:
                await listener(new)
            logs.log("tenant.discovered", tenants=[t.server_name for t in new])
        self._by_name = {t.server_name: t for t in tenants}
        self._by_id = {t.tenant_id: t for t in tenants}
        self._stamp = stamp
        self._loaded = True

    async def _catch_up(self) -> None:
        """Return once the directory holds every tenant the stamp announced so far."""
        if read_stamp_at(self._stamp_path) == self._stamp:
            return
        wanted = self._reloads_started + 1  # a reload that starts after we looked
        async with self._reload_lock:
            if self._reloads_done >= wanted:
                return  # such a reload ran while we waited for the lock
            self._reloads_started += 1
            generation = self._reloads_started
            try:
                self.reloads += 1
                await self.refresh()
            finally:
                self._reloads_done = generation

    @property
    def default(self) -> Tenant:
        return self._by_name[self._default_name]

    def all(self) -> list[Tenant]:
        return list(self._by_name.values())

    def get(self, server_name: str) -> Tenant | None:
        return self._by_name.get(server_name)

    def by_id(self, tenant_id: int) -> Tenant | None:
        return self._by_id.get(tenant_id)

    async def lookup(self, server_name: str) -> Tenant | None:
        """A tenant by exact name; an unknown name checks for tenants created since."""
        tenant = self._by_name.get(server_name)
        if tenant is None:
            await self._catch_up()
            tenant = self._by_name.get(server_name)
        return tenant

    def _cached_for_host(self, host: str) -> Tenant | None:
        tenant = self._by_name.get(host)
        if tenant is None and ":" in host and not host.endswith("]"):
            tenant = self._by_name.get(host.rsplit(":", 1)[0])
        return tenant

    async def for_host(self, host: str) -> Tenant:
        """The tenant a Host header names: exact, then without port, else default.

        The name is made canonical first (``Chat.Example.com.:443`` is
        ``chat.example.com``); a Host that is no server name at all is
        refused before routing (:class:`HostCheck`).
        """
        host = host.strip()
        try:
            host = canonical_server_name(host)
        except BadRequest:
            host = host.lower()
        tenant = self._cached_for_host(host)
        if tenant is None:
            await self._catch_up()
            tenant = self._cached_for_host(host)
        return tenant or self.default


class HostCheck:
    """ASGI middleware: a ``Host`` header that names no server is 400 ``SW_BAD_HOST``.

    It runs before quart, whose URL routing turns such a Host (an empty or
    over-long label) into an unhandled error: a bare 500 outside our error
    boundary. No Host (HTTP/1.0) is let through to the default tenant.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            hosts = [v for k, v in scope.get("headers", ()) if k.lower() == b"host"]
            host = hosts[0].decode("latin-1").strip() if hosts else ""
            why = None
            if len(hosts) > 1:
                why = "more than one Host header"
            elif host:
                try:
                    canonical_server_name(host)
                except BadRequest as exc:
                    why = exc.message
            if why is not None:
                logs.log("request.refused", level="info", method=scope.get("method"),
                         path=str(scope.get("path", ""))[:200], code="SW_BAD_HOST", status=400)
                if scope["type"] == "http":
                    await _send_error(send, SwfedError(
                        f"Host header: {why}; call this server by its name",
                        code="SW_BAD_HOST", status=400))
                return
        await self.app(scope, receive, send)


async def _send_error(send: Any, exc: SwfedError) -> None:
    body = _dumps(exc.to_json()).encode("utf-8")
    await send({"type": "http.response.start", "status": exc.status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


@attrs.define
class State:
    """Everything a request handler may reach, hung on ``app.swfed``."""

    config: Config
    db: Database
    tenants: TenantDirectory
    notifier: Notifier
    clock: Callable[[], int] = now_ms
    #: swfed.federation.service.Federation once the server runs.
    federation: Any = None
    metrics: Metrics = attrs.Factory(Metrics)
    #: Who tokens belong to, remembered (swfed.storage.sessions).
    sessions: SessionCache = attrs.Factory(lambda self: SessionCache(self.db),
                                           takes_self=True)

    async def act(self, tenant: Tenant, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, ctx, *args)`` as ``tenant`` (the commit hook wakes what it touched)."""
        from swfed.storage.context import Ctx

        sign = self.federation.signer(tenant) if self.federation else None
        return await self.db.write(fn, Ctx(tenant, self.clock(), sign), *args)


#: How long a refusal waits for the rest of a body it did not read (s).
DRAIN_SECONDS = 2.0


async def _drain_body() -> None:
    """Take an unread request body off the connection before answering a refusal.

    A refusal raised before the body was read (no token, 429, a bad
    signature header) would otherwise leave it on a kept-alive connection,
    which the server then drops under the client's next request. Bounded:
    at most ``max_request_bytes`` and :data:`DRAIN_SECONDS`.
    """
    if request.method in ("GET", "HEAD", "OPTIONS") and not request.content_length:
        return
    with trio.move_on_after(DRAIN_SECONDS):
        try:
            await request.get_data(cache=False)
        except Exception:  # over the size limit, or the client went away: nothing to keep
            pass


def _error_response(exc: SwfedError) -> Response:
    response = Response(_dumps(exc.to_json()), status=exc.status,
                        content_type="application/json")
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int):
        response.headers["Retry-After"] = str(retry_after)
    return response


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


_HTTP_CODES = {
    400: "SW_BAD_REQUEST",
    404: "SW_NOT_FOUND",
    405: "SW_METHOD_NOT_ALLOWED",
    408: "SW_REQUEST_TIMEOUT",
    413: "SW_REQUEST_TOO_LARGE",
}


#: The one route whose body is not bound by ``[server] max_request_bytes``: an
#: upload is streamed to disk and bound by ``[media] max_upload_bytes``.
MEDIA_UPLOAD_PATH = "/v1/media"


#: Bytes of an upload read off the connection ahead of the handler writing them:
#: past this the connection is not read until the handler catches up.
UPLOAD_AHEAD_BYTES = 4 * 1024 * 1024


class BoundedBody(TrioBody):
    """A request body the connection fills only :data:`UPLOAD_AHEAD_BYTES` ahead.

    quart's own body takes whatever the client sends as fast as it comes and
    buffers it until the handler reads it: an upload faster than the disk
    would be held in memory. This one makes the reader wait (:meth:`room`)."""

    def __init__(self, expected: int | None, limit: int | None) -> None:
        super().__init__(expected, limit)
        self._drained = trio.Event()

    async def __anext__(self) -> bytes:
        data = await super().__anext__()
        self._drained.set()
        return data

    def __await__(self) -> Any:
        # read whole (a refusal draining the body): bounded by the upload limit, not paced
        self._whole = True
        self._drained.set()
        return super().__await__()

    async def room(self) -> None:
        while (len(self._data) >= UPLOAD_AHEAD_BYTES and not self._complete.is_set()
               and not getattr(self, "_whole", False)):
            self._drained = trio.Event()
            await self._drained.wait()


def _request_class(upload_limit: int) -> type[TrioRequest]:
    class SwfedRequest(TrioRequest):
        """quart's MAX_CONTENT_LENGTH is one limit for every route; uploads get theirs."""

        def __init__(self, method: str, scheme: str, path: str, *args: Any,
                     **kwargs: Any) -> None:
            upload = method == "POST" and path == MEDIA_UPLOAD_PATH
            if upload:
                kwargs["max_content_length"] = upload_limit
            super().__init__(method, scheme, path, *args, **kwargs)
            if upload:
                self.body = BoundedBody(self.content_length, upload_limit)

    return SwfedRequest


class _Connection(TrioASGIHTTPConnection):
    """quart-trio's connection, but a :class:`BoundedBody` is filled with backpressure."""

    async def handle_messages(self, nursery: trio.Nursery, request: Any,  # type: ignore[override]
                              receive: Any) -> None:
        body = request.body
        while True:
            message = await receive()
            if message["type"] == "http.request":
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body.set_complete()
                elif isinstance(body, BoundedBody):
                    await body.room()
            elif message["type"] == "http.disconnect":
                break
        nursery.cancel_scope.cancel()


def create_app(state: State) -> QuartTrio:
    app = QuartTrio("swfed")
    app.config["MAX_CONTENT_LENGTH"] = state.config.server.max_request_bytes
    app.request_class = _request_class(state.config.media.max_upload_bytes)
    app.asgi_http_class = _Connection  # type: ignore[assignment]
    app.config["JSON_SORT_KEYS"] = False
    app.config["BODY_TIMEOUT"] = 30
    app.swfed = state  # type: ignore[attr-defined]

    @app.before_request
    async def _route_tenant() -> None:
        g.tenant = await state.tenants.for_host(request.headers.get("Host", ""))

    @app.errorhandler(SwfedError)
    async def _swfed_error(exc: SwfedError) -> Response:
        if isinstance(exc, StorageUnavailable):
            # One line a minute from the database (storage.unavailable), not one
            # per request: a full disk must not flood the log it cannot write.
            return _error_response(exc)
        logs.log("request.refused", level="info", method=request.method, path=request.path,
                 code=exc.code, status=exc.status,
                 tenant=getattr(g, "tenant", None) and g.tenant.server_name)
        await _drain_body()
        return _error_response(exc)

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = _HTTP_CODES.get(status, f"SW_HTTP_{status}")
        if status == 404:
            message = f"no such endpoint: {request.method} {request.path}"
        elif status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        elif status == 413:
            message = (f"request body over the limit of {state.config.server.max_request_bytes}"
                       " bytes (server.max_request_bytes)")
        else:
            message = exc.description or exc.name
        return _error_response(SwfedError(message, code=code, status=status))

    @app.errorhandler(Exception)
    async def _internal(exc: Exception) -> Response:
        logs.log_exception("request.internal_error", method=request.method, path=request.path)
        return _error_response(SwfedError("internal error; the server log has the details",
                                          code="SW_INTERNAL", status=500))

    from swfed.api import admin, me, rooms, search, stream
    from swfed.federation import inbound

    for module in (me, rooms, stream, search, admin, inbound):
        app.register_blueprint(module.bp)
    from swfed.api import calls, ops

    app.register_blueprint(ops.bp)
    app.register_blueprint(calls.bp)
    from swfed.api import auth, doctor_api, media, web
    from swfed.federation import media as fed_media

    for module in (auth, doctor_api, web, media, fed_media):
        app.register_blueprint(module.bp)
    app.asgi_app = HostCheck(app.asgi_app)  # type: ignore[method-assign]
    return app
