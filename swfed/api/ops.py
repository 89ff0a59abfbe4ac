"""Operations: ``GET /metrics`` (Prometheus text) and ``GET /healthz``.

``/metrics`` needs a tenant admin's bearer token and shows that tenant's
series only (tenants are isolated even here); point Prometheus at it with
``authorization: {credentials: TOKEN}``. ``/healthz`` needs nothing and
tells nothing about tenants: 200 when the storage takes a write, every
federating tenant has a signing key and the key scheduler and the sender
run; 503 naming what is wrong otherwise. A storage that refuses writes (disk
full, read-only, I/O errors) is named: ``checks.storage`` carries
``code: SW_STORAGE_UNAVAILABLE``, the ``reason`` and what to do.
"""

from __future__ import annotations

from typing import Any

import trio
from quart import Blueprint, Response

from swfed.api.common import current_admin, state, tenant
from swfed.core.errors import StorageUnavailable
from swfed.federation.keys import RELOAD_SECONDS
from swfed.storage import peers as peers_db
from swfed.storage.db import health_write_txn

bp = Blueprint("ops", __name__)

#: The key scheduler counts as stuck after missing this many reloads.
SCHEDULER_MISSED_RELOADS = 5
HEALTH_WRITE_TIMEOUT = 5.0


async def _refresh_gauges() -> None:
    st = state()
    names = {t.tenant_id: t.server_name for t in st.tenants.all()}
    depths = await st.db.read(peers_db.queue_depths_txn)
    st.metrics.queue_depth.set_all({
        (("peer", dest), ("tenant", names.get(tid, str(tid)))): count
        for tid, dest, count in depths})
    failures: dict[Any, float] = {}
    retry: dict[Any, float] = {}
    now = trio.current_time()
    for (tid, dest), queue in st.federation.sender.queues.items():
        key = (("peer", dest), ("tenant", names.get(tid, str(tid))))
        failures[key] = queue.failures
        retry[key] = max(0.0, queue.retry_at - now) if queue.retry_at is not None else 0.0
    st.metrics.backoff_failures.set_all(failures)
    st.metrics.retry_in.set_all(retry)


@bp.get("/metrics")
async def metrics() -> Response:
    await current_admin()
    await _refresh_gauges()
    return Response(state().metrics.render(tenant().server_name), status=200,
                    content_type="text/plain; version=0.0.4; charset=utf-8")


@bp.get("/healthz")
async def healthz() -> tuple[dict[str, Any], int]:
    st = state()
    checks: dict[str, dict[str, Any]] = {}
    try:
        with trio.fail_after(HEALTH_WRITE_TIMEOUT):
            await st.db.write(health_write_txn, st.clock())
        trouble = st.db.trouble
        if trouble is None:
            checks["storage"] = {"ok": True}
        else:
            # The probe's small update fit, but the last real write did not
            # (the database cannot grow): still unavailable.
            checks["storage"] = {"ok": False, "code": trouble.code, "reason": trouble.reason,
                                 "error": f"the last write was refused: {trouble.message}"}
    except StorageUnavailable as exc:
        # disk full, read-only, I/O errors: named, with what to do
        checks["storage"] = {"ok": False, "code": exc.code, "reason": exc.reason,
                             "error": exc.message}
    except Exception as exc:  # noqa: BLE001 - any failure to write is the answer
        checks["storage"] = {"ok": False, "error": f"cannot write the database: "
                             f"{type(exc).__name__}: {exc}"}
    fed = st.federation
    missing = [t.server_name for t in st.tenants.all()
               if t.policy.federation_enabled and fed.keyring.current(t) is None]
    checks["keys"] = ({"ok": True} if not missing else
                      {"ok": False, "error": f"{len(missing)} tenant(s) without a signing key: "
                       "run swfed admin federation key generate"})
    beat = fed.scheduler_heartbeat
    late = beat is None or trio.current_time() - beat > RELOAD_SECONDS * SCHEDULER_MISSED_RELOADS
    checks["key_scheduler"] = ({"ok": True} if not late else
                               {"ok": False, "error": "the key scheduler has not run for "
                                f"{SCHEDULER_MISSED_RELOADS} reload periods"})
    sender_up = fed.sender.running
    checks["sender"] = {"ok": True} if sender_up else {"ok": False,
                                                       "error": "the sender is not running"}
    ok = all(c["ok"] for c in checks.values())
    return {"status": "ok" if ok else "failing", "checks": checks}, 200 if ok else 503
