"""``GET /v1/me/stream``: Server-Sent Events of my rooms' events and my notifications.

Every SSE message carries ``id: <stream position>``. A client that reconnects
with ``Last-Event-ID`` (or ``?since=``) gets everything after that position,
in order, with no gap and no duplicate: positions are taken in the writer's
commit order, and each read asks for "after the last one sent". Without a
resume point the stream starts at the present. A comment line every
``KEEPALIVE_SECONDS`` keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import trio
from quart import Blueprint, Response, request

from swfed.api.common import current_user, int_arg, read, state, tenant
from swfed.core.errors import BadRequest
from swfed.storage import stream as stream_db

bp = Blueprint("stream", __name__)

KEEPALIVE_SECONDS = 15.0
BATCH = 100


def _resume_point() -> int | None:
    header = request.headers.get("Last-Event-ID")
    if header is not None and header.strip():
        try:
            value = int(header.strip())
        except ValueError:
            raise BadRequest(f"Last-Event-ID: expected a stream position, got {header!r}",
                             code="SW_BAD_PARAM") from None
        if value < 0:
            raise BadRequest("Last-Event-ID: must not be negative", code="SW_BAD_PARAM")
        return value
    return int_arg("since", None)


@bp.get("/v1/me/stream")
async def stream() -> Response:
    user = await current_user()
    ten = tenant()
    st = state()
    after = _resume_point()
    if after is None:
        after = await read(stream_db.stream_head_txn, ten)

    async def events() -> AsyncIterator[bytes]:
        last = after
        yield b"retry: 2000\n: connected\n\n"
        while True:
            wake = st.notifier.current()
            batch = await st.db.read(stream_db.stream_txn, ten, user.local_id, last, BATCH)
            for pos, kind, payload in batch:
                data = json.dumps(payload, ensure_ascii=False)
                yield f"id: {pos}\nevent: {kind}\ndata: {data}\n\n".encode()
                last = pos
            if len(batch) == BATCH:
                continue
            with trio.move_on_after(KEEPALIVE_SECONDS) as scope:
                await wake.wait()
            if scope.cancelled_caught:
                yield b": keepalive\n\n"

    response = Response(events(), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    response.timeout = None
    return response
