"""A tenant's federation policy and the decisions it makes (DESIGN §5).

``Policy`` is a frozen value; ``parse_policy_update`` validates what an admin
PUTs (a partial update over the current policy); the ``decide_*`` functions
raise a :class:`FederationError` with a precise code, or return None.

=============================  =============================================
code                           meaning
=============================  =============================================
SW_FED_DISABLED                this tenant has federation switched off
SW_FED_CLOSED                  default_mode is "closed"
SW_FED_PEER_DENIED             the peer is in denied_peers
SW_FED_PEER_UNKNOWN            invite_only and the peer is not in allowed_peers
SW_FED_ROOM_NOT_FEDERATABLE    incognito, bridge and sidekick rooms never federate
SW_FED_ROOM_NOT_FEDERATED      the room's federate flag is off
SW_FED_ROOM_FULL               max_foreign_participants_per_room reached
SW_FED_BACKFILL_REFUSED        max_backfill_events_per_request is 0
SW_FED_BAD_SERVER_NAME         a peer's name is not a canonical server name
=============================  =============================================

Peer names in ``allowed_peers`` and ``denied_peers`` are stored in their
canonical form (:func:`swfed.core.ids.canonical_server_name`: lower case, no
trailing dot, no ``:443``), so ``EVIL.test``, ``evil.test.`` and
``evil.test:443`` are all ``evil.test``; a ``*.example.com`` pattern matches
any name ending in ``.example.com``, with any port.

Events a room's host relays from a third server (their *origin*) are kept
even when our policy denies or does not allow that origin
(:func:`decide_relayed_origin`): the host decides who is in its room, and our
copy must stay equal to the host's, so refusing one would fork it.
"""

from __future__ import annotations

from typing import Any

import attrs

from swfed.core.errors import BadRequest, FederationError
from swfed.core.ids import canonical_server_name, is_server_name

MODES = ("open", "invite_only", "closed")
NOT_FEDERATABLE = ("incognito", "bridge", "sidekick")
MAX_LIST = 1000


@attrs.frozen
class Policy:
    default_mode: str = "invite_only"
    allowed_peers: tuple[str, ...] = ()
    denied_peers: tuple[str, ...] = ()
    max_foreign_participants_per_room: int = 50
    max_backfill_events_per_request: int = 500
    federation_enabled: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "default_mode": self.default_mode,
            "allowed_peers": list(self.allowed_peers),
            "denied_peers": list(self.denied_peers),
            "max_foreign_participants_per_room": self.max_foreign_participants_per_room,
            "max_backfill_events_per_request": self.max_backfill_events_per_request,
            "federation_enabled": self.federation_enabled,
        }


def policy_from_stored(stored: dict[str, Any], federation_enabled: bool) -> Policy:
    """The policy from its stored JSON (already validated when it was written)."""
    fields = {k: v for k, v in stored.items() if k in attrs.fields_dict(Policy)}
    for name in ("allowed_peers", "denied_peers"):
        if name in fields:
            # Lists written before names were canonical are read canonical.
            patterns: list[str] = []
            for item in fields[name]:
                try:
                    pattern = _peer_pattern(item, name)
                except BadRequest:
                    continue
                if pattern not in patterns:
                    patterns.append(pattern)
            fields[name] = tuple(patterns)
    fields["federation_enabled"] = federation_enabled
    return Policy(**fields)


def _peer_pattern(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{field}: expected server names, got {value!r}", code="SW_BAD_POLICY")
    name = value.strip()
    wildcard = name.startswith("*.")
    try:
        canonical = canonical_server_name(name[2:] if wildcard else name)
    except BadRequest:
        raise BadRequest(f"{field}: {value[:300]!r} is not a server name (like "
                         "peer.example.com, peer.example.com:8448 or *.example.com)",
                         code="SW_BAD_POLICY") from None
    if wildcard and (":" in canonical or canonical.startswith("[")):
        raise BadRequest(f"{field}: {value!r}: a *. pattern is a domain without a port "
                         "(it matches every port)", code="SW_BAD_POLICY")
    return "*." + canonical if wildcard else canonical


def _limit(value: Any, field: str, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{field}: expected an integer, got {value!r}", code="SW_BAD_POLICY")
    if not 0 <= value <= high:
        raise BadRequest(f"{field}: expected 0..{high}, got {value}", code="SW_BAD_POLICY")
    return value


def parse_policy_update(current: Policy, body: dict[str, Any]) -> Policy:
    """Apply a partial update; raises BadRequest SW_BAD_POLICY naming the field."""
    known = set(attrs.fields_dict(Policy))
    unknown = sorted(set(body) - known)
    if unknown:
        raise BadRequest(f"unknown policy field {unknown[0]!r}; known: {', '.join(sorted(known))}",
                         code="SW_BAD_POLICY")
    changes: dict[str, Any] = {}
    if "default_mode" in body:
        if body["default_mode"] not in MODES:
            raise BadRequest(f"default_mode: expected one of {', '.join(MODES)}, "
                             f"got {body['default_mode']!r}", code="SW_BAD_POLICY")
        changes["default_mode"] = body["default_mode"]
    for name in ("allowed_peers", "denied_peers"):
        if name in body:
            if not isinstance(body[name], list) or len(body[name]) > MAX_LIST:
                raise BadRequest(f"{name}: expected a list of at most {MAX_LIST} server names",
                                 code="SW_BAD_POLICY")
            seen: list[str] = []
            for item in body[name]:
                pattern = _peer_pattern(item, name)
                if pattern not in seen:
                    seen.append(pattern)
            changes[name] = tuple(seen)
    if "max_foreign_participants_per_room" in body:
        changes["max_foreign_participants_per_room"] = _limit(
            body["max_foreign_participants_per_room"], "max_foreign_participants_per_room",
            100_000)
    if "max_backfill_events_per_request" in body:
        changes["max_backfill_events_per_request"] = _limit(
            body["max_backfill_events_per_request"], "max_backfill_events_per_request", 1000)
    if "federation_enabled" in body:
        if not isinstance(body["federation_enabled"], bool):
            raise BadRequest("federation_enabled: expected true or false", code="SW_BAD_POLICY")
        changes["federation_enabled"] = body["federation_enabled"]
    return attrs.evolve(current, **changes)


def _host(name: str) -> str:
    """A canonical server name without its port (``[::1]:8448`` -> ``[::1]``)."""
    if name.startswith("["):
        return name[:name.index("]") + 1] if "]" in name else name
    return name.split(":")[0]


def peer_matches(pattern: str, peer: str, *, any_port: bool = False) -> bool:
    """Does a (canonical) policy pattern match a (canonical) peer name?

    ``any_port``: a pattern without a port matches its host on every port
    (``denied_peers``: denying ``rogue.test`` denies ``rogue.test:8448`` too);
    without it a pattern names one server, its port included.
    """
    if pattern.startswith("*."):
        if peer.startswith("["):
            return False
        return _host(peer).endswith(pattern[1:])
    if any_port and _host(pattern) == pattern:
        return _host(peer) == pattern
    return pattern == peer


def _bad_peer_name(peer: str) -> FederationError:
    shown = peer if len(peer) <= 80 else peer[:80] + "…"
    return FederationError(
        f"{shown!r} is not a canonical server name: peers must name themselves in lower "
        "case, without a trailing dot and without :443", code="SW_FED_BAD_SERVER_NAME",
        status=400)


def decide_peer(policy: Policy, peer: str) -> None:
    """May this tenant federate with ``peer`` at all? Raises FederationError.

    ``peer`` must be canonical (SW_FED_BAD_SERVER_NAME otherwise): a name
    spelled another way never slips past ``denied_peers``.
    """
    if not is_server_name(peer):
        raise _bad_peer_name(peer)
    if not policy.federation_enabled:
        raise FederationError("federation is switched off for this server (tenant-wide)",
                              code="SW_FED_DISABLED", status=403)
    if any(peer_matches(p, peer, any_port=True) for p in policy.denied_peers):
        raise FederationError(f"{peer} is in denied_peers of this server's federation policy",
                              code="SW_FED_PEER_DENIED", status=403)
    if policy.default_mode == "closed":
        raise FederationError("this server's federation policy is closed (default_mode)",
                              code="SW_FED_CLOSED", status=403)
    if policy.default_mode == "invite_only" and not any(
            peer_matches(p, peer) for p in policy.allowed_peers):
        raise FederationError(
            f"{peer} is not in allowed_peers and default_mode is invite_only: add it to "
            "allowed_peers (PUT /v1/admin/federation/policy) or set default_mode to open",
            code="SW_FED_PEER_UNKNOWN", status=403)


@attrs.frozen
class RelayedOrigin:
    """What to do with an event a room's host relays from a third server."""

    #: Store and apply it (always, for a valid origin: see the module docstring).
    keep: bool
    #: Our policy would refuse this origin on its own (``decide_peer``):
    #: worth a log line, so the admin sees whose content the host brings in.
    refused_directly: bool
    #: That refusal's code when ``refused_directly`` (e.g. SW_FED_PEER_DENIED).
    reason: str | None = None


def decide_relayed_origin(policy: Policy, origin: str) -> RelayedOrigin:
    """Keep an event relayed by a room's host whose origin is ``origin``?

    The rule: the host of a room decides who is in it and orders its events;
    our copy must stay equal to the host's (sequence numbers are contiguous,
    and a refused event would be a gap repaired forever). So an event whose
    origin our policy denies, or does not allow, is still kept when the host
    relays it; the caller logs it (``refused_directly``). Our policy still
    governs what that server may do *directly*: its own requests, invites
    and DMs are refused by :func:`decide_peer`. An admin who wants none of a
    server's words leaves (or asks the host to close) rooms it is in.

    Raises FederationError SW_FED_BAD_SERVER_NAME when ``origin`` is not a
    canonical server name (such an event is malformed, not a policy matter).
    """
    if not is_server_name(origin):
        raise _bad_peer_name(origin)
    try:
        decide_peer(policy, origin)
    except FederationError as exc:
        return RelayedOrigin(keep=True, refused_directly=True, reason=exc.code)
    return RelayedOrigin(keep=True, refused_directly=False)


def decide_room(room_type: str, federate: bool) -> None:
    if room_type in NOT_FEDERATABLE:
        raise FederationError(f"{room_type} rooms cannot federate",
                              code="SW_FED_ROOM_NOT_FEDERATABLE", status=403)
    if not federate:
        raise FederationError("this room's federate flag is off: set it to invite people "
                              "from other servers", code="SW_FED_ROOM_NOT_FEDERATED", status=403)


def decide_foreign_count(policy: Policy, foreign_after: int) -> None:
    """``foreign_after``: foreign participants in the room once this one is in."""
    if foreign_after > policy.max_foreign_participants_per_room:
        raise FederationError(
            f"the room would have {foreign_after} foreign participants, over this server's "
            f"max_foreign_participants_per_room ({policy.max_foreign_participants_per_room})",
            code="SW_FED_ROOM_FULL", status=403)


def backfill_limit(policy: Policy, asked: int) -> int:
    """How many events a backfill answer may hold; raises SW_FED_BACKFILL_REFUSED."""
    if policy.max_backfill_events_per_request == 0:
        raise FederationError("this server's policy refuses backfill "
                              "(max_backfill_events_per_request is 0)",
                              code="SW_FED_BACKFILL_REFUSED", status=403)
    return max(1, min(asked, policy.max_backfill_events_per_request))
