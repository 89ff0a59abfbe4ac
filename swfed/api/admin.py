"""``/v1/admin``: a tenant admin's view and repair of federation (DESIGN §7).

Policy, peers, retry, foreign-participant refresh, backfill pull, rejected
events and the audit trail. Every call needs a tenant admin's token and acts
on that tenant only.
"""

from __future__ import annotations

import time
from typing import Any

from quart import Blueprint, request

from swfed import logs
from swfed.api.common import (
    current_admin,
    int_arg,
    json_body,
    page,
    page_limit,
    read,
    recorded_refusal,
    state,
    tenant,
    write,
)
from swfed.core.errors import BadRequest, NotFound
from swfed.core.ids import canonical_server_name, parse_participant, room_host
from swfed.core.policy import decide_peer, parse_policy_update
from swfed.core.rooms import check_room_federates, room_not_found
from swfed.federation import history
from swfed.federation.inbound import log_refusal
from swfed.storage import keys as keys_db
from swfed.storage import peers as peers_db
from swfed.storage import room_writes
from swfed.storage import rooms as rooms_db
from swfed.storage.audit import audit_page_txn, rejected_page_txn
from swfed.storage.context import Ctx
from swfed.storage.policy import update_policy_txn
from swfed.storage.refusals import known_peer_txn

bp = Blueprint("admin", __name__)

#: The most events one backfill call pulls from the host (the tutorial's 1000).
BACKFILL_MAX = 1000


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


@bp.get("/v1/admin/federation/policy")
async def get_policy() -> dict[str, Any]:
    await current_admin()
    return tenant().policy.to_json()


@bp.put("/v1/admin/federation/policy")
async def put_policy() -> dict[str, Any]:
    admin = await current_admin()
    st = state()
    current = tenant()
    new = parse_policy_update(current.policy, await json_body())
    await write(update_policy_txn, current, new, admin.fqid, st.clock())
    await st.tenants.refresh()
    st.federation.sender.policy_changed(current.tenant_id)
    logs.log("federation.policy.updated", tenant=current.server_name, actor=admin.fqid)
    return new.to_json()


@bp.get("/v1/admin/federation/peers")
async def peers() -> dict[str, Any]:
    await current_admin()
    rows = await read(peers_db.peers_view_txn, tenant(), state().clock())
    for row in rows:
        for field in ("last_seen", "oldest_queued_at", "next_retry_at"):
            row[field] = iso(row[field])
    return {"data": rows}


@bp.post("/v1/admin/federation/peers/<server_name>/retry")
async def retry_peer(server_name: str) -> dict[str, Any]:
    """Wake a known peer's queue now; 404 SW_FED_PEER_NOT_FOUND for any other name.

    Only peers of our peers table (or policy lists) have a queue worth waking:
    a made-up name must not start a task.
    """
    await current_admin()
    st = state()
    try:
        name = canonical_server_name(server_name)
    except BadRequest:
        name = None
    if name is None or not await read(known_peer_txn, tenant(), name):
        raise NotFound(f"no peer {server_name[:100]!r} in this server's peers: "
                       "GET /v1/admin/federation/peers lists them",
                       code="SW_FED_PEER_NOT_FOUND")
    st.federation.sender.queue(tenant().tenant_id, name).poke(reset=True)
    return {"server_name": name, "retrying": True}


@bp.post("/v1/admin/federation/foreign/<participant_id>/refresh")
async def refresh_foreign(participant_id: str) -> dict[str, Any]:
    """Refetch a foreign participant's server descriptor and profile."""
    await current_admin()
    st = state()
    ten = tenant()
    fq = parse_participant(participant_id, ten.server_name, field="participant_id")
    if fq.server_name == ten.server_name:
        raise BadRequest(f"{participant_id} is one of ours, not a foreign participant",
                         code="SW_BAD_ID")
    fed = st.federation
    before = await fed.peer_keys(ten, fq.server_name) if await read(
        keys_db.has_peer_keys_txn, ten, fq.server_name) else []
    keys = await fed.fetch_peer(ten, fq.server_name)
    resp = await fed.get(ten, fq.server_name, f"/profile/{fq.local_id}")
    profile = resp.body if resp.status == 200 else None
    old_id = before[0].key_id if before else None
    return {"participant_id": str(fq), "server_name": fq.server_name, "key_id": keys[0].key_id,
            "previous_key_id": old_id, "key_changed": old_id is not None
            and old_id != keys[0].key_id, "profile": profile}


@bp.post("/v1/admin/rooms/<room_id>/federation/backfill")
async def backfill(room_id: str) -> dict[str, Any]:
    """Pull up to 1000 events of a room from its host, each verified first."""
    admin = await current_admin()
    st = state()
    ten = tenant()
    room = await read(rooms_db.room_txn, ten, room_id)
    if room is None:
        raise room_not_found(room_id)
    host = room_host(room_id)
    if room.host == ten.server_name or host is None:
        raise BadRequest("this server hosts the room: its history is already here",
                         code="SW_BACKFILL_LOCAL_ROOM")
    async with recorded_refusal(ten, room.host, actor=admin.fqid, room_id=room_id):
        check_room_federates(room, ten.server_name)
        decide_peer(ten.policy, room.host)
    fed = st.federation
    pulled: list[dict[str, Any]] = []
    refused = 0
    before: int | None = None
    while len(pulled) < BACKFILL_MAX:
        async with recorded_refusal(ten, room.host, actor=admin.fqid, room_id=room_id):
            page = await history.fetch(fed, ten, room.host, room_id, before=before,
                                       limit=min(100, BACKFILL_MAX - len(pulled)))
        pulled += page.events
        refused += len(page.refused)
        for event, exc in page.refused:
            log_refusal(ten, room.host, exc, event_id=event.get("event_id"), backfill=True)
        if not (page.events or page.refused) or page.next is None:
            break
        before = page.next
    ctx = Ctx(ten, st.clock(), fed.signer(ten))
    stored = await write(room_writes.store_backfill_txn, ctx, room_id, pulled, actor=admin.fqid,
                         peer=room.host, refused=refused)
    logs.log("federation.backfill", tenant=ten.server_name, peer=room.host, room_id=room_id,
             pulled=len(pulled), stored=stored, refused=refused)
    return {"events": stored, "pulled": len(pulled), "refused": refused}


@bp.get("/v1/admin/federation/rejected")
async def rejected() -> dict[str, Any]:
    await current_admin()
    data, nxt = await read(rejected_page_txn, tenant(), request.args.get("peer"),
                           request.args.get("reason"), int_arg("before", None), page_limit())
    for row in data:
        row["created_at"] = iso(row["created_at"])
    return page(data, nxt)


@bp.get("/v1/admin/audit")
async def audit() -> dict[str, Any]:
    await current_admin()
    data, nxt = await read(audit_page_txn, tenant(), request.args.get("action"),
                           request.args.get("peer"), int_arg("before", None), page_limit())
    for row in data:
        row["created_at"] = iso(row["created_at"])
    return page(data, nxt)
