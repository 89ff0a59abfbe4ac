"""``/v1/media``: upload a file, read one (issue 21).

``POST /v1/media`` takes the raw bytes with their ``Content-Type`` and
answers ``{media_id, size, sha256, content_type}``. The body is never held
whole: it is hashed while it is written to a temp file under
``data_dir/media/tmp``, fsynced, and moved to its content name in the
transaction that records it (swfed.storage.media). Refused before a byte is
read: a ``Content-Length`` over ``[media] max_upload_bytes`` (413
SW_MEDIA_TOO_LARGE) or over a quota (507); refused while reading: more
bytes than that, a claimed image whose first bytes are not one (415
SW_MEDIA_NOT_IMAGE), a body that stops (408, ``upload_timeout_seconds`` in
all, :data:`IDLE_SECONDS` between chunks). A refused upload leaves nothing.

``GET /v1/media/{media_id}`` serves a file to its uploader and to members of
a room whose events name it (swfed.federation.media.file_response); a
peer's file is fetched from its origin first.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import trio
from quart import Blueprint, Response, request

from swfed import logs
from swfed.api.common import current_user, read, state, tenant, write
from swfed.core.errors import BadRequest, SwfedError
from swfed.core.media import (
    MEDIA_ID_RE,
    SNIFF_BYTES,
    check_claim,
    may_read,
    new_media_id,
    normalize_content_type,
)
from swfed.federation.media import fetcher, file_response, media_store
from swfed.storage import media as media_db
from swfed.storage.media import Upload

bp = Blueprint("media", __name__)

#: An upload whose next chunk does not come within this many seconds is cut off.
IDLE_SECONDS = 30.0
#: Bytes gathered before one write to disk (on a worker thread).
WRITE_BATCH = 1024 * 1024


def _too_large(limit: int, size: int | None = None) -> SwfedError:
    said = f"{size} bytes" if size is not None else "more"
    return SwfedError(f"the upload is {said}, over the limit of {limit} bytes "
                      "([media] max_upload_bytes): send a smaller file",
                      code="SW_MEDIA_TOO_LARGE", status=413)


class _Writer:
    """A temp file hashed as it is written, from a worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "wb")  # noqa: SIM115 - closed in finish/abort
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.file.write(data)
        self.size += len(data)

    def finish(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def abort(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


async def _receive(writer: _Writer, content_type: str, limit: int) -> bool:
    """Stream the request body into ``writer``; returns whether it shows inline."""
    head = b""
    checked: bool | None = None
    pending = bytearray()
    body = request.body
    expected = request.content_length
    while True:
        with trio.move_on_after(IDLE_SECONDS) as idle:
            try:
                chunk = await body.__anext__()
            except StopAsyncIteration:
                break
        if idle.cancelled_caught:
            raise SwfedError(f"no bytes of the upload for {IDLE_SECONDS:.0f} s: send it "
                             "again", code="SW_MEDIA_UPLOAD_TIMEOUT", status=408)
        if checked is None and len(head) < SNIFF_BYTES:
            head += chunk[:SNIFF_BYTES - len(head)]
            if len(head) >= SNIFF_BYTES:
                checked = check_claim(content_type, head, complete=False)
        if writer.size + len(pending) + len(chunk) > limit:
            raise _too_large(limit)
        pending += chunk
        if len(pending) >= WRITE_BATCH:
            data, pending = bytes(pending), bytearray()
            await trio.to_thread.run_sync(writer.write, data)
    if pending:
        await trio.to_thread.run_sync(writer.write, bytes(pending))
    if expected is not None and writer.size != expected:
        raise BadRequest(f"the upload ended after {writer.size} of its {expected} bytes "
                         "(Content-Length): send it again", code="SW_MEDIA_INCOMPLETE")
    if checked is None:
        checked = check_claim(content_type, head, complete=True)
    await trio.to_thread.run_sync(writer.finish)
    return checked


@bp.post("/v1/media")
async def upload() -> tuple[dict[str, Any], int]:
    user = await current_user()
    ten = tenant()
    st = state()
    cfg = st.config.media
    try:
        content_type = normalize_content_type(request.headers.get("Content-Type"))
        length = request.content_length
        if length is not None and length > cfg.max_upload_bytes:
            raise _too_large(cfg.max_upload_bytes, length)
        used = await read(media_db.usage_txn, ten, user.fqid)
        media_db.check_quota(used, length or 0, cfg.user_quota_bytes, cfg.tenant_quota_bytes)
        # the most this upload may be: the size limit, and what the quotas leave
        room = min(cfg.max_upload_bytes, cfg.user_quota_bytes - used[0],
                   cfg.tenant_quota_bytes - used[1])
        store = media_store()
        writer = _Writer(await trio.to_thread.run_sync(store.temp_path))
        try:
            with trio.fail_after(cfg.upload_timeout_seconds):
                try:
                    inline_ok = await _receive(writer, content_type, max(room, 0))
                except SwfedError as exc:
                    if exc.code == "SW_MEDIA_TOO_LARGE" and room < cfg.max_upload_bytes:
                        # the quota, not the size limit, stopped it: say which
                        media_db.check_quota(used, max(room, 0) + 1, cfg.user_quota_bytes,
                                             cfg.tenant_quota_bytes)
                    raise
            media_id = new_media_id()
            done = Upload(writer.path, writer.digest.hexdigest(), writer.size, content_type,
                          inline_ok)
            await write(media_db.add_upload_txn, ten, store, user.fqid, media_id, done,
                        st.clock(), cfg.user_quota_bytes, cfg.tenant_quota_bytes)
        except trio.TooSlowError:
            await trio.to_thread.run_sync(writer.abort)
            raise SwfedError(f"the upload did not arrive within {cfg.upload_timeout_seconds:.0f}"
                             " s ([media] upload_timeout_seconds)",
                             code="SW_MEDIA_UPLOAD_TIMEOUT", status=408) from None
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(writer.abort)
            raise
    except SwfedError as exc:
        st.metrics.media_refused.inc(tenant=ten.server_name, reason=exc.code)
        raise
    st.metrics.media_uploads.inc(tenant=ten.server_name)
    st.metrics.media_upload_bytes.inc(done.size, tenant=ten.server_name)
    logs.log("media.uploaded", tenant=ten.server_name, user=user.fqid, media_id=media_id,
             size=done.size, content_type=content_type)
    return {"media_id": media_id, "size": done.size, "sha256": done.sha256,
            "content_type": content_type}, 201


@bp.get("/v1/media/limits")
async def upload_limits() -> dict[str, Any]:
    """What the client says before uploading: the size limit and what is left of quotas."""
    user = await current_user()
    cfg = state().config.media
    mine, ours = await read(media_db.usage_txn, tenant(), user.fqid)
    return {"max_upload_bytes": cfg.max_upload_bytes, "used_bytes": mine,
            "quota_bytes": cfg.user_quota_bytes,
            "left_bytes": max(0, min(cfg.user_quota_bytes - mine, cfg.tenant_quota_bytes - ours))}


@bp.get("/v1/media/<media_id>")
async def download(media_id: str) -> Response:
    user = await current_user()
    ten = tenant()
    held, in_room = ((None, False) if not MEDIA_ID_RE.match(media_id) else
                     await read(media_db.readable_txn, ten, media_id, user.fqid))
    held = may_read(user.fqid, held, in_room)
    if not held.stored:
        held = await fetcher().ensure(ten, held)
    name = request.args.get("name")
    return file_response(held, ten, name=name[:255] if name else None)
