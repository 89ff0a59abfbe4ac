"""``POST /v1/admin/federation/peers/{server_name}/doctor``: ``swfed doctor`` over HTTP.

The same :class:`swfed.doctor.Doctor` and the same checks as the CLI, run by
the server for a tenant admin (the web client's "Run doctor" button). The
answer is the CLI's ``--json`` object: ``server_name``, ``peer``, ``ok`` and
``checks`` [{name, status, detail, fix, code}]. Like the CLI, it only reads.
"""

from __future__ import annotations

from typing import Any

import attrs
from quart import Blueprint

from swfed import logs
from swfed.api.common import current_admin, read, state, tenant
from swfed.config import validate_server_name
from swfed.core.errors import BadRequest
from swfed.doctor import Doctor, Local, exit_status
from swfed.federation.client import FederationClient
from swfed.storage import keys as keys_db

bp = Blueprint("doctor_api", __name__)


@bp.post("/v1/admin/federation/peers/<server_name>/doctor")
async def run_doctor(server_name: str) -> dict[str, Any]:
    """Run every doctor check against one peer; 200 whatever the checks found."""
    admin = await current_admin()
    try:
        peer = validate_server_name(server_name)
    except ValueError as exc:
        raise BadRequest(f"server_name {server_name!r}: {exc}",
                         code="SW_BAD_SERVER_NAME") from exc
    st = state()
    ten = tenant()
    local = Local(ten, *await read(keys_db.doctor_facts_txn, ten, peer, st.clock()))
    config = st.config
    # Our own descriptor may well live on a private address in a homelab:
    # the CLI allows that for this one check, and so do we.
    own_cfg = attrs.evolve(config.federation, allow_private_addresses=True)
    async with FederationClient(config.federation) as client, \
            FederationClient(own_cfg) as own_client:
        checks = await Doctor(config, local, peer, client=client, own_client=own_client,
                              clock=st.clock).run()
    ok = exit_status(checks) == 0
    logs.log("doctor.run", tenant=ten.server_name, peer=peer, actor=admin.fqid, ok=ok)
    return {"server_name": ten.server_name, "peer": peer, "ok": ok,
            "checks": [c.to_json() for c in checks]}
