"""Files across servers: serving bytes, and fetching a peer's file (issue 21).

- :func:`file_response` serves a file in place to a client or a peer: never
  sniffed (``nosniff``), sandboxed (``Content-Security-Policy: default-src
  'none'; sandbox``), an attachment unless it is a checked inline image,
  single HTTP ranges (206; 416 past the end), ``ETag`` (the sha256) and
  private, immutable caching.
- ``GET /_scaiwave/federation/v1/media/{media_id}`` answers a signed request
  only to a server with a joined member in a room whose stored events name
  the file; anyone else is refused (``SW_FED_MEDIA_FORBIDDEN``, audited).
- :class:`MediaFetcher` gets a peer's file for our members: only from the
  origin of the event that named it, bounded like every outbound request
  (the client's address rules and slots, one deadline, at most the signed
  size), streamed into a temp file while hashing, and kept only if its size
  and sha256 are the signed event's. A failure is "not available yet"
  (503 ``SW_MEDIA_NOT_YET_AVAILABLE`` with Retry-After) and is tried again
  after a backoff; a peer serving other bytes is audited and nothing is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio
from quart import Blueprint, Response, current_app, request

from swfed import logs
from swfed.context import read, state
from swfed.core.descriptor import FED_PREFIX
from swfed.core.errors import FederationError, SwfedError
from swfed.core.media import (
    INLINE_TYPES,
    MEDIA_ID_RE,
    SNIFF_BYTES,
    MediaFacts,
    check_fetched,
    disposition,
    fetch_origin,
    fetch_retry_seconds,
    not_member_server,
    parse_range,
    sniff,
)
from swfed.federation.client import error_of
from swfed.federation.inbound import _refuse, authenticated
from swfed.storage import media as media_db
from swfed.storage.audit import reject_txn
from swfed.storage.media import MediaStore
from swfed.storage.tenants import Tenant

bp = Blueprint("federation_media", __name__)

CHUNK = 256 * 1024
#: Bytes of a fetched file gathered before one write (and hash) on a worker thread.
WRITE_BATCH = 1024 * 1024
#: Fetches of files in flight toward one peer at once.
FETCHES_PER_PEER = 2
CSP = "default-src 'none'; sandbox"


def media_store() -> MediaStore:
    return MediaStore.for_data_dir(state().config.server.data_dir)


async def _chunks(path: Path, first: int, length: int) -> AsyncIterator[bytes]:
    async with await trio.open_file(path, "rb") as f:
        await f.seek(first)
        left = length
        while left > 0:
            data = await f.read(min(CHUNK, left))
            if not data:
                return
            left -= len(data)
            yield data


def file_response(held: MediaFacts, tenant: Tenant, *, name: str | None = None) -> Response:
    """The file's bytes (or the range asked for) with the headers that keep it inert."""
    path = media_store().path(held.sha256)
    etag = f'"{held.sha256}"'
    inline = held.inline_ok and held.content_type in INLINE_TYPES
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CSP,
        "Content-Disposition": disposition(held.content_type, inline, name),
        "Cache-Control": "private, max-age=31536000, immutable",
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    # what is not shown inline is not given a type a browser would render
    ctype = held.content_type if inline or not _renders(held.content_type) else \
        "application/octet-stream"
    if request.headers.get("If-None-Match") == etag:
        return Response(b"", status=304, headers=headers)
    try:
        span = parse_range(request.headers.get("Range"), held.size)
    except SwfedError as exc:
        if exc.status != 416:
            raise
        return Response(json.dumps(exc.to_json()), status=416, content_type="application/json",
                        headers={**headers, "Content-Range": f"bytes */{held.size}"})
    first, last = span if span is not None else (0, held.size - 1)
    length = max(0, last - first + 1)
    status = 206 if span is not None else 200
    if span is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{held.size}"
    headers["Content-Length"] = str(length)
    m = state().metrics
    m.media_downloads.inc(tenant=tenant.server_name)
    m.media_download_bytes.inc(length, tenant=tenant.server_name)
    response = Response(_chunks(path, first, length), status=status, content_type=ctype,
                        headers=headers)
    response.timeout = None  # a large file to a slow reader: the connection's own limits
    return response


def _renders(content_type: str) -> bool:
    """Types a browser renders or runs when opened (HTML, SVG, XML, scripts)."""
    return (content_type.startswith("text/") or "html" in content_type or "xml" in content_type
            or "script" in content_type or content_type == "image/svg+xml")


# -- what peers ask ------------------------------------------------------------------


@bp.get(FED_PREFIX + "/media/<media_id>")
async def federation_media(media_id: str) -> Response:
    tenant, origin, _ = await authenticated(with_body=False)
    held = (await read(media_db.peer_may_fetch_txn, tenant, media_id, origin)
            if MEDIA_ID_RE.match(media_id) else None)
    if held is None:
        raise await _refuse(tenant, origin, not_member_server(media_id, origin)) from None
    return file_response(held, tenant)


# -- fetching a peer's file ------------------------------------------------------------


def fetcher() -> MediaFetcher:
    """The process's fetcher: the running federation's (tests may run without it)."""
    fed = state().federation
    if fed is not None:
        return fed.media  # type: ignore[no-any-return]
    ext = current_app.extensions
    if "swfed_media_fetcher" not in ext:
        ext["swfed_media_fetcher"] = MediaFetcher(state())
    return ext["swfed_media_fetcher"]  # type: ignore[no-any-return]


def not_yet(held: MediaFacts, why: str, retry_after: int) -> SwfedError:
    exc = SwfedError(f"{held.media_id} is on {held.origin} and not here yet ({why}): "
                     f"try again in {retry_after} s", code="SW_MEDIA_NOT_YET_AVAILABLE",
                     status=503)
    exc.retry_after = retry_after  # type: ignore[attr-defined]
    return exc


#: Background fetches of one file before it waits for a member to ask for it.
BACKGROUND_TRIES = 8
#: Background fetches in flight at once (all peers).
BACKGROUND_AT_ONCE = 8


class MediaFetcher:
    """One fetch per file at a time, :data:`FETCHES_PER_PEER` per peer.

    A stored event naming a peer's file asks for it at once (the commit hook,
    :meth:`request`), so it is usually here before a member opens the room; a
    member asking for a file not here yet fetches it then (:meth:`ensure`).
    A failed fetch is tried again after a backoff, in the background up to
    :data:`BACKGROUND_TRIES` times, and on every member's request after that.
    """

    def __init__(self, state: Any) -> None:
        self.state = state
        self._locks: dict[tuple[int, str], trio.Lock] = {}
        self._peers: dict[str, trio.CapacityLimiter] = {}
        self._nursery: trio.Nursery | None = None
        self._queued: set[tuple[int, str]] = set()
        self._background = trio.CapacityLimiter(BACKGROUND_AT_ONCE)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the background fetches until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def request(self, tenant: Tenant, media_id: str) -> None:
        """Fetch a peer's file soon, in the background (no-op when not running)."""
        key = (tenant.tenant_id, media_id)
        if self._nursery is None or key in self._queued or len(self._queued) >= 10_000:
            return
        self._queued.add(key)
        self._nursery.start_soon(self._in_background, tenant, media_id)

    async def _in_background(self, tenant: Tenant, media_id: str) -> None:
        key = (tenant.tenant_id, media_id)
        try:
            for _ in range(BACKGROUND_TRIES):
                held = await self.state.db.read(media_db.media_txn, tenant, media_id)
                if held is None or held.stored:
                    return
                try:
                    async with self._background:
                        await self.ensure(tenant, held)
                    return
                except SwfedError as exc:
                    await trio.sleep(getattr(exc, "retry_after", 5) or 5)
        except Exception:  # noqa: BLE001 - a member's request fetches it then
            logs.log_exception("media.fetch_crashed", tenant=tenant.server_name,
                               media_id=media_id)
        finally:
            self._queued.discard(key)

    async def ensure(self, tenant: Tenant, held: MediaFacts) -> MediaFacts:
        """The file is here when this returns (the facts, updated); else raises
        503 SW_MEDIA_NOT_YET_AVAILABLE with Retry-After."""
        origin = fetch_origin(held, tenant.server_name)
        if origin is None:
            if held.stored:
                return held
            raise not_yet(held, "its upload is not complete", 5)
        key = (tenant.tenant_id, held.media_id)
        lock = self._locks.setdefault(key, trio.Lock())
        try:
            async with lock:
                return await self._ensure(tenant, held, origin)
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._locks.pop(key, None)

    async def _ensure(self, tenant: Tenant, held: MediaFacts, origin: str) -> MediaFacts:
        st = self.state
        store = MediaStore.for_data_dir(st.config.server.data_dir)
        # Even when the same bytes are here already (another room's, another tenant's),
        # the origin must serve them: knowing a hash is no right to a file.
        failures, next_at = await st.db.read(media_db.fetch_state_txn, tenant, held.media_id)
        now = st.clock()
        if failures and now < next_at:
            raise not_yet(held, "the last fetch from its origin failed",
                          max(1, (next_at - now + 999) // 1000))
        limiter = self._peers.setdefault(origin, trio.CapacityLimiter(FETCHES_PER_PEER))
        async with limiter:
            try:
                temp, inline_ok = await self._fetch(tenant, held, origin, store)
            except FederationError as exc:
                await self._failed(tenant, held, origin, exc, failures)
                raise not_yet(held, exc.message[:300],
                              fetch_retry_seconds(failures + 1)) from None
        await st.db.write(media_db.fetched_txn, tenant, store, held.media_id, temp, inline_ok)
        st.metrics.media_fetches.inc(tenant=tenant.server_name, peer=origin, outcome="ok")
        logs.log("media.fetched", tenant=tenant.server_name, peer=origin,
                 media_id=held.media_id, size=held.size)
        fresh = await st.db.read(media_db.media_txn, tenant, held.media_id)
        assert fresh is not None
        return fresh  # type: ignore[no-any-return]

    async def _fetch(self, tenant: Tenant, held: MediaFacts, origin: str,
                     store: MediaStore) -> tuple[Path, bool]:
        """Stream the origin's bytes into a temp file; (the file, shown inline?).

        Raises FederationError (unreachable, refused, other bytes); the temp
        file is gone then."""
        st = self.state
        fed = st.federation
        if fed is None:
            raise FederationError("federation is not running", code="SW_FED_DISABLED",
                                  status=503)
        temp = store.temp_path()
        digest = hashlib.sha256()
        head = bytearray()
        f = open(temp, "wb")  # noqa: SIM115 - closed below, written from a thread
        try:
            pending = bytearray()

            def write_out(data: bytes) -> None:
                digest.update(data)
                f.write(data)

            async def sink(chunk: bytes) -> None:
                if len(head) < SNIFF_BYTES:
                    head.extend(chunk[:SNIFF_BYTES - len(head)])
                pending.extend(chunk)
                if len(pending) >= WRITE_BATCH:  # one thread hop per MiB, not per chunk
                    data = bytes(pending)
                    pending.clear()
                    await trio.to_thread.run_sync(write_out, data)

            resp = await fed.fetch_file(
                tenant, origin, f"/media/{held.media_id}", max_bytes=held.size,
                timeout=st.config.media.fetch_timeout_seconds, sink=sink)
            if resp.status != 200:
                raise error_of(resp, origin)
            if pending:
                await trio.to_thread.run_sync(write_out, bytes(pending))
            await trio.to_thread.run_sync(_flush_and_sync, f)
            f.close()
            try:
                check_fetched(held, temp.stat().st_size, digest.hexdigest())
            except FederationError as exc:
                await st.db.write(reject_txn, tenant, origin, st.clock(), reason=exc.code,
                                  message=exc.message, action="federation.media.rejected")
                st.metrics.media_fetches.inc(tenant=tenant.server_name, peer=origin,
                                             outcome="mismatch")
                logs.log("federation.media_rejected", level="warning",
                         tenant=tenant.server_name, peer=origin, media_id=held.media_id,
                         reason=exc.code, message=exc.message)
                raise
        except BaseException:
            f.close()
            temp.unlink(missing_ok=True)
            raise
        inline_ok = held.content_type in INLINE_TYPES and sniff(bytes(head)) == held.content_type
        return temp, inline_ok

    async def _failed(self, tenant: Tenant, held: MediaFacts, origin: str,
                      exc: FederationError, failures: int) -> None:
        st = self.state
        if exc.code != "SW_FED_MEDIA_MISMATCH":
            st.metrics.media_fetches.inc(tenant=tenant.server_name, peer=origin,
                                         outcome="failed")
            logs.log("media.fetch_failed", level="warning", tenant=tenant.server_name,
                     peer=origin, media_id=held.media_id, reason=exc.code,
                     message=exc.message[:300])
        retry_at = st.clock() + 1000 * fetch_retry_seconds(failures + 1)
        await st.db.write(media_db.fetch_failed_txn, tenant, held.media_id,
                          f"{exc.code}: {exc.message}", retry_at)


def _flush_and_sync(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())
