"""``GET /v1/me/stream``: Server-Sent Events of my rooms' events and my notifications.

Every SSE message carries ``id: <stream position>``. A client that reconnects
with ``Last-Event-ID`` (or ``?since=``) gets everything after that position,
in order, with no gap and no duplicate: positions are taken in the writer's
commit order, and each read asks for "after the last one sent". Without a
resume point the stream starts at the present. A comment line every
``KEEPALIVE_SECONDS`` keeps proxies from closing an idle stream. A user has
at most ``[limits] streams_per_user`` streams open; one more is 429
``SW_RATE_LIMITED``.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import AsyncIterator

import trio
from quart import Blueprint, Response, request

from swfed.api.common import current_user, int_arg, limits, rate_limited, read, state, tenant
from swfed.core.errors import BadRequest
from swfed.storage import stream as stream_db
from swfed.typing_signals import TYPING

bp = Blueprint("stream", __name__)

KEEPALIVE_SECONDS = 15.0
BATCH = 100


#: Stream positions are SQLite integers; anything past this is not one of ours.
MAX_POSITION = 2**62


def _resume_point() -> int | None:
    """``Last-Event-ID`` (or ``?since=``): a position 0..2**62; raises SW_BAD_PARAM."""
    header = request.headers.get("Last-Event-ID")
    if header is not None and header.strip():
        raw = header.strip()
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 19) or int(raw) > MAX_POSITION:
            raise BadRequest(f"Last-Event-ID: expected a stream position 0..{MAX_POSITION} "
                             f"(the id: of an event this stream sent), got {raw[:40]!r}",
                             code="SW_BAD_PARAM")
        return int(raw)
    return int_arg("since", None, high=MAX_POSITION)


@bp.get("/v1/me/stream")
async def stream() -> Response:
    user = await current_user()
    ten = tenant()
    st = state()
    after = _resume_point()
    if after is None:
        after = await read(stream_db.stream_head_txn, ten)
    slots = limits().streams
    slot_key = (ten.tenant_id, user.local_id)
    if not slots.acquire(slot_key):
        raise rate_limited("stream", user.fqid, f"{slots.cap} streams are open for "
                           f"{user.fqid} already ([limits] streams_per_user): close one",
                           KEEPALIVE_SECONDS)
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            slots.release(slot_key)

    async def events() -> AsyncIterator[bytes]:
        try:
            async for chunk in _events():
                yield chunk
        finally:
            release()

    async def _events() -> AsyncIterator[bytes]:
        last = after
        typing_mark = TYPING.head()
        yield b"retry: 2000\n: connected\n\n"
        while True:
            wake = st.notifier.current(ten.tenant_id)
            batch = await st.db.read(stream_db.stream_txn, ten, user.local_id, last, BATCH)
            for pos, kind, payload in batch:
                data = json.dumps(payload, ensure_ascii=False)
                yield f"id: {pos}\nevent: {kind}\ndata: {data}\n\n".encode()
                last = pos
            # typing signals: never stored, so no id: (nothing to resume)
            signals, typing_mark = TYPING.since(ten.tenant_id, user.local_id, typing_mark)
            for signal in signals:
                yield f"event: typing\ndata: {json.dumps(signal, ensure_ascii=False)}\n\n".encode()
            if len(batch) == BATCH:
                continue
            with trio.move_on_after(KEEPALIVE_SECONDS) as scope:
                await wake.wait()
            if scope.cancelled_caught:
                yield b": keepalive\n\n"

    body = events()
    # A body never started (the client left first) runs no finally: free the slot
    # when it is collected.
    weakref.finalize(body, release)
    response = Response(body, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    response.timeout = None
    return response
