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
wrong, in the same time either way, and are rate-limited per account and per
client address (:class:`LoginLimiter`, 429 ``SW_RATE_LIMITED``).
"""

from __future__ import annotations

import collections
import math
from typing import Any

import trio
from quart import Blueprint, Response, current_app, g, jsonify, request

from swfed import logs
from swfed.api.common import (
    SESSION_COOKIES,
    check_same_origin,
    current_user,
    json_body,
    read,
    state,
    tenant,
    write,
)
from swfed.core.errors import BadRequest, SwfedError, Unauthorized
from swfed.core.ids import LOCAL_ID_RE
from swfed.storage import passwords as passwords_db

bp = Blueprint("auth", __name__)

#: A session cookie lives as long as its login session on the server.
SESSION_MAX_AGE = passwords_db.SESSION_DAYS * 24 * 3600
#: Failed logins allowed per account, and per client address, in WINDOW seconds.
MAX_FAILURES_PER_ACCOUNT = 5
MAX_FAILURES_PER_ADDRESS = 20
WINDOW_SECONDS = 300.0
#: Keys remembered at most (oldest dropped first): memory stays bounded.
MAX_KEYS = 10_000


class LoginLimiter:
    """Sliding-window counts of failed logins, by account and by address."""

    def __init__(self) -> None:
        self._failures: collections.OrderedDict[tuple[str, str], collections.deque[float]] = (
            collections.OrderedDict())

    def _recent(self, key: tuple[str, str], now: float) -> collections.deque[float]:
        times = self._failures.get(key)
        if times is None:
            return collections.deque()
        while times and times[0] <= now - WINDOW_SECONDS:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, keys: list[tuple[tuple[str, str], int]], now: float) -> float:
        """Seconds until another try is allowed (0 when it is allowed now)."""
        wait = 0.0
        for key, limit in keys:
            times = self._recent(key, now)
            if len(times) >= limit:
                wait = max(wait, times[len(times) - limit] + WINDOW_SECONDS - now)
        return wait

    def failed(self, keys: list[tuple[tuple[str, str], int]], now: float) -> None:
        for key, _ in keys:
            times = self._recent(key, now)
            times.append(now)
            self._failures[key] = times
            self._failures.move_to_end(key)
        while len(self._failures) > MAX_KEYS:
            self._failures.popitem(last=False)

    def succeeded(self, account: tuple[str, str]) -> None:
        self._failures.pop(account, None)


def limiter() -> LoginLimiter:
    ext = current_app.extensions
    if "swfed_login_limiter" not in ext:
        ext["swfed_login_limiter"] = LoginLimiter()
    return ext["swfed_login_limiter"]  # type: ignore[no-any-return]


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
    secure = request.scheme == "https"
    name = SESSION_COOKIES[0] if secure else SESSION_COOKIES[1]
    response.set_cookie(name, token, max_age=max_age, path="/", secure=secure, httponly=True,
                        samesite="Strict")


@bp.post("/v1/login")
async def login() -> Response:
    """``{local_id, password}`` → ``{token, id, fqid, display_name, admin}`` and the cookie."""
    body = await json_body()  # read first: see swfed.api.common.current_user
    check_same_origin(need_header=False)
    local_id, password = _login_fields(body)
    ten = tenant()
    now = trio.current_time()
    account = (ten.server_name, local_id)
    keys = [(account, MAX_FAILURES_PER_ACCOUNT),
            (("addr", request.remote_addr or "?"), MAX_FAILURES_PER_ADDRESS)]
    lim = limiter()
    wait = lim.retry_after(keys, now)
    if wait > 0:
        logs.log("login.rate_limited", tenant=ten.server_name, local_id=local_id)
        raise SwfedError(f"too many failed sign-ins: try again in {math.ceil(wait)} s",
                         code="SW_RATE_LIMITED", status=429,
                         details={"retry_after": math.ceil(wait)})
    stored = None
    if LOCAL_ID_RE.match(local_id):
        stored = await read(passwords_db.password_hash_txn, ten, local_id)
    ok = await trio.to_thread.run_sync(passwords_db.verify_password, stored, password)
    if not ok or stored is None:
        lim.failed(keys, now)
        logs.log("login.failed", level="info", tenant=ten.server_name, local_id=local_id)
        raise _failed()
    lim.succeeded(account)
    rehashed = None
    if passwords_db.needs_rehash(stored):
        rehashed = await trio.to_thread.run_sync(passwords_db.hash_password, password)
    token = await write(passwords_db.login_txn, ten, local_id, state().clock(), rehashed)
    from swfed.storage.tenants import user_txn

    user = await read(user_txn, ten, local_id)
    assert user is not None
    logs.log("login.ok", tenant=ten.server_name, local_id=local_id)
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

