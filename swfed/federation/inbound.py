"""What peers call: the descriptor and ``/_scaiwave/federation/v1/*`` (DESIGN §5).

Every federation request is checked in this order, and each refusal is
answered with its own code and logged under the spec's event name; a
refusal of a verified origin is recorded (``fed_rejected``, ``sw_audit``),
one before verification is counted and sampled (see :func:`_refuse`);
nothing of a refused request is stored:

1. ``Authorization: SW-Fed …`` parses and names one of our tenants.
2. Our policy lets the origin in (``federation.policy_rejected``).
3. The origin's signature over the request verifies with its published key,
   within ±60 s (``federation.signature_verify_failed``).

``/send`` then checks each event on its own: shape, the origin server's
signature on the event, and whether it may enter its room. It answers only
after the accepted events have committed. A member's events are ordered as
it sent them: nothing of a ``/send`` naming an earlier event (``after``)
that is not here yet is taken, nor, in a room we host, an event after one
of the same ``/send`` deferred (each answered transient, sent again).
"""

from __future__ import annotations

from typing import Any

import trio
from quart import Blueprint, g, request

from swfed import logs
from swfed.calls import call_token
from swfed.context import client_address, int_arg, limits, rate_limited, read, state
from swfed.core.canonical import decode_json_object
from swfed.core.descriptor import DESCRIPTOR_PATH, FED_PREFIX, PROTOCOL_VERSIONS
from swfed.core.errors import FederationError, NotFound, RemoteRefusal, SwfedError
from swfed.core.events import check_federated_event
from swfed.core.ids import LOCAL_ID_RE, Fqid, is_fqid, is_server_name, parse_participant
from swfed.core.policy import backfill_limit, decide_peer
from swfed.core.rooms import check_relay, check_third_party_room, server_of
from swfed.core.signing import parse_auth_header, signable_or_none
from swfed.federation.client import TRANSPORT_CODES
from swfed.federation.replay import GUARD
from swfed.federation.turns import TURNS, Turn
from swfed.storage import members as members_db
from swfed.storage import room_writes
from swfed.storage import rooms as rooms_db
from swfed.storage import tenants as tenants_db
from swfed.storage.audit import reject_txn
from swfed.storage.context import Ctx
from swfed.storage.refusals import known_peer_txn
from swfed.storage.tenants import Tenant

bp = Blueprint("federation", __name__)

MAX_EVENTS = 100
POLICY_CODES = ("SW_FED_DISABLED", "SW_FED_CLOSED", "SW_FED_PEER_DENIED", "SW_FED_PEER_UNKNOWN",
                "SW_FED_ROOM_NOT_FEDERATABLE", "SW_FED_ROOM_NOT_FEDERATED", "SW_FED_ROOM_FULL",
                "SW_FED_BACKFILL_REFUSED")


def _log_event(exc: FederationError) -> str:
    if isinstance(exc, RemoteRefusal):
        return "federation.refused_by_peer"  # the peer's decision, never one of ours
    if exc.code == "SW_FED_SIGNATURE_MISMATCH":
        return "federation.signature_verify_failed"
    if exc.code in POLICY_CODES:
        return "federation.policy_rejected"
    return "federation.event_rejected"


def log_refusal(tenant: Tenant, peer: str, exc: FederationError, **fields: Any) -> None:
    """Log a refused federation request or event under the spec's event names.

    ``peer`` must be a name we know (it becomes a metric label); refusals of
    a request whose origin was not verified go through :func:`_refuse`.
    """
    if isinstance(exc, RemoteRefusal):
        fields["refused_by"] = exc.peer
    logs.log(_log_event(exc), level="warning", tenant=tenant.server_name, peer=peer,
             reason=exc.code, message=exc.message, **fields)
    if not fields.get("local") and not isinstance(exc, RemoteRefusal):
        state().metrics.rejected.inc(tenant=tenant.server_name, peer=peer, reason=exc.code)


async def _refuse(tenant: Tenant, peer: str, exc: FederationError, *,
                  verified: bool = True) -> FederationError:
    """Record a refused request and return the error to raise.

    A refusal of a ``verified`` origin is logged, counted under its peer and
    stored (``fed_rejected``, ``sw_audit``). A refusal before the origin was
    verified names an origin anyone can claim, so it is counted (under the
    peer only when it is a name we know, see
    :func:`swfed.storage.refusals.known_peer_txn`; else by reason alone),
    logged at most about once a second per (peer we know or none, reason)
    with how many lines were suppressed, and stored as a sample: a burst,
    then one row per ``UNKNOWN_ROW_SECONDS`` per (peer, reason). The admin
    still sees who knocks; a flood adds counts, not rows.
    """
    st = state()
    if not verified:
        now = trio.current_time()
        lim = limits()
        lim.refusals.check(client_address(), now)
        known = is_server_name(peer) and await read(known_peer_txn, tenant, peer)
        if known:
            st.metrics.rejected.inc(tenant=tenant.server_name, peer=peer, reason=exc.code)
        else:
            st.metrics.refused_unauthenticated.inc(tenant=tenant.server_name, reason=exc.code)
        key = (tenant.tenant_id, peer if known else None, exc.code)
        store = lim.refusal_rows.check(key, now) == 0
        suppressed = lim.log.admit(("refused", *key), now)
        if suppressed is not None or store:
            logs.log(_log_event(exc), level="warning", tenant=tenant.server_name,
                     peer=peer[:100], verified=False, reason=exc.code,
                     message=exc.message[:300], path=request.path[:200],
                     address=client_address(), suppressed=suppressed or 0, stored=store)
        if store:
            await st.db.write(reject_txn, tenant, peer[:255], st.clock(), reason=exc.code,
                              message=f"{request.method} {request.path[:200]}: "
                                      f"{exc.message} (origin not verified; from "
                                      f"{client_address()})",
                              action="federation.request.rejected")
        return _as_told(exc, peer)
    log_refusal(tenant, peer, exc, path=request.path)
    await st.db.write(reject_txn, tenant, peer, st.clock(), reason=exc.code,
                      message=f"{request.method} {request.path}: {exc.message}",
                      action="federation.request.rejected")
    return _as_told(exc, peer)


def _as_told(exc: FederationError, peer: str) -> FederationError:
    """The refusal as the peer reads it: what we saw of the network stays in our log.

    Otherwise a caller naming origins of its choice could tell closed, open,
    silent and TLS ports apart through us (a scan oracle).
    """
    if exc.code not in TRANSPORT_CODES:
        return exc
    return FederationError(f"{peer[:100]} could not be reached from here to fetch its keys: "
                           "it must serve its descriptor at /.well-known/scaiwave/server",
                           code=exc.code, status=exc.status)


def _uri() -> str:
    raw = request.scope.get("raw_path") or request.path.encode()
    uri = raw.decode("latin-1")
    qs = request.query_string.decode("latin-1")
    return uri + ("?" + qs if qs else "")


async def authenticated(with_body: bool) -> tuple[Tenant, str, dict[str, Any] | None]:
    """The tenant addressed, the verified origin, and the JSON body if any.

    Before the signature is checked: the header must name canonical server
    names (SW_FED_BAD_SERVER_NAME), and a client address whose requests keep
    being refused waits (429). After it: the peer's request rate, and on
    ``/send`` its event rate ([limits]), 429 SW_RATE_LIMITED with Retry-After.
    """
    st = state()
    fed = st.federation
    now = trio.current_time()
    address = client_address()
    lim = limits()
    if lim.refusals.blocked(address, now) > 0:
        raise rate_limited("federation_refusals", address, "too many refused federation "
                           "requests from this address", lim.refusals.blocked(address, now))
    header = request.headers.get("Authorization")
    try:
        auth = parse_auth_header(header)
        for field, name in (("origin", auth.origin), ("destination", auth.destination)):
            if not is_server_name(name):
                raise FederationError(
                    f"SW-Fed {field} {name[:100]!r} is not a canonical server name: lower "
                    "case, no trailing dot, no :443, a port of 1..65535",
                    code="SW_FED_BAD_SERVER_NAME", status=400)
    except FederationError as exc:
        raise await _refuse(g.tenant, "(unauthenticated)", exc, verified=False) from None
    tenant = await st.tenants.lookup(auth.destination)
    if tenant is None:
        raise await _refuse(g.tenant, auth.origin, FederationError(
            f"{auth.destination} is not served here", code="SW_FED_SIGNATURE_MISMATCH",
            status=401), verified=False)
    g.tenant = tenant
    body = raw = None
    if with_body:
        raw = await request.get_data(cache=False, as_text=False)
        body = decode_json_object(raw)
    try:
        decide_peer(tenant.policy, auth.origin)
        if fed.keyring.current(tenant) is None:
            raise FederationError(f"{tenant.server_name} has no federation key yet",
                                  code="SW_FED_NO_KEY", status=503)
        await fed.authenticate(tenant, request.method, _uri(), body, auth, body=raw)
    except FederationError as exc:
        raise await _refuse(tenant, auth.origin, exc, verified=False) from None
    key = (tenant.tenant_id, auth.origin)
    wait = lim.federation.check(key, trio.current_time())
    if wait > 0:
        raise rate_limited("federation", auth.origin, f"too many requests from "
                           f"{auth.origin} ([limits] federation_requests_per_second)", wait)
    events = body.get("events") if body is not None and request.path.endswith("/send") else None
    if isinstance(events, list) and events:
        wait = lim.federation_events.check(key, trio.current_time(), cost=len(events))
        if wait > 0:
            raise rate_limited("federation_events", auth.origin, f"too many events from "
                               f"{auth.origin} ([limits] federation_events_per_second)", wait)
    await fed.heard_from(tenant, auth.origin)
    return tenant, auth.origin, body


@bp.get(DESCRIPTOR_PATH)
async def descriptor() -> dict[str, Any]:
    st = state()
    return st.federation.keyring.descriptor(g.tenant, st.clock())  # type: ignore[no-any-return]


@bp.get(FED_PREFIX + "/probe")
async def probe() -> dict[str, Any]:
    """What a request from the signing server meets here, for ``swfed doctor``.

    Always 200: our time (for the clock-skew check), our versions, and the
    outcome of the same checks every federation request passes, in order:
    signature header, our policy toward the origin, the origin's signature.
    A refusal is recorded like any other; the probe stores nothing else.
    """
    st = state()
    out: dict[str, Any] = {"server_name": g.tenant.server_name,
                           "protocol_versions": list(PROTOCOL_VERSIONS)}
    try:
        tenant, origin, _ = await authenticated(with_body=False)
        out.update(server_name=tenant.server_name, result={"ok": True, "origin": origin})
    except FederationError as exc:
        out["result"] = {"ok": False, "code": exc.code, "message": exc.message}
    out["server_time_ms"] = st.clock()
    return out


@bp.post(FED_PREFIX + "/send")
async def send() -> dict[str, Any]:
    tenant, origin, body = await authenticated(with_body=True)
    assert body is not None
    turn = TURNS.take((tenant.tenant_id, origin))
    try:
        return await _send(tenant, origin, body, turn)
    finally:
        turn.end()


async def _send(tenant: Tenant, origin: str, body: dict[str, Any], turn: Turn) -> dict[str, Any]:
    st = state()
    if body.get("origin") != origin:
        raise await _refuse(tenant, origin, FederationError(
            f"body origin {body.get('origin')!r} is not the signing server {origin}",
            code="SW_FED_BAD_REQUEST", status=400))
    events = body.get("events")
    if not isinstance(events, list) or len(events) > MAX_EVENTS:
        raise await _refuse(tenant, origin, FederationError(
            f"events must be a list of at most {MAX_EVENTS}", code="SW_FED_BAD_REQUEST",
            status=400))

    results: dict[str, Any] = {}
    refused: list[tuple[str, str | None, FederationError]] = []
    checked: list[tuple[str, dict[str, Any], bytes | None]] = []  # key, event, signable
    hosted: set[str] = set()  # rooms of the batch we host: we order the origin's events
    for index, raw in enumerate(events):
        key = raw.get("event_id") if isinstance(raw, dict) else None
        key = key if isinstance(key, str) else f"#{index}"
        room_id = raw.get("room_id") if isinstance(raw, dict) else None
        try:
            signable = signable_or_none(raw, checked=True)  # the body's decoding checked it
            event = check_federated_event(raw, signable=signable)
            # the cheap checks first: no key is fetched for an event that may not come
            if check_relay(event, origin, tenant.server_name) == tenant.server_name:
                hosted.add(event["room_id"])
            checked.append((key, event, signable))
        except FederationError as exc:
            refused.append((key, room_id if isinstance(room_id, str) else None, exc))
        except Exception:  # a bug must not turn the whole /send into a 500
            results[key] = _internal(tenant, origin, key)
    checked = await _third_parties_in_known_rooms(tenant, origin, checked, refused)
    # While gap repair runs it brings many of the same events: those already
    # stored are not verified again (storing them again checks they are the same).
    # A relayed event's origin vouches for its own keys, never its relay: one we
    # can't reach waits (a transient result, sent again).
    verify = (st.federation.verify_new_events if st.federation.repairer.busy(tenant)
              else st.federation.verify_events)
    outcomes = await verify(tenant, [(event, signable) for _, event, signable in checked],
                            via=origin)
    verified: list[dict[str, Any]] = []
    held: str | None = None  # an event deferred: those after it wait for it (same origin)
    for (key, event, _), error in zip(checked, outcomes, strict=True):
        if held is not None and event["room_id"] in hosted:
            results[key] = room_writes.deferred_for(held)
        elif error is None:
            verified.append(event)
        elif _transient(error):
            results[key] = _deferred(tenant, origin, key, error)
            held = held or (key if event["room_id"] in hosted else None)
        else:
            refused.append((key, event["room_id"], error))

    await turn.wait()  # stored in the order the requests came (federation.turns)
    ctx = Ctx(tenant, st.clock(), st.federation.signer(tenant))
    after = _after(body)
    late = await st.db.write(room_writes.receive_batch_txn, ctx, origin, verified, refused,
                             results, after)
    held_back = sum(1 for e in verified if "error" in results.get(e["event_id"], {}))
    if held_back:  # for ``after``: see room_writes.receive_batch_txn
        logs.log("federation.send.deferred", level="warning", tenant=tenant.server_name,
                 peer=origin, events=held_back, after=after[1] if after else None)
    st.metrics.received.inc(len(verified) - len(late) - held_back, tenant=tenant.server_name,
                            peer=origin)
    for key, room_id, exc in refused + late:
        results[key] = {"error": {"code": exc.code, "message": exc.message}}
        log_refusal(tenant, origin, exc, event_id=key, room_id=room_id)
    return {"results": results}


async def _third_parties_in_known_rooms(
        tenant: Tenant, origin: str, checked: list[tuple[str, dict[str, Any], bytes | None]],
        refused: list[tuple[str, str | None, FederationError]],
) -> list[tuple[str, dict[str, Any], bytes | None]]:
    """``checked`` without third servers' events in rooms we don't hold (refused: no
    key of a name the sender chose is fetched for them; core.rooms.check_third_party_room)."""
    rooms = {e["room_id"] for _, e, _ in checked if e["origin"] != origin}
    if not rooms:
        return checked
    known = await read(rooms_db.known_rooms_txn, tenant, rooms)
    kept = []
    for key, event, signable in checked:
        try:
            check_third_party_room(event, origin, event["room_id"] in known)
            kept.append((key, event, signable))
        except FederationError as exc:
            refused.append((key, event["room_id"], exc))
    return kept


def _after(body: dict[str, Any]) -> tuple[str, str] | None:
    """The pipelined /send's ``after``: (room id, event id) of the origin's event before it."""
    after = body.get("after")
    if not isinstance(after, dict):
        return None
    room_id, event_id = after.get("room_id"), after.get("event_id")
    if isinstance(room_id, str) and isinstance(event_id, str) and max(
            len(room_id), len(event_id)) <= 255:
        return room_id, event_id
    return None


def _internal(tenant: Tenant, origin: str, key: str) -> dict[str, Any]:
    logs.log_exception("federation.event.internal_error", tenant=tenant.server_name,
                       peer=origin, event_id=key)
    return _deferred(tenant, origin, key, FederationError(
        "internal error while checking this event; try again later",
        code="SW_INTERNAL", status=500))


def _transient(exc: FederationError) -> bool:
    """We could not decide now (a key out of reach, trouble here): the sender retries."""
    return exc.code in TRANSPORT_CODES or exc.status >= 500


def _deferred(tenant: Tenant, origin: str, key: str, exc: FederationError) -> dict[str, Any]:
    logs.log("federation.event.deferred", level="warning", tenant=tenant.server_name,
             peer=origin, event_id=key, reason=exc.code, message=exc.message)
    # What we saw of the network stays in our log: a peer learns only that it
    # was unreachable (no oracle for scanning ports through us).
    message = ("the event's origin could not be reached to fetch its keys; send it again "
               "later" if exc.code in TRANSPORT_CODES else exc.message)
    return {"error": {"code": exc.code, "message": message, "transient": True}}


async def authenticated_once() -> tuple[Tenant, str, dict[str, Any]]:
    """:func:`authenticated` for a POST that is not idempotent: each signature once.

    (See replay.py; ``/send`` is idempotent by event ids and does not need it.)
    """
    tenant, origin, body = await authenticated(with_body=True)
    assert body is not None
    try:
        sig = parse_auth_header(request.headers.get("Authorization")).sig
        GUARD.check(origin, sig, trio.current_time())
    except FederationError as exc:
        raise await _refuse(tenant, origin, exc) from None
    return tenant, origin, body


async def _write_as_host(tenant: Tenant, origin: str, fn: Any, *args: Any) -> Any:
    """Run one of the host's transactions for a peer; its refusals are recorded."""
    st = state()
    ctx = Ctx(tenant, st.clock(), st.federation.signer(tenant))
    try:
        result = await st.db.write(fn, ctx, origin, *args)
    except FederationError as exc:
        raise await _refuse(tenant, origin, exc) from None
    return result


@bp.post(FED_PREFIX + "/rooms/<room_id>/membership")
async def membership(room_id: str) -> dict[str, Any]:
    """A member server's join, leave or decline, ordered now; answers the room's state."""
    from swfed.federation.membership import STATE_EVENTS

    tenant, origin, body = await authenticated_once()
    try:
        event = check_federated_event(body.get("event"))
        if event["room_id"] != room_id or event["origin"] != origin:
            raise FederationError(f"the event must be {origin}'s own, in room {room_id}",
                                  code="SW_FED_BAD_REQUEST", status=400)
        await state().federation.verify_event(tenant, event)
    except FederationError as exc:
        raise await _refuse(tenant, origin, exc) from None
    answer: dict[str, Any] = await _write_as_host(
        tenant, origin, room_writes.host_membership_txn, event, STATE_EVENTS)
    state().metrics.received.inc(1, tenant=tenant.server_name, peer=origin)
    return answer


def _participant(body: dict[str, Any], field: str) -> Fqid:
    try:
        return parse_participant(body.get(field), "", field=field)
    except SwfedError as exc:
        raise FederationError(exc.message, code="SW_FED_BAD_REQUEST", status=400) from None


@bp.post(FED_PREFIX + "/rooms/<room_id>/invites")
async def remote_invite(room_id: str) -> dict[str, Any]:
    """A member on another server invites someone into a room we host (our rules apply)."""
    tenant, origin, body = await authenticated_once()
    try:
        inviter, invitee = _participant(body, "inviter"), _participant(body, "invitee")
    except FederationError as exc:
        raise await _refuse(tenant, origin, exc) from None
    result: dict[str, Any] = await _write_as_host(
        tenant, origin, room_writes.remote_invite_txn, room_id, str(inviter), invitee)
    return result


@bp.post(FED_PREFIX + "/rooms/<room_id>/invites/<invite_id>/cancel")
async def remote_cancel(room_id: str, invite_id: str) -> dict[str, Any]:
    """A member on another server cancels an invite it made."""
    tenant, origin, body = await authenticated_once()
    try:
        actor = _participant(body, "actor")
        if actor.server_name != origin:
            raise FederationError(f"actor must be a user of {origin}",
                                  code="SW_FED_BAD_REQUEST", status=400)
    except FederationError as exc:
        raise await _refuse(tenant, origin, exc) from None
    result: dict[str, Any] = await _write_as_host(
        tenant, origin, room_writes.remote_cancel_txn, room_id, invite_id, str(actor))
    return result


@bp.get(FED_PREFIX + "/profile/<local_id>")
async def profile(local_id: str) -> dict[str, Any]:
    tenant, _origin, _ = await authenticated(with_body=False)
    user = (await read(tenants_db.user_txn, tenant, local_id)
            if LOCAL_ID_RE.match(local_id) else None)
    if user is None:
        raise NotFound(f"no user @{local_id} on {tenant.server_name}",
                       code="SW_FED_USER_NOT_FOUND")
    return {"local_id": user.local_id, "fqid": user.fqid, "display_name": user.display_name}


@bp.get(FED_PREFIX + "/rooms/<room_id>/members")
async def members(room_id: str) -> dict[str, Any]:
    tenant, origin, _ = await authenticated(with_body=False)
    try:
        await read(room_writes.hosted_room_for_peer_txn, tenant, room_id, origin)
    except FederationError as exc:
        raise await _refuse(tenant, origin, exc) from None
    data = await read(members_db.members_for_peer_txn, tenant, room_id)
    return {"room_id": room_id, "members": data}


@bp.post(FED_PREFIX + "/rooms/<room_id>/call")
async def call(room_id: str) -> dict[str, Any]:
    """A LiveKit token from our LiveKit for a member of the origin, in a room we host."""
    tenant, origin, body = await authenticated_once()
    user, name = body.get("user"), body.get("display_name")
    try:
        if not isinstance(user, str) or server_of(user) != origin:
            raise FederationError(f"user must be the fqid of a user of {origin}",
                                  code="SW_FED_BAD_REQUEST", status=400)
        await read(room_writes.hosted_room_for_peer_txn, tenant, room_id, origin)
        if await read(members_db.membership_txn, tenant, room_id, user) != "join":
            raise FederationError(f"{user} has not joined {room_id}", code="SW_FED_NOT_MEMBER",
                                  status=403)
    except FederationError as exc:
        raise await _refuse(tenant, origin, exc) from None
    shown = name[:100] if isinstance(name, str) and name else user
    return call_token(state(), tenant.server_name, room_id, user, shown)


@bp.get(FED_PREFIX + "/rooms/<room_id>/backfill")
async def backfill(room_id: str) -> dict[str, Any]:
    """History (``before``, newest first) or, with ``after``, gap repair (oldest first)."""
    tenant, origin, _ = await authenticated(with_body=False)
    after = int_arg("after", None)
    if after is not None:
        try:
            events, last_seq = await read(room_writes.repair_page_txn, tenant, room_id, origin,
                                          after, int_arg("limit", 100, low=1, high=100) or 100)
        except FederationError as exc:
            raise await _refuse(tenant, origin, exc) from None
        return {"room_id": room_id, "events": events, "last_seq": last_seq}
    try:
        limit = backfill_limit(tenant.policy, int_arg("limit", 100, low=1, high=1000) or 100)
        events, nxt = await read(room_writes.backfill_page_txn, tenant, room_id, origin,
                                 int_arg("before", None), limit)
    except FederationError as exc:
        raise await _refuse(tenant, origin, exc) from None
    out: dict[str, Any] = {"room_id": room_id, "events": events}
    if nxt is not None:
        out["next"] = nxt
    return out


@bp.post(FED_PREFIX + "/rooms/<room_id>/typing")
async def typing(room_id: str) -> dict[str, Any]:
    """A peer says one of the room's members is typing: best effort, never stored."""
    from swfed.core.rooms import check_typing
    from swfed.storage.reads import typing_audience_txn
    from swfed.typing_signals import TYPING, local_audience, spread, targets

    tenant, origin, body = await authenticated(with_body=True)
    assert body is not None
    st = state()
    wait = TYPING.peers.check((tenant.tenant_id, origin), trio.current_time())
    if wait > 0:
        raise rate_limited("federation_typing", origin, f"too many typing signals from "
                           f"{origin}", wait)
    user, flag = body.get("user"), body.get("typing")
    try:
        if not isinstance(user, str) or not is_fqid(user) or not isinstance(flag, bool):
            raise FederationError("typing needs user (a participant id) and typing (true "
                                  "or false)", code="SW_FED_BAD_REQUEST", status=400)
        room, joined = await read(typing_audience_txn, tenant, room_id, user)
        check_typing(room, tenant.server_name, origin, user, room is not None)
    except FederationError as exc:
        raise await _refuse(tenant, origin, exc) from None
    assert room is not None
    me = tenant.server_name
    TYPING.add(tenant.tenant_id, room_id, user, flag, st.clock(),
               local_audience(joined, me, user))
    st.notifier.wake({tenant.tenant_id})
    await spread(st, tenant, room_id, user, flag, targets(room.host, me, joined, user, origin))
    return {}

