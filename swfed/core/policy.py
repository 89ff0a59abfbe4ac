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
=============================  =============================================
"""

from __future__ import annotations

from typing import Any

import attrs

from swfed.core.errors import BadRequest, FederationError
from swfed.core.ids import is_server_name

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
            fields[name] = tuple(fields[name])
    fields["federation_enabled"] = federation_enabled
    return Policy(**fields)


def _peer_pattern(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{field}: expected server names, got {value!r}", code="SW_BAD_POLICY")
    name = value.strip().lower()
    check = name[2:] if name.startswith("*.") else name
    if not is_server_name(check):
        raise BadRequest(f"{field}: {value!r} is not a server name (like peer.example.com, "
                         "peer.example.com:8448 or *.example.com)", code="SW_BAD_POLICY")
    return name


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


def peer_matches(pattern: str, peer: str) -> bool:
    if pattern.startswith("*."):
        host = peer.split(":")[0] if not peer.startswith("[") else peer
        return host.endswith(pattern[1:])
    return pattern == peer


def decide_peer(policy: Policy, peer: str) -> None:
    """May this tenant federate with ``peer`` at all? Raises FederationError."""
    if not policy.federation_enabled:
        raise FederationError("federation is switched off for this server (tenant-wide)",
                              code="SW_FED_DISABLED", status=403)
    if any(peer_matches(p, peer) for p in policy.denied_peers):
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
