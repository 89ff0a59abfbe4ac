"""What every API handler needs: the state, the caller, the body, paging."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from quart import g, request

from swfed.context import (  # noqa: F401 - the request context, re-exported for handlers
    MAX_PAGE,
    act,
    client_address,
    int_arg,
    json_body,
    limits,
    page,
    page_limit,
    rate_limited,
    read,
    state,
    tenant,
    write,
)
from swfed.core.errors import FederationError, Forbidden, RemoteRefusal, Unauthorized
from swfed.storage.tenants import Tenant, User


@asynccontextmanager
async def recorded_refusal(ten: Tenant, peer: str | None, *, actor: str,
                           room_id: str | None = None) -> AsyncIterator[None]:
    """A local action refused by federation policy is logged and audited, then raised.

    Refusals of what peers send are recorded in ``swfed.federation.inbound``;
    this covers our own users' invites, DMs, posts and backfills that our
    policy, or the peer's answer, stops. Failing to reach the peer is not a
    refusal: it is raised as it is.
    """
    try:
        yield
    except FederationError as exc:
        from swfed.federation.client import TRANSPORT_CODES
        from swfed.federation.inbound import log_refusal

        if exc.code in TRANSPORT_CODES:
            raise
        from swfed.storage.audit import local_refusal_txn

        log_refusal(ten, peer or "(local)", exc, actor=actor, room_id=room_id, local=True)
        details = {"request": f"{request.method} {request.path}", "message": exc.message}
        if isinstance(exc, RemoteRefusal):
            details["refused_by"] = exc.peer  # the peer's decision, not our policy
        await write(local_refusal_txn, ten, state().clock(), actor=actor, peer=peer,
                    room_id=room_id, reason=exc.code, details=details)
        raise


#: The web client's session cookie (see swfed.api.auth): ``__Host-`` under TLS.
SESSION_COOKIES = ("__Host-swfed_session", "swfed_session")
#: The header the web client sets on every request; cross-site pages cannot
#: set it without a CORS preflight, which this server never grants.
CSRF_HEADER = "X-SWFed-CSRF"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_cookie_name() -> str:
    """The one cookie name a session has on this request's scheme.

    Under TLS only ``__Host-swfed_session`` is a session: browsers keep a
    ``__Host-`` cookie only if this very host set it, Secure, on Path=/, so a
    sibling subdomain or a plain-HTTP page (a network attacker's) cannot plant
    one (session fixation). Plain HTTP (behind a proxy that terminates TLS)
    uses ``swfed_session``, which browsers refuse to give a ``__Host-`` name.
    """
    return SESSION_COOKIES[0] if request.scheme == "https" else SESSION_COOKIES[1]


def check_same_origin(*, need_header: bool) -> None:
    """Refuse (403 SW_CSRF) a request that another site's page may have made.

    ``Origin`` and ``Sec-Fetch-Site``, when the browser sends them, must say
    this same host; with ``need_header`` the :data:`CSRF_HEADER` must be there too.
    """
    from urllib.parse import urlsplit

    host = request.headers.get("Host", "").strip().lower()
    origin = request.headers.get("Origin")
    why = None
    if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower() != host):
        why = f"Origin {origin!r} is not this server ({host})"
    elif request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        why = "the browser says it came from another site (Sec-Fetch-Site)"
    elif need_header and request.headers.get(CSRF_HEADER) != "1":
        why = f"a request signed in by cookie must carry the header {CSRF_HEADER}: 1"
    if why is not None:
        raise Forbidden(f"refused as a possible cross-site request: {why}; API clients "
                        "use Authorization: Bearer instead of the cookie", code="SW_CSRF")


async def current_user() -> User:
    """The caller, from ``Authorization: Bearer`` or the web client's session cookie.

    Limits, before the token is looked up: per token (``[limits] client_*``),
    and per client address for tokens this server does not know
    (:data:`swfed.core.ratelimit.UNKNOWN_TOKENS`): a token found in the
    session memory is never charged to its address, one found in the database
    is refunded, so only failed lookups count and a flood of made-up tokens
    gets 429 while valid tokens from the same address go on. (A valid token
    the server has not seen since it started, or since a CLI change emptied
    its memory, waits like the flood when it comes from a flooding address.)

    Raises SW_UNAUTHORIZED, SW_BAD_TOKEN, SW_RATE_LIMITED, and SW_CSRF for a
    state-changing cookie request without the same-origin proof.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    by_cookie = False
    if not header:
        token = request.cookies.get(session_cookie_name(), "")
        scheme, by_cookie = "bearer", bool(token)
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing Authorization: Bearer <token> header; "
                           "create a token with: swfed admin user create LOCAL_ID, "
                           "or sign in with POST /v1/login")
    if by_cookie and request.method not in SAFE_METHODS:
        try:
            check_same_origin(need_header=True)
        except Forbidden:
            # Take the body off the connection first: answering before it has
            # arrived leaves a kept-alive connection stuck for the next request.
            await request.get_data(cache=False)
            raise
    token = token.strip()
    charged = None
    if not g.get("rate_checked"):
        # Before the lookup: a flood of wrong tokens is limited like a right one.
        g.rate_checked = True
        now = trio.current_time()
        if not state().sessions.known(tenant(), token):
            charged = client_address()
            wait = limits().unknown_tokens.check(charged, now)
            if wait > 0:
                raise rate_limited("unknown_token", charged, "too many requests with tokens "
                                   "this server does not know from your address: check the "
                                   "token, or sign in again", wait)
        wait = limits().client.check((tenant().tenant_id, token), now)
        if wait > 0:
            raise rate_limited("client", None, "too many requests with this token "
                               "([limits] client_requests_per_second)", wait)
    user = await state().sessions.user(tenant(), token, state().clock())
    if user is None:
        raise Unauthorized(f"unknown token for {tenant().server_name}: check the token and "
                           "the host you are calling, or sign in again", code="SW_BAD_TOKEN")
    if charged is not None:  # found after all: only failed lookups count
        limits().unknown_tokens.refund(charged, trio.current_time())
    g.user = user
    g.auth_token = token
    g.auth_by_cookie = by_cookie
    return user


async def current_admin() -> User:
    user = await current_user()
    if not user.admin:
        raise Forbidden("this needs a tenant admin's token", code="SW_NOT_ADMIN")
    return user
