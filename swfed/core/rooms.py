"""The room protocol: who may do what in which room, and what follows (DESIGN §5, §10).

Everything that decides the state of a room lives here, as plain functions
over plain values, in the spirit of h11's ``_state.py``; storage only reads
what these functions ask for and writes what they answer.

The host model, in short:

- The tenant that created a room *hosts* it (its server name is in the room
  id). It decides membership and the order of events: each event it accepts
  gets the room's next sequence number (``seq``).
- A member server sends its own users' events to the host; the host checks
  them (:func:`admit`), orders them and relays them, origin signature intact,
  to every other server with members (:func:`route_targets`).
- Only the host writes into its room: a member server accepts an event of
  a room hosted elsewhere only from that room's host, and the host accepts
  from each server only that server's own events (:func:`check_relay`). An
  event id already stored in the room is a no-op replay only for the very
  same signed event; anything else is a conflict (:func:`check_replay`).
- Each stored event has effects on membership, invites and notifications
  (:func:`effects`), computed from the event and the memberships it touches
  (:func:`touched_members`).

Nothing here does I/O; every refusal is a :class:`FederationError` with its
``SW_FED_…`` code, so the same rules answer a peer over HTTP and a table of
cases in ``tests/core/test_rooms.py``.
"""

from __future__ import annotations

from typing import Any

import attrs

from swfed.core.errors import Conflict, FederationError, Forbidden, NotFound
from swfed.core.events import CHANGES, HOST_SIGNED, message_mentions
from swfed.core.ids import is_fqid, room_host
from swfed.core.policy import Policy, decide_foreign_count, decide_room

#: Events of ours in rooms hosted elsewhere sort after everything the host
#: has ordered until the host's sequence number comes back.
PENDING_SEQ = 2**40


@attrs.frozen
class Room:
    """A room as one tenant knows it."""

    room_id: str
    name: str
    type: str
    federate: bool
    host: str
    creator: str
    created_at: int
    federated: bool
    #: In a room hosted elsewhere: every host seq up to here is in our copy.
    synced_seq: int = 0


def server_of(fqid: str) -> str:
    """``@local_id:server`` → ``server`` (ports included)."""
    return fqid[1:].partition(":")[2]


def local_part(fqid: str) -> str:
    return fqid[1:].partition(":")[0]


def room_not_found(room_id: str) -> NotFound:
    return NotFound(f"no room {room_id} that you are a member of", code="SW_ROOM_NOT_FOUND")


def not_federated(room_id: str, server: str) -> FederationError:
    return FederationError(
        f"room {room_id} has federation switched off on {server} (its federate flag): "
        "the room's creator or a tenant admin there turns it on with "
        'PATCH /v1/rooms/{room_id} {"federate": true}', code="SW_FED_ROOM_NOT_FEDERATED",
        status=403)


def check_room_federates(room: Room, me: str) -> None:
    """Raises SW_FED_ROOM_NOT_FEDERATED when this server's copy has the flag off."""
    if not room.federate:
        raise not_federated(room.room_id, me)


# -- admission of what peers send ------------------------------------------------


@attrs.frozen
class Target:
    """The event an edit or delete points at, as one copy holds it."""

    type: str
    sender: str
    deleted: bool = False


#: Why an edit or delete is refused (:func:`change_refusal`).
NOT_FOUND, DELETED, NOT_ALLOWED = "not_found", "deleted", "not_allowed"


def change_refusal(kind: str, actor: str, target: Target | None, room: Room,
                   actor_is_admin: bool) -> str | None:
    """May ``actor`` edit (``kind`` "edit") or delete ``target``? None if so, else why.

    An edit: a message that is not deleted, by its sender only. A delete: a
    message or reaction that is not deleted, by its sender, the room's
    creator or a tenant admin of the room's host (``actor_is_admin``; a
    member server takes the host's word for its own admins: a delete whose
    sender is of the host's server). Answers :data:`NOT_FOUND`,
    :data:`DELETED` or :data:`NOT_ALLOWED`.
    """
    if target is None or target.type not in (("message",) if kind == "edit"
                                             else ("message", "reaction")):
        return NOT_FOUND
    if target.deleted:
        return DELETED
    if actor == target.sender:
        return None
    if kind == "delete" and (actor == room.creator or actor_is_admin):
        return None
    return NOT_ALLOWED


def vouched_admin(room: Room, me: str, sender: str, local_admin: bool) -> bool:
    """Is ``sender`` a tenant admin of the room's host, as far as this copy may say?

    The host knows its own admins (``local_admin``); a member server takes
    the host's word for a user of the host's own server and no other's.
    """
    if room.host == me:
        return server_of(sender) == me and local_admin
    return server_of(sender) == room.host


def check_change(event: dict[str, Any], facts: Facts) -> None:
    """An edit or delete a peer sent: may its sender make it? Raises SW_FED_NOT_ALLOWED.

    Judged by every copy that holds the target (a member server too: no
    host may relay an edit of someone else's message); one that does not
    hold it cannot judge, and applies nothing (:func:`effects` waits for it).
    """
    room = facts.room
    if event["type"] not in CHANGES or room is None or facts.target is None:
        return
    why = change_refusal(event["type"], event["sender"], facts.target, room,
                         facts.sender_is_admin)
    if why is not None:
        target = relation_target(event)
        raise FederationError(
            f"{event['type']} {event['event_id']} by {event['sender']} of event {target}: "
            + {NOT_FOUND: f"a {facts.target.type} event cannot be changed that way",
               DELETED: "that event is deleted",
               NOT_ALLOWED: "only its sender edits a message; only its sender, the room's "
                            "creator or a tenant admin of its host deletes it"}[why],
            code="SW_FED_NOT_ALLOWED", status=403)


@attrs.frozen
class Facts:
    """What :func:`admit` needs to know about the room, read before deciding.

    ``room`` is None when we have no copy of it; ``sender_membership`` is
    the event sender's membership in our copy; ``foreign_count`` the foreign
    participants (joined or invited) in our copy; ``invitee_exists`` whether
    an invite's invitee is a user of ours; ``known_invite_event`` the event
    id of a known invite with the same invite id.
    """

    me: str
    request_origin: str
    room: Room | None
    policy: Policy
    sender_membership: str | None = None
    foreign_count: int = 0
    invitee_exists: bool = False
    #: The event that made an invite with this invite's id, if we know one.
    known_invite_event: str | None = None
    #: Whether the room holds the event a reply or reaction points at (its
    #: :func:`relation_target`); asked only where we host the room.
    target_held: bool = True
    #: The event an edit or delete changes, as we hold it (None: not held).
    target: Target | None = None
    #: The sender of an edit or delete is a tenant admin of the room's host.
    sender_is_admin: bool = False


@attrs.frozen
class Admission:
    """An event may enter. ``new_room``: an invite that creates our copy of a room."""

    new_room: Room | None = None


def check_relay(event: dict[str, Any], request_origin: str, me: str) -> str:
    """Only the host writes into its room; returns the host.

    To the host, a server sends only its own events; anywhere else, only
    the room's host sends (relays) events of its room. Raises SW_FED_NOT_HOST.
    """
    host = room_host(event["room_id"]) or ""
    origin = event["origin"]
    if host == me and origin != request_origin:
        raise FederationError(f"{request_origin} sent an event of {origin}: to the host, a "
                              "server sends only its own events", code="SW_FED_NOT_HOST",
                              status=403)
    if host != me and request_origin != host:
        raise FederationError(f"{request_origin} sent an event of room {event['room_id']}: "
                              f"only its host {host} writes into it", code="SW_FED_NOT_HOST",
                              status=403)
    return host


def check_relay_has_seq(room: Room, me: str, host_seq: int | None) -> None:
    """An event of a room hosted elsewhere carries its place in the host's order."""
    if room.host != me and host_seq is None:
        raise FederationError("an event relayed by the room's host must carry its place in "
                              "the host's order (unsigned.seq, 1 to 2^40)",
                              code="SW_FED_BAD_EVENT", status=400)


def check_remote_inviter(room_id: str, origin: str, inviter: str,
                         membership: str | None) -> None:
    """A member server invites through the host only for a joined member of its own."""
    if server_of(inviter) != origin or membership != "join":
        raise FederationError(f"{inviter} is not a joined member of {room_id} on {origin}",
                              code="SW_FED_NOT_MEMBER", status=403)


def check_peer_access(room: Room | None, room_id: str, me: str, requester: str,
                      member_servers: set[str]) -> Room:
    """A peer may read or act on a room we host only with a joined member in it (not
    merely invited: the invite carries what the invitee's server needs), and only
    while the room federates. Returns the room."""
    if room is None or room.host != me or requester not in member_servers:
        raise FederationError(f"{requester} has no joined member in a room {room_id} hosted "
                              "here", code="SW_FED_NOT_MEMBER", status=403)
    check_room_federates(room, me)
    return room


def check_third_party_room(event: dict[str, Any], request_origin: str,
                           room_known: bool) -> None:
    """A relayed event of a third server, in a room we do not hold: refused before
    any key of that server is fetched (the sender chose the name; only an invite,
    signed by the host itself, brings a room we don't have). Raises SW_FED_UNKNOWN_ROOM.
    """
    if event["origin"] != request_origin and not room_known:
        raise FederationError(f"no room {event['room_id']} here: {request_origin} relayed "
                              f"an event of {event['origin']} into it",
                              code="SW_FED_UNKNOWN_ROOM", status=404)


def check_replay(event: dict[str, Any], stored: dict[str, Any] | None) -> None:
    """An event id already stored in the room: a no-op only for the very same event.

    ``stored``: the event as its origin signed it (``unsigned`` is not part of
    it). Raises SW_FED_EVENT_CONFLICT for anything else under that id.
    """
    sent = {k: v for k, v in event.items() if k != "unsigned"}
    if stored is None or sent != stored:
        raise FederationError(f"event id {event['event_id']} is already taken in room "
                              f"{event['room_id']} by another event",
                              code="SW_FED_EVENT_CONFLICT", status=409)


def admit(event: dict[str, Any], facts: Facts) -> Admission:
    """May this verified event, sent by ``facts.request_origin``, enter its room here?

    Raises FederationError: SW_FED_NOT_HOST (anything but the host writing into
    a room hosted elsewhere, or another server's event sent to the host),
    SW_FED_EVENT_CONFLICT (an invite id taken by another invite),
    SW_FED_ROOM_NOT_FEDERATED, SW_FED_UNKNOWN_ROOM, SW_FED_NOT_INVITED,
    SW_FED_NOT_MEMBER, SW_FED_ROOM_FULL, SW_FED_BAD_EVENT, SW_FED_USER_NOT_FOUND,
    SW_FED_ROOM_NOT_FEDERATABLE, SW_FED_TARGET_NOT_FOUND (we host the room and hold
    no target of the reply or reaction).
    """
    room_id = event["room_id"]
    host = check_relay(event, facts.request_origin, facts.me)
    if event["type"] == "invite" and facts.known_invite_event not in (None, event["event_id"]):
        raise FederationError(f"invite id {event['content'].get('invite_id')} is already "
                              "taken by another invite", code="SW_FED_EVENT_CONFLICT",
                              status=409)
    me = facts.me
    room = facts.room
    if room is not None:
        check_room_federates(room, me)
    if event["type"] == "invite":
        return _admit_invite(event, facts, host)
    if room is None:
        raise FederationError(f"no room {room_id} here", code="SW_FED_UNKNOWN_ROOM",
                              status=404)
    if event["type"] in HOST_SIGNED and (room.host == me or facts.request_origin != host):
        raise FederationError(f"only the room's host sends {event['type']} events",
                              code="SW_FED_NOT_HOST", status=403)
    check_change(event, facts)
    if room.host != me:
        return Admission()
    current = facts.sender_membership
    content = event["content"]
    if event["type"] == "member" and content.get("membership") == "join":
        if current not in ("invite", "join"):
            raise FederationError(f"{event['sender']} has no invite to {room_id}",
                                  code="SW_FED_NOT_INVITED", status=403)
        decide_foreign_count(facts.policy, facts.foreign_count + (0 if current else 1))
    elif event["type"] == "member":
        if current not in ("invite", "join"):
            raise FederationError(f"{event['sender']} is not in {room_id}",
                                  code="SW_FED_NOT_MEMBER", status=403)
    elif current != "join":
        raise FederationError(f"{event['sender']} is not a member of {room_id}",
                              code="SW_FED_NOT_MEMBER", status=403)
    target = relation_target(event)
    if target is not None and not facts.target_held:
        # Everything its origin sent before this event has been answered for (a
        # pipelined /send waits for the one before it): the target will not come.
        raise FederationError(f"{event['type']} {event['event_id']} points at event {target}, "
                              f"which room {room_id} does not hold: a reply or reaction is "
                              "ordered after its target", code="SW_FED_TARGET_NOT_FOUND",
                              status=404)
    return Admission()


def relation_target(event: dict[str, Any]) -> str | None:
    """The event a reply (``in_reply_to``), reaction, edit or delete (``relates_to``)
    points at."""
    field = {"message": "in_reply_to", "reaction": "relates_to", "edit": "relates_to",
             "delete": "relates_to"}.get(event["type"])
    target = event["content"].get(field) if field is not None else None
    return target if isinstance(target, str) else None


def _admit_invite(event: dict[str, Any], facts: Facts, host: str) -> Admission:
    content = event["content"]
    if facts.request_origin != host or event["origin"] != host:
        raise FederationError("only the room's host may send invites",
                              code="SW_FED_NOT_HOST", status=403)
    for field in ("invitee", "invite_id", "room_name", "room_type"):
        if not isinstance(content.get(field), str):
            raise FederationError(f"invite content lacks {field}", code="SW_FED_BAD_EVENT",
                                  status=400)
    invitee = content["invitee"]
    if facts.room is not None:
        # a member server: an invite for someone else, relayed, is kept as it is; one
        # for a user of ours who does not exist is refused, so the host drops it
        # (only the invitee's server refuses an invite: see refusal_ends_invite)
        if server_of(invitee) == facts.me and not facts.invitee_exists:
            raise FederationError(f"no user {invitee} here", code="SW_FED_USER_NOT_FOUND",
                                  status=404)
        return Admission()
    if server_of(invitee) != facts.me:
        raise FederationError(f"invite for {invitee} sent to {facts.me}",
                              code="SW_FED_BAD_EVENT", status=400)
    if not facts.invitee_exists:
        raise FederationError(f"no user {invitee} here", code="SW_FED_USER_NOT_FOUND",
                              status=404)
    decide_room(content["room_type"], True)
    members = content.get("members") if isinstance(content.get("members"), list) else []
    foreign = {m for m in members if isinstance(m, str) and server_of(m) != facts.me}
    decide_foreign_count(facts.policy, len(foreign))
    return Admission(new_room=Room(
        event["room_id"], content["room_name"][:200], content["room_type"], True, host,
        event["sender"], 0, False))


def unsigned_seq(event: Any) -> int | None:
    """The host's order number an event from the host carries (``unsigned.seq``), if valid.

    Anything but an object ``unsigned`` holding an integer 1 .. 2^40 - 1 is
    None: a host's malformed answer is left out, never a crash here.
    """
    unsigned = event.get("unsigned") if isinstance(event, dict) else None
    raw = unsigned.get("seq") if isinstance(unsigned, dict) else None
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 < raw < PENDING_SEQ:
        return raw
    return None


def host_seq(room: Room, me: str, request_origin: str, event: dict[str, Any]) -> int | None:
    """The host's order number a relayed event carries, if we may take it."""
    if room.host == me or request_origin != room.host:
        return None
    return unsigned_seq(event)


# -- what a host vouches for, and what it owes a member server ---------------------
#
# A host vouches for its room's order and for its *foreign* members (foreign to
# us). Our users' memberships come from our users' own signed actions: an invite
# we received, their join, leave or decline. And a host owes a member server
# what was said while that server had a member in the room (its current span),
# plus history only as far as the backfill policy lets it.


def refusal_ends_invite(event: dict[str, Any], refused_by: str) -> bool:
    """Does ``refused_by``'s final refusal of this relayed event end an invite?

    Only when it is an invite and ``refused_by`` is the invitee's server: any
    other member server refusing it has only refused to store the event.
    """
    content = event.get("content")
    invitee = content.get("invitee") if isinstance(content, dict) else None
    return (event.get("type") == "invite" and isinstance(invitee, str)
            and server_of(invitee) == refused_by)


@attrs.frozen
class HostMembers:
    """What we take of a host's member list (``take``: fqid -> (membership, name)).

    ``lies``: users of ours the host listed as members (or invitees) without
    their own action here: ignored, and worth a log line about the host.
    """

    take: dict[str, tuple[str, str | None]]
    lies: list[str]


def members_from_host(listed: list[Any], me: str, ours: dict[str, str | None],
                      limit: int) -> HostMembers:
    """The host's member list (as answered), as far as we believe it.

    ``ours``: the membership here of each user of ours the list names. Only
    foreign members are taken from the host; our users keep the membership
    their own actions gave them. At most ``limit`` entries are read.
    """
    take: dict[str, tuple[str, str | None]] = {}
    lies: list[str] = []
    for m in listed[:limit]:
        if not isinstance(m, dict):
            continue
        fqid, membership, name = m.get("fqid"), m.get("membership"), m.get("display_name")
        if not is_fqid(fqid) or membership not in ("join", "invite"):
            continue
        assert isinstance(fqid, str)
        if server_of(fqid) == me:
            held = ours.get(fqid)
            if membership != held and not (membership == "invite" and held == "join"):
                lies.append(fqid)
            continue
        take[fqid] = (membership, name if isinstance(name, str) else None)
    return HostMembers(take, lies)


def span_start(member_events: list[tuple[int, str, str]]) -> int | None:
    """Where a server's current span in a room began: the seq of the join that
    took it from no joined member to one; None while it has no joined member.

    ``member_events``: (seq, sender, membership) of the member events of that
    server's users in the room, in host order.
    """
    joined: set[str] = set()
    start: int | None = None
    for seq, sender, membership in member_events:
        if membership == "join":
            if not joined:
                start = seq
            joined.add(sender)
        else:
            joined.discard(sender)
    return start if joined else None


def repair_after(after: int, span: int | None, last_seq: int) -> int:
    """Where a gap repair (``backfill?after=``) starts for a member server.

    What relaying would have given it: nothing from before its current span
    (that is history, under the backfill policy), nothing at all without one.
    """
    if span is None:
        return last_seq
    return max(after, span - 1)


@attrs.frozen
class StateAnswer:
    """What a host's answer to a membership request carries besides the seq.

    ``members``: the room's member list; ``history``: how many events from
    before the caller's current span (newest first) at most.
    """

    members: bool
    history: int


def state_answer(membership: str, policy: Policy, state_events: int) -> StateAnswer:
    """A join gets the room's state (history within the backfill policy: 0, none);
    a leave or decline needs only its seq."""
    if membership != "join":
        return StateAnswer(members=False, history=0)
    return StateAnswer(members=True,
                       history=max(0, min(state_events, policy.max_backfill_events_per_request)))


def state_events(newest_first: list[dict[str, Any]], span: int | None,
                 history: int) -> list[dict[str, Any]]:
    """The events of a join's answer: those of the caller's current span, and at most
    ``history`` older ones (``newest_first`` carry ``unsigned.seq``)."""
    out: list[dict[str, Any]] = []
    older = 0
    for event in newest_first:
        seq = unsigned_seq(event)
        if seq is None:
            continue
        if span is not None and seq >= span:
            out.append(event)
        elif older < history:
            out.append(event)
            older += 1
    return out


def restarts_copy(synced_seq: int, seq: int, ours_joined: bool) -> bool:
    """A relayed event beyond a gap, in a room where no user of ours is joined.

    The host relays nothing else to such a server (an invite of one of our
    users, its cancellation): what lies between is not owed and a host would
    refuse to repair it. The copy starts anew at this event.
    """
    return not ours_joined and synced_seq > 0 and seq > synced_seq + 1


def membership_start(synced_seq: int, seq: int, membership: str,
                     ours_joined_before: bool) -> int | None:
    """Where our copy starts when the host has ordered one of our member events at
    ``seq``: there, when it is our first, or a join while none of ours was joined
    (what was said meanwhile is history, not a gap); else None (it goes on)."""
    if synced_seq == 0 or (membership == "join" and not ours_joined_before):
        return seq
    return None


def seq_taken(room_id: str, seq: int, holder: str) -> FederationError:
    """A host seq names one event: another one under a seq we hold is the host's lie."""
    return FederationError(f"seq {seq} of room {room_id} already names event {holder}: a "
                           "host numbers each event once", code="SW_FED_SEQ_TAKEN",
                           status=409)


def check_repair_page(after: int, limit: int, seqs: list[int | None],
                      last_seq: int | None) -> None:
    """Does a host's gap-repair page (``/backfill?after=&limit=``) tell the truth?

    ``seqs``: each answered event's ``unsigned.seq`` (None if it has none), in
    the answer's order. An honest host answers at most ``limit`` events, in
    its order, each after ``after`` and at most its ``last_seq`` (below
    :data:`PENDING_SEQ`), and a page shorter than asked only when it reaches
    ``last_seq``. Raises FederationError (SW_FED_BAD_RESPONSE) naming the lie.
    """
    def lie(what: str) -> FederationError:
        return FederationError(f"the host's repair page after seq {after} {what}",
                               code="SW_FED_BAD_RESPONSE", status=502)

    if last_seq is None or not 0 <= last_seq < PENDING_SEQ:
        raise lie(f"claims last_seq {last_seq!r}: not a seq a room can have")
    if len(seqs) > limit:
        raise lie(f"has {len(seqs)} events, more than the {limit} asked")
    top = after
    for seq in seqs:
        if seq is None or not top < seq <= last_seq:
            raise lie(f"has an event at seq {seq!r}, out of order or outside the asked range "
                      f"({top}, {last_seq}]")
        top = seq
    if len(seqs) < limit and top < last_seq:
        raise lie(f"ends at seq {top} with {len(seqs)} of {limit} events but claims last_seq "
                  f"{last_seq}: the host claims more than it delivers")


# -- what local users may do ------------------------------------------------------


def check_invite(room: Room, me: str, invitee: str, invitee_membership: str | None) -> None:
    """May a member of ours invite ``invitee`` into ``room``? (Policy is checked apart.)"""
    if room.host != me:
        raise Forbidden(f"only members on the hosting server ({room.host}) can invite "
                        "into this room", code="SW_NOT_HOST")
    if invitee_membership == "join":
        raise Conflict(f"{invitee} is already a member of this room", code="SW_ALREADY_MEMBER")


def check_cancel_invite(room: Room, me: str, inviter: str, state: str, actor: str,
                        actor_is_admin: bool) -> None:
    """Its inviter, the room's creator or a tenant admin of the host cancels a pending invite."""
    if room.host != me:
        raise Forbidden(f"invites into this room are kept by its host ({room.host})",
                        code="SW_NOT_HOST")
    if state != "pending":
        raise Conflict(f"this invite was already {state}", code="SW_INVITE_NOT_PENDING")
    if actor not in (inviter, room.creator) and not actor_is_admin:
        raise Forbidden("only the inviter, the room's creator or a tenant admin can cancel "
                        "this invite", code="SW_NOT_ROOM_ADMIN")


def check_set_federate(room: Room, actor: str, actor_is_admin: bool, federate: bool) -> None:
    """Only the creator or a tenant admin sets the flag; some rooms never federate."""
    if not actor_is_admin and room.creator != actor:
        raise Forbidden("only the room's creator or a tenant admin can change its federate "
                        "flag", code="SW_NOT_ROOM_ADMIN")
    if federate:
        decide_room(room.type, True)


def check_local_change(kind: str, actor: str, target: Target | None, room: Room,
                       actor_is_admin: bool, event_id: str) -> None:
    """May a user of ours edit or delete ``target``? Raises SW_EVENT_NOT_FOUND,
    SW_EVENT_DELETED, SW_NOT_SENDER (edit) or SW_NOT_ROOM_ADMIN (delete)."""
    why = change_refusal(kind, actor, target, room, actor_is_admin)
    if why == NOT_FOUND:
        what = "message" if kind == "edit" else "message or reaction"
        raise NotFound(f"no {what} {event_id} in this room", code="SW_EVENT_NOT_FOUND")
    if why == DELETED:
        raise Conflict(f"event {event_id} was deleted", code="SW_EVENT_DELETED")
    if why == NOT_ALLOWED and kind == "edit":
        raise Forbidden("only its sender can edit a message", code="SW_NOT_SENDER")
    if why == NOT_ALLOWED:
        raise Forbidden("only its sender, the room's creator or a tenant admin of the room's "
                        "host can delete it", code="SW_NOT_ROOM_ADMIN")


def check_typing(room: Room | None, me: str, origin: str, user: str, joined: bool) -> None:
    """May ``origin`` tell us that ``user`` is typing in ``room``? Raises SW_FED_NOT_MEMBER.

    Only for a joined member, in a room that federates here: to the host, a
    server speaks only for its own users; a member server hears only its host
    (which relays the others').
    """
    ok = (room is not None and joined and room.federate
          and ((room.host == me and server_of(user) == origin)
               or (room.host != me and origin == room.host)))
    if not ok:
        raise FederationError(f"{origin} may not say that {user} is typing in "
                              f"{room.room_id if room else 'that room'}: not a joined member, "
                              "or not its server", code="SW_FED_NOT_MEMBER", status=403)


# -- routing -------------------------------------------------------------------------


def route_targets(room: Room, event: dict[str, Any], me: str,
                  member_servers: set[str]) -> set[str]:
    """The servers an event stored here must be sent to (DESIGN §5).

    The host relays to every server with a joined member (and an invite's
    invitee), except itself and the event's origin; a member server sends
    only its own users' events, to the host. ``member_servers``: servers with
    a joined member in our copy, after the event's effects.

    Raises SW_FED_ROOM_NOT_FEDERATED for a write of ours to a room hosted
    elsewhere while our flag is off: the room lives on its host, and a write
    that cannot reach it is refused.
    """
    if room.host == me:
        targets = set(member_servers)
        content = event["content"]
        if event["type"] == "invite" or (event["type"] == "uninvite"
                                         and content.get("reason") == CANCELLED):
            targets.add(server_of(str(content["invitee"])))
        targets -= {me, event["origin"]}
    else:
        targets = {room.host} if event["origin"] == me else set()
    if targets and not room.federate and room.host != me:
        check_room_federates(room, me)
    # A host whose flag is off still queues: the rows wait (held), and go
    # when the flag is on again. A hold, never a fork.
    return targets


# -- effects ---------------------------------------------------------------------


@attrs.frozen
class SetMembership:
    member: str
    membership: str
    display_name: str | None = None


@attrs.frozen
class RecordInvite:
    """Keep the invite (if its id is new) and notify ``notify`` (a local id of ours)."""

    invite_id: str
    invitee: str
    inviter: str
    notify: str | None


@attrs.frozen
class CloseInvites:
    """The member answered: their pending invites to the room become ``state``."""

    invitee: str
    state: str


@attrs.frozen
class EndInvite:
    """One invite ended: ``state`` is ``refused`` or ``cancelled``."""

    invite_id: str
    state: str


@attrs.frozen
class Notify:
    local_id: str
    type: str
    sender: str
    details: dict[str, Any] | None = None


@attrs.frozen
class EditMessage:
    """The message ``target`` shows ``body`` (and ``mentions``) from now on, edited ``at``."""

    target: str
    body: str
    mentions: list[str]
    at: int


@attrs.frozen
class DeleteEvent:
    """The event ``target`` loses its content (and search entry, and mentions): a
    tombstone of who deleted it and when stays."""

    target: str
    by: str
    at: int


Effect = (SetMembership | RecordInvite | CloseInvites | EndInvite | Notify | EditMessage
          | DeleteEvent)

#: An uninvite's ``reason`` when the inviter or a room admin cancelled it;
#: otherwise the reason is the invitee's server's refusal code.
CANCELLED = "cancelled"


def touched_members(event: dict[str, Any]) -> list[str]:
    """Whose membership :func:`effects` needs to know, besides nothing else."""
    if event["type"] in HOST_SIGNED:
        return [str(event["content"]["invitee"])]
    if event["type"] == "message":
        return message_mentions(event["content"])
    return []


def effects(event: dict[str, Any], me: str, memberships: dict[str, str | None]) -> list[Effect]:
    """What a newly stored event changes here: membership, invites, notifications.

    ``memberships``: the current membership of each of :func:`touched_members`.
    """
    content = event["content"]
    sender = event["sender"]
    out: list[Effect] = []
    if "deleted" in content:
        return out  # a tombstone (core.events.check_tombstone): nothing left to do
    if event["type"] == "invite":
        invitee = str(content["invitee"])
        if memberships.get(invitee) != "join":
            out.append(SetMembership(invitee, "invite"))
        out.append(RecordInvite(str(content["invite_id"]), invitee, sender,
                                local_part(invitee) if server_of(invitee) == me else None))
    elif event["type"] == "member":
        name = content.get("display_name")
        joined = content.get("membership") == "join"
        out.append(SetMembership(sender, "join" if joined else "leave",
                                 name if isinstance(name, str) else None))
        out.append(CloseInvites(sender, "accepted" if joined else "declined"))
    elif event["type"] == "uninvite":
        invitee = str(content["invitee"])
        cancelled = content.get("reason") == CANCELLED
        out.append(EndInvite(str(content["invite_id"]), "cancelled" if cancelled else "refused"))
        if memberships.get(invitee) != "invite":
            return out  # no invite of theirs in this room to end: nobody to tell
        out.insert(0, SetMembership(invitee, "leave"))
        if cancelled and server_of(invitee) == me:
            out.append(Notify(local_part(invitee), "invite_cancelled", sender,
                              {"invite_id": content["invite_id"]}))
        elif not cancelled and server_of(sender) == me:
            out.append(Notify(local_part(sender), "invite_refused", sender, {
                "invite_id": content["invite_id"], "invitee": invitee,
                "error": {"code": str(content.get("reason")),
                          "message": str(content.get("message", ""))[:500]}}))
    elif event["type"] == "edit":
        out.append(EditMessage(str(content["relates_to"]), str(content["body"]),
                               message_mentions(content), int(event["origin_ts"])))
    elif event["type"] == "delete":
        out.append(DeleteEvent(str(content["relates_to"]), sender, int(event["origin_ts"])))
    elif event["type"] == "message":
        for fqid in message_mentions(content):
            if server_of(fqid) != me or fqid == sender or memberships.get(fqid) != "join":
                continue
            out.append(Notify(local_part(fqid), "mention", sender))
    return out
