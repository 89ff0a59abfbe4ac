"""The request context shared by every HTTP handler, local API and federation alike.

The state, the tenant a request is for, reads and writes on the database,
the JSON body, integer query arguments and paging. Both ``swfed.api`` and
``swfed.federation.inbound`` build on it, so neither imports the other
(layers point one way: core ← storage ← federation ← api ← app).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from quart import current_app, g, request

from swfed.core.canonical import decode_json_object
from swfed.core.errors import BadRequest
from swfed.storage.tenants import Tenant

if TYPE_CHECKING:
    from swfed.app import State

T = TypeVar("T")

MAX_PAGE = 200


def state() -> State:
    return current_app.swfed  # type: ignore[attr-defined,no-any-return]


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
