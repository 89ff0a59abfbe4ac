"""``GET /v1/search?q=``: full-text search over messages the caller can see.

Scoped to the caller's tenant and to rooms the caller has joined; foreign
messages stored here are found too (concepts: "no cross-tenant search").
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request

from swfed.api.common import current_user, page_limit, read, tenant
from swfed.storage import search as search_db

bp = Blueprint("search", __name__)


@bp.get("/v1/search")
async def search() -> dict[str, Any]:
    user = await current_user()
    q = request.args.get("q", "")
    return {"data": await read(search_db.search_txn, tenant(), user.fqid, q, page_limit(20))}
