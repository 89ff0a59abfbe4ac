"""The request context shared by every HTTP handler, local API and federation alike.

The state, the tenant a request is for, reads and writes on the database,
the JSON body, integer query arguments and paging. Both ``swfed.api`` and
``swfed.federation.inbound`` build on it, so neither imports the other
(layers point one way: core ← storage ← federation ← api ← app).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import trio
from quart import current_app, g, request

from swfed import logs
from swfed.core import addresses
from swfed.core.canonical import decode_json_object
from swfed.core.errors import BadRequest
from swfed.core.ratelimit import Limits, Rate, RateLimited
from swfed.storage.tenants import Tenant

if TYPE_CHECKING:
    from swfed.app import State

T = TypeVar("T")

MAX_PAGE = 200


def state() -> State:
    return current_app.swfed  # type: ignore[attr-defined,no-any-return]


def limits() -> Limits:
    """The process's rate limiters, built from ``[limits]`` on first use."""
    ext = current_app.extensions
    if "swfed_limits" not in ext:
        cfg = state().config.limits
        ext["swfed_limits"] = Limits(
            client=Rate(cfg.client_requests_per_second, cfg.client_burst),
            federation=Rate(cfg.federation_requests_per_second, cfg.federation_burst),
            federation_events=Rate(cfg.federation_events_per_second,
                                   cfg.federation_events_burst),
            refused=Rate(cfg.refused_requests_per_second, cfg.refused_requests_burst),
            streams_per_user=cfg.streams_per_user, max_keys=cfg.max_tracked_keys)
    return ext["swfed_limits"]  # type: ignore[no-any-return]


def rate_limited(kind: str, key_shown: str | None, message: str, wait: float,
                 **fields: Any) -> RateLimited:
    """A 429 for ``kind`` (client, federation, …): counted, logged at most 1/s per kind
    (with ``fields``, and how many lines were held back since)."""
    exc = RateLimited(message, wait)
    ten = getattr(g, "tenant", None)
    name = ten.server_name if ten is not None else ""
    state().metrics.rate_limited.inc(tenant=name, kind=kind)
    suppressed = limits().log.admit(("rate_limited", name, kind), trio.current_time())
    if suppressed is not None:
        logs.log("limits.rate_limited", level="warning", tenant=name, kind=kind,
                 who=key_shown, path=request.path, retry_after=exc.retry_after,
                 suppressed=suppressed, **fields)
    return exc


def client_address() -> str:
    """Where this request comes from: the TCP peer, or, behind one of
    ``[server] trusted_proxies``, the client its X-Forwarded-For names.

    Every rate limit, log line and audit row that names a client address
    reads it here (never ``request.remote_addr``), so a forged header from
    anyone but a trusted proxy changes nothing.
    """
    cached = g.get("client_address")
    if cached is None:
        cached = addresses.client_address(
            request.remote_addr, request.headers.getlist("X-Forwarded-For"),
            state().config.server.trusted_proxies)
        g.client_address = cached
    return cached  # type: ignore[no-any-return]


def tenant() -> Tenant:
    return g.tenant  # type: ignore[no-any-return]


async def read(fn: Callable[..., T], *args: Any) -> T:
    return await state().db.read(fn, *args)


async def write(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await state().db.write(fn, *args, **kwargs)


async def act(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(conn, ctx, *args)`` as this tenant; wake delivery to peers after."""
    return await state().act(tenant(), fn, *args)


async def json_body() -> dict[str, Any]:
    """The request body as a JSON object; raises SW_BAD_JSON."""
    data = await request.get_data(cache=False, as_text=False)
    if not data:
        raise BadRequest("request body: expected a JSON object, got nothing",
                         code="SW_BAD_JSON")
    return decode_json_object(data)


def int_arg(name: str, default: int | None, *, low: int = 0, high: int = 2**62) -> int | None:
    """An integer query argument within [low, high]; raises SW_BAD_PARAM."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: expected an integer, got {raw!r}",
                         code="SW_BAD_PARAM") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}: expected {low}..{high}, got {value}", code="SW_BAD_PARAM")
    return value


def page_limit(default: int = 50) -> int:
    value = int_arg("limit", default, low=1, high=MAX_PAGE)
    assert value is not None
    return value


def page(data: list[Any], nxt: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"data": data}
    if nxt is not None:
        out["next"] = str(nxt)
    return out
