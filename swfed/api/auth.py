"""Signing in with a password: ``POST /v1/login``, ``POST /v1/logout``.

A login checks the Argon2id hash (off the event loop), issues an ordinary
bearer token and also sets it as the web client's session cookie: HttpOnly
(page scripts never see it), SameSite=Strict, Path=/, and under TLS Secure
with the ``__Host-`` prefix. API clients use the token from the answer.

Cross-site request forgery: a cookie-authenticated request that changes
anything must carry ``X-SWFed-CSRF: 1`` (another site cannot set a custom
header without a CORS preflight, which this server never grants) and, when
the browser sends them, an ``Origin`` / ``Sec-Fetch-Site`` naming this host
(:func:`swfed.api.common.check_same_origin`). The login itself checks the
origin too, so no other site can sign a visitor in to an account of its
choosing.

Failed logins answer one code, ``SW_LOGIN_FAILED``, whichever half was
wrong, in the same time either way.

Limits (the rule and its reasons: :mod:`swfed.core.login`). An attempt is
counted before Argon2 runs: it reserves its place in the counts in the event
loop, with no ``await`` between the check and the reservation, so concurrent
attempts see each other; a success forgives it. Per (account, client
address) 5 failures in 5 minutes; per address 20, per account 30, which an
address that signed in to the account within 30 days does not meet, so
nobody else's failures keep people out from where they usually sign in. At
most 2 attempts per account are verified at once, and overall
:func:`~swfed.core.login.verification_slots` (4 of Argon2's 64 MiB: 256 MiB
at most) run while up to 4 per slot wait; anything beyond is refused.
Every refusal is 429 ``SW_RATE_LIMITED`` with ``Retry-After`` (whole seconds,
at least 1), a ``limits.rate_limited`` log line (``kind: login``, the
``reason`` and ``address``; at most about one a second, with ``suppressed``)
and no Argon2 work.
"""

from __future__ import annotations

from typing import Any

import trio
from quart import Blueprint, Response, current_app, g, jsonify, request

from swfed import logs
from swfed.api.common import (
    check_same_origin,
    client_address,
    current_user,
    json_body,
    rate_limited,
    read,
    session_cookie_name,
    state,
    tenant,
    write,
)
from swfed.core.errors import BadRequest, Unauthorized
from swfed.core.ids import LOCAL_ID_RE
from swfed.core.login import (
    WAITING_PER_SLOT,
    Attempt,
    LoginLimiter,
    Outcome,
    Reason,
    verification_slots,
)
from swfed.core.ratelimit import RateLimited
from swfed.storage import passwords as passwords_db

bp = Blueprint("auth", __name__)

#: A session cookie lives as long as its login session on the server.
SESSION_MAX_AGE = passwords_db.SESSION_DAYS * 24 * 3600
#: What a refused sign-in is told, by reason (then "try again in N s").
REFUSALS: dict[Reason | str, str] = {
    "pair": "too many failed sign-ins to this account from your address",
    "address": "too many failed sign-ins from your address",
    "account": "too many failed sign-ins to this account from addresses it has not signed "
               "in from lately (a device that signed in before can still sign in)",
    "busy": "other sign-ins to this account are being checked",
    "overloaded": "the server is checking many passwords at once",
}
#: The account key of names that cannot be a user (never longer than this).
NO_SUCH_NAME = "(not a user name)"


def limiter() -> LoginLimiter:
    ext = current_app.extensions
    if "swfed_login_limiter" not in ext:
        ext["swfed_login_limiter"] = LoginLimiter(max_keys=state().config.limits.max_tracked_keys)
    return ext["swfed_login_limiter"]  # type: ignore[no-any-return]


def verifications() -> trio.CapacityLimiter:
    """Argon2 computations running at once, over every tenant and account."""
    ext = current_app.extensions
    if "swfed_login_verifications" not in ext:
        ext["swfed_login_verifications"] = trio.CapacityLimiter(
            verification_slots(passwords_db.ARGON2_MEMORY_KIB))
    return ext["swfed_login_verifications"]  # type: ignore[no-any-return]


def _refused(local_id: str, address: str, reason: str, wait: float) -> RateLimited:
    return rate_limited("login", f"@{local_id}", REFUSALS[reason], wait, reason=reason,
                        address=address)


def _login_fields(body: dict[str, Any]) -> tuple[str, str]:
    unknown = sorted(set(body) - {"local_id", "password"})
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; POST /v1/login takes local_id and "
                         "password", code="SW_UNKNOWN_FIELD")
    for name in ("local_id", "password"):
        if name not in body:
            raise BadRequest(f"{name}: required", code="SW_MISSING_FIELD")
        if not isinstance(body[name], str):
            raise BadRequest(f"{name}: expected a string", code="SW_BAD_TYPE")
    local_id = body["local_id"].strip().removeprefix("@").lower()
    server = tenant().server_name
    if local_id.endswith(":" + server):
        local_id = local_id[: -len(server) - 1]
    return local_id, body["password"]


def _failed() -> Unauthorized:
    return Unauthorized("wrong user name or password", code="SW_LOGIN_FAILED")


def _set_cookie(response: Response, token: str, max_age: int) -> None:
    response.set_cookie(session_cookie_name(), token, max_age=max_age, path="/",
                        secure=request.scheme == "https", httponly=True, samesite="Strict")


async def _verify(attempt: Attempt, local_id: str, password: str) -> tuple[bool, str | None]:
    """Check the password of a reserved attempt: (right, a fresher hash to store).

    Settles the attempt whatever happens: failed once Argon2 has said no,
    forgiven when right or never evaluated (storage trouble, refused for
    overload, the client gone).
    """
    ten, lim = tenant(), limiter()
    outcome: Outcome = "unevaluated"
    try:
        stored = None
        if local_id != NO_SUCH_NAME:
            stored = await read(passwords_db.password_hash_txn, ten, local_id)
        slots = verifications()
        if slots.statistics().tasks_waiting >= WAITING_PER_SLOT * int(slots.total_tokens):
            raise _refused(local_id, attempt.address, "overloaded", 1.0)
        rehashed = None
        async with slots:
            ok = await trio.to_thread.run_sync(passwords_db.verify_password, stored, password)
            outcome = "ok" if ok and stored is not None else "failed"
            if outcome == "ok" and stored is not None and passwords_db.needs_rehash(stored):
                rehashed = await trio.to_thread.run_sync(passwords_db.hash_password, password)
        return outcome == "ok", rehashed
    finally:
        lim.settle(attempt, outcome, trio.current_time())


@bp.post("/v1/login")
async def login() -> Response:
    """``{local_id, password}`` → ``{token, id, fqid, display_name, admin}`` and the cookie."""
    body = await json_body()  # read first: see swfed.api.common.current_user
    check_same_origin(need_header=False)
    local_id, password = _login_fields(body)
    if not LOCAL_ID_RE.match(local_id):
        local_id = NO_SUCH_NAME  # fails like a wrong password, and keys stay short
    ten = tenant()
    address = client_address()
    # No await from the check to the reservation: concurrent attempts count each other.
    attempt = limiter().reserve((ten.server_name, local_id), address, trio.current_time())
    if not isinstance(attempt, Attempt):
        raise _refused(local_id, address, attempt.reason, attempt.retry_after)
    ok, rehashed = await _verify(attempt, local_id, password)
    if not ok:
        logs.log("login.failed", level="info", tenant=ten.server_name, local_id=local_id,
                 address=address)
        raise _failed()
    token = await write(passwords_db.login_txn, ten, local_id, state().clock(), rehashed)
    from swfed.storage.tenants import user_txn

    user = await read(user_txn, ten, local_id)
    assert user is not None
    logs.log("login.ok", tenant=ten.server_name, local_id=local_id, address=address)
    response = jsonify({"token": token, "id": f"@{local_id}", "fqid": user.fqid,
                        "display_name": user.display_name, "admin": user.admin})
    response.headers["Cache-Control"] = "no-store"
    _set_cookie(response, token, SESSION_MAX_AGE)
    return response


@bp.post("/v1/logout")
async def logout() -> Response:
    """Revoke the token this request used (cookie or bearer) and clear the cookie."""
    user = await current_user()
    await write(passwords_db.revoke_token_txn, tenant(), g.auth_token)
    logs.log("logout", tenant=tenant().server_name, local_id=user.local_id)
    response = jsonify({"logged_out": True})
    _set_cookie(response, "", 0)
    return response

