"""The federation service: peers' keys, verification, signed requests.

One :class:`Federation` per process, hung on the app state. It owns the
:class:`~swfed.federation.keys.KeyRing` (our keys), the outbound
:class:`~swfed.federation.client.FederationClient`, and the
:class:`~swfed.federation.sender.Sender`, which it builds from its parts (a transport
over :meth:`Federation.post`, a store over the database, the tenant
directory, the metrics, the wall clock).

Peers' keys come from their descriptors, cached in ``peer_keys``. When a
signature names a key id we do not know, or fails with the key we cached,
the descriptor is fetched again once (at most every
``REFETCH_MIN_SECONDS`` per peer) and the check repeated (DESIGN §3).
A peer's keys come only from the peer itself (``core.keys.key_believed``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from swfed import logs
from swfed.core.descriptor import DESCRIPTOR_PATH, FED_PREFIX, parse_descriptor
from swfed.core.errors import (
    BadRequest,
    FederationError,
    PeerUnreachable,
    StorageUnavailable,
)
from swfed.core.keys import KeyInfo, key_believed, refusal, verifies_event, verifies_request
from swfed.core.signing import (
    FedAuth,
    decode_base64,
    parse_auth_header,
    sign_request,
    signable_bytes,
    signing_key_ids,
    verify_detached,
    verify_request,
    verify_signed_json,
)
from swfed.federation.client import TRANSPORT_CODES, FederationClient, FedResponse
from swfed.federation.client import error_of as error_of  # where callers have found it
from swfed.federation.keys import KeyRing
from swfed.federation.media import MediaFetcher
from swfed.federation.outbox import OutboxStore
from swfed.federation.sender import Parts, Sender
from swfed.federation.transport import FederationTransport
from swfed.storage import events as events_db
from swfed.storage import keys as keys_db
from swfed.storage import peers as peers_db
from swfed.storage.tenants import Tenant
from swfed.storage.touched import Touched

REFETCH_MIN_SECONDS = 2.0
#: A failed discovery of a name we hold no keys for is remembered this long:
#: it is not fetched again meanwhile (a peer naming origins of its choice
#: cannot make us fetch them over and over). Peers we know are refetched at
#: most every REFETCH_MIN_SECONDS instead: one back from downtime must not wait.
NEGATIVE_CACHE_SECONDS = 10.0
#: Discoveries in flight at once, whatever the names: the rest of the
#: outbound connections stay free for deliveries.
MAX_DISCOVERIES = 8
#: Names remembered for the above (the oldest are forgotten first).
MAX_REMEMBERED = 10_000
#: Peers' keys are kept in memory this long after reading them from the
#: database (only this process writes them, in :meth:`Federation.fetch_peer`,
#: which replaces the entry; the bound is a safety net, not a rule).
KEYS_MEMO_SECONDS = 60.0
#: A peer that keeps contacting us has its ``last_seen`` written this often at most.
SEEN_WRITE_SECONDS = 30.0
#: A batch of at least this many signatures is checked in worker threads
#: (libsodium releases the GIL); fewer are cheaper than the thread hop.
THREADED_VERIFY_MIN = 8


def mismatch(message: str) -> FederationError:
    return FederationError(message, code="SW_FED_SIGNATURE_MISMATCH", status=401)


class Federation:
    def __init__(self, state: Any, client: FederationClient) -> None:
        from swfed.federation.repair import Repairer

        self.state = state
        self.client = client
        self.keyring = KeyRing()
        self.sender = Sender(Parts(transport=FederationTransport(self),
                                   store=OutboxStore(state.db, self.signer),
                                   tenants=state.tenants, metrics=state.metrics,
                                   wall_ms=state.clock, on_failure=self.failed_toward))
        self.repairer = Repairer(self)
        #: Peers' files, fetched for our members (swfed.federation.media).
        self.media = MediaFetcher(state)
        self.scheduler_heartbeat: float | None = None
        #: Held while a tenant's keys are loaded, generated or rotated.
        self.key_lock = trio.Lock()
        self._fetched_at: dict[tuple[int, str], float] = {}
        self._fetch_locks: dict[tuple[int, str], trio.Lock] = {}
        self._failed: dict[tuple[int, str], tuple[float, FederationError]] = {}
        self._discoveries = trio.CapacityLimiter(MAX_DISCOVERIES)
        #: (tenant_id, peer) -> (read at, keys, the descriptor's valid_until)
        self._keys: dict[tuple[int, str], tuple[float, list[KeyInfo], int | None]] = {}
        self._keys_generation = 0
        #: (tenant_id, peer) -> when heard_from last wrote its row (trio clock)
        self._seen_written: dict[tuple[int, str], float] = {}

    # -- ours ----------------------------------------------------------------

    async def tenants_added(self, tenants: list[Tenant]) -> None:
        """A tenant created while we run: its key is ready before its first request."""
        from swfed.federation.keys import ensure_tenant_keys

        for tenant in tenants:
            try:
                await ensure_tenant_keys(self.state, tenant)
            except StorageUnavailable:
                pass  # logged by the database; the key scheduler retries within seconds
            except Exception:  # noqa: BLE001 - the key scheduler retries within seconds
                logs.log_exception("federation.key.load_failed", tenant=tenant.server_name)

    def signer(self, tenant: Tenant) -> Callable[..., dict[str, Any]] | None:
        return self.keyring.signer(tenant)

    def committed(self, touched: Touched) -> None:
        """The commit hook (``Database.on_commit``): wake delivery to the peers that got
        outbox rows, start the gap repairs the commit saw a need for."""
        for tenant_id, destination in touched.peers:
            self.sender.kick(tenant_id, destination)
        for tenant_id, room_id in touched.repairs:
            tenant = self.state.tenants.by_id(tenant_id)
            if tenant is not None:
                self.repairer.request(tenant, room_id, gap=True)
        for tenant_id, media_id in touched.media:
            tenant = self.state.tenants.by_id(tenant_id)
            if tenant is not None:
                self.media.request(tenant, media_id)

    # -- peers' keys -----------------------------------------------------------

    async def fetch_peer(self, tenant: Tenant, server_name: str, *,
                         known: bool = False) -> list[KeyInfo]:
        """Fetch, check and cache a peer's descriptor from the peer itself; returns its keys.

        Only the server vouches for its own keys (``core.keys.key_believed``):
        the descriptor comes from ``server_name``'s own well-known URL, TLS
        verified for that name, never from a third party's copy. A failed
        fetch of a peer we hold no keys for (``known`` False) is remembered for
        :data:`NEGATIVE_CACHE_SECONDS`, whatever failed: a peer whose
        descriptor we refuse is not fetched again on its every request.
        Raises FederationError (unreachable, TLS, bad descriptor, protocol).
        """
        key = (tenant.tenant_id, server_name)
        failed = None if known else self._failed.get(key)
        if failed is not None and trio.current_time() - failed[0] < NEGATIVE_CACHE_SECONDS:
            raise failed[1]
        for memo in (self._fetched_at, self._fetch_locks, self._failed):
            while len(memo) >= MAX_REMEMBERED:
                memo.pop(next(iter(memo)))  # dicts keep insertion order: the oldest
        lock = self._fetch_locks.setdefault(key, trio.Lock())
        async with lock, self._discoveries:
            failed = None if known else self._failed.get(key)
            if failed is not None and trio.current_time() - failed[0] < NEGATIVE_CACHE_SECONDS:
                raise failed[1]  # another request just tried, while we waited for the lock
            self._fetched_at[key] = trio.current_time()
            try:
                desc = await self._descriptor(server_name)
                keys = parse_descriptor(server_name, desc, self.state.clock())
            except FederationError as exc:
                logs.log("federation.peer_discovery_failed", level="warning",
                         tenant=tenant.server_name, peer=server_name, reason=exc.code,
                         message=exc.message)
                # kept for every peer; only a peer we hold no keys for is refused from it
                self._failed[key] = (trio.current_time(), exc)
                raise
            self._failed.pop(key, None)
            # fetched from server_name itself: the one source believed for its keys
            assert key_believed(server_name, server_name, "store")
            try:
                await self.state.db.write(
                    keys_db.store_peer_keys_txn, tenant, server_name,
                    [{"key_id": k.key_id, "public_key": k.public_key,
                      "retired_at": k.retired_at, "expires_at": k.expires_at} for k in keys],
                    json.dumps(desc), self.state.clock())
            finally:
                # a read begun before this write must not memoise what it replaced
                self._keys_generation += 1
                self._keys.pop(key, None)
            logs.log("federation.peer_discovered", tenant=tenant.server_name, peer=server_name,
                     key_id=keys[0].key_id)
            return keys

    async def _descriptor(self, server_name: str) -> dict[str, Any]:
        resp = await self.client.get_json(server_name, DESCRIPTOR_PATH)
        if resp.status != 200:
            raise FederationError(
                f"{server_name}{DESCRIPTOR_PATH} answered {resp.status}: federation "
                "needs the peer to publish its descriptor",
                code="SW_FED_BAD_DESCRIPTOR", status=502)
        return resp.body

    async def peer_keys(self, tenant: Tenant, server_name: str, *,
                        refresh: bool = False) -> list[KeyInfo]:
        """The peer's keys: cached, or fetched (``refresh``, none cached, or the cached
        descriptor past its ``valid_until``; then a peer out of reach keeps its cached keys).
        """
        if not refresh:
            keys, valid_until = await self._cached_keys(tenant, server_name)
            if keys:
                if (valid_until is None or self.state.clock() <= valid_until
                        or not self._may_refetch(tenant, server_name)):
                    return keys
                try:
                    return await self.fetch_peer(tenant, server_name, known=True)
                except FederationError as exc:
                    if exc.code not in TRANSPORT_CODES:
                        raise
                    return keys
        return await self.fetch_peer(tenant, server_name, known=refresh)

    async def _cached_keys(self, tenant: Tenant, server_name: str
                           ) -> tuple[list[KeyInfo], int | None]:
        """The keys stored for a peer (and its descriptor's valid_until), memoised."""
        key = (tenant.tenant_id, server_name)
        now = trio.current_time()
        memo = self._keys.get(key)
        if memo is not None and now - memo[0] < KEYS_MEMO_SECONDS:
            return memo[1], memo[2]
        generation = self._keys_generation
        cached, valid_until = await self.state.db.read(keys_db.cached_peer_txn, tenant,
                                                       server_name)
        keys = [KeyInfo(k.key_id, k.public_key, k.retired_at, k.expires_at) for k in cached]
        if keys and generation == self._keys_generation:
            if len(self._keys) >= MAX_REMEMBERED:
                self._keys.clear()
            self._keys[key] = (now, keys, valid_until)
        return keys, valid_until

    def _may_refetch(self, tenant: Tenant, server_name: str) -> bool:
        last = self._fetched_at.get((tenant.tenant_id, server_name))
        return last is None or trio.current_time() - last >= REFETCH_MIN_SECONDS

    async def _verify_with_peer_key(self, tenant: Tenant, server_name: str, key_ids: list[str],
                                    usable: Callable[[KeyInfo], bool],
                                    check: Callable[[bytes, str], None],
                                    origin_ts: int | None = None) -> None:
        """Run ``check(raw_key, key_id)`` with the peer's key; refetch once on failure.

        ``usable`` is the rule of :mod:`swfed.core.keys` for what is verified
        (a live request, or an event made at ``origin_ts``).
        """
        last: FederationError | None = None
        for attempt in (0, 1):
            if attempt == 1 and not self._may_refetch(tenant, server_name):
                failed = self._failed.get((tenant.tenant_id, server_name))
                if last is None and failed is not None and failed[1].code in TRANSPORT_CODES:
                    # we just tried to fetch its keys and could not: not a bad
                    # signature yet, but a key we cannot check now (transient)
                    raise failed[1]
                break
            keys = {k.key_id: k for k in await self.peer_keys(
                tenant, server_name, refresh=attempt == 1)}
            for key_id in key_ids:
                info = keys.get(key_id)
                if info is None:
                    continue
                if not usable(info):
                    last = mismatch(refusal(info, server_name, origin_ts=origin_ts))
                    continue
                try:
                    check(decode_base64(info.public_key), key_id)
                    return
                except FederationError as exc:
                    last = exc
        if last is None:
            last = mismatch(f"{server_name} signed with key {', '.join(key_ids) or '(none)'}, "
                            "which its descriptor does not list; if it rotated its key, "
                            "refresh it: POST /v1/admin/federation/foreign/{participant_id}/"
                            "refresh")
        raise last

    async def verify_event(self, tenant: Tenant, event: dict[str, Any], *,
                           history: bool = False, via: str | None = None) -> None:
        """Check the origin's signature on an event; raises SW_FED_SIGNATURE_MISMATCH.

        One rule for events arriving live and for history (``history`` is kept
        for the callers' clarity): the key that was current when the event was
        made verifies it, however many rotations ago (swfed.core.keys). So
        events queued while we were away still arrive after the overlap ended.

        ``via``: the server that relayed the event (a room's host). It never
        vouches for the origin's keys: when we cannot reach the origin for a
        key we do not hold, the event waits -- a transient PeerUnreachable,
        which the relay retries -- until the origin answers.
        """
        origin = event["origin"]
        now = self.state.clock()
        ts = event.get("origin_ts", 0)

        def usable(info: KeyInfo) -> bool:
            return verifies_event(info, ts, now)

        def check(raw: bytes, key_id: str) -> None:
            verify_signed_json(event, origin, key_id, raw)

        try:
            await self._verify_with_peer_key(tenant, origin, signing_key_ids(event, origin),
                                             usable, check, origin_ts=ts)
        except FederationError as exc:
            if via is None or via == origin or exc.code not in TRANSPORT_CODES:
                raise
            raise PeerUnreachable(
                f"{origin}, the origin of this event {via} relayed, could not be reached "
                f"for its keys ({exc.message}); a server's keys are taken only from the "
                f"server itself, so the event waits until {origin} answers",
                code=exc.code) from None

    async def verify_new_events(self, tenant: Tenant,
                                items: list[tuple[dict[str, Any], bytes | None]], *,
                                via: str | None = None) -> list[FederationError | None]:
        """:meth:`verify_events`, except for events already stored here (None for them).

        Storing one again is a no-op that checks it is the same event
        (``core.rooms.check_replay``), so its signature need not be checked
        twice: gap repair and the host's queue often bring the same events.
        """
        if not items:
            return []
        keys = [(e["room_id"], e["event_id"]) for e, _ in items]
        found = await self.state.db.read(events_db.stored_ids_txn, tenant, keys)
        fresh = [i for i, key in enumerate(keys) if key not in found]
        out: list[FederationError | None] = [None] * len(items)
        errors = await self.verify_events(tenant, [items[i] for i in fresh], via=via)
        for i, error in zip(fresh, errors, strict=True):
            out[i] = error
        return out

    async def verify_events(self, tenant: Tenant, items: list[tuple[dict[str, Any], bytes | None]],
                            *, via: str | None = None) -> list[FederationError | None]:
        """:meth:`verify_event` for a batch: one error (or None) per ``(event, signable)``.

        The fast path reads each origin's keys once and checks the signatures
        together, in worker threads for a large batch (libsodium releases the
        GIL, so a catch-up uses both cores). An event it cannot settle -- no
        usable key cached, a signature that fails -- takes the slow path,
        :meth:`verify_event`, which refetches keys and names the refusal.
        ``via``: the peer that sent the batch, when it relays others' events.
        """
        now = self.state.clock()
        keys: dict[str, dict[str, KeyInfo] | None] = {}
        checks: list[tuple[int, bytes, bytes, bytes]] = []  # index, data, signature, key
        for index, (event, signable) in enumerate(items):
            origin = event["origin"]
            if origin not in keys:
                try:
                    known, valid_until = await self._cached_keys(tenant, origin)
                except FederationError:
                    known, valid_until = [], None
                # a descriptor past its valid_until is refetched first (slow path)
                fresh = valid_until is None or now <= valid_until
                keys[origin] = {k.key_id: k for k in known} if fresh else None
            found = keys[origin] or {}
            sigs = event["signatures"].get(origin)
            for key_id in signing_key_ids(event, origin):
                info = found.get(key_id)
                if info is None or not verifies_event(info, event.get("origin_ts", 0), now):
                    continue
                try:
                    data = signable_bytes(event) if signable is None else signable
                    checks.append((index, data, decode_base64(sigs[key_id]),
                                   decode_base64(info.public_key)))
                except (BadRequest, TypeError):
                    pass
                break
        ok = set()
        if len(checks) >= THREADED_VERIFY_MIN:
            half = (len(checks) + 1) // 2
            results: list[set[int]] = []

            async def run(part: list[tuple[int, bytes, bytes, bytes]]) -> None:
                results.append(await trio.to_thread.run_sync(verify_detached, part))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run, checks[:half])
                nursery.start_soon(run, checks[half:])
            ok = set().union(*results)
        elif checks:
            ok = verify_detached(checks)
        out: list[FederationError | None] = []
        for index, (event, _) in enumerate(items):
            if index in ok:
                out.append(None)
                continue
            origin_via = via if via is not None and via != event["origin"] else None
            try:
                await self.verify_event(tenant, event, via=origin_via)
                out.append(None)
            except FederationError as exc:
                out.append(exc)
            except Exception:  # a bug must not fail the whole batch: this event waits
                logs.log_exception("federation.event.internal_error",
                                   tenant=tenant.server_name, peer=via or event["origin"],
                                   event_id=event.get("event_id"))
                out.append(FederationError("internal error while checking this event; try "
                                           "again later", code="SW_INTERNAL", status=500))
        return out

    async def authenticate(self, tenant: Tenant, method: str, uri: str,
                           content: dict[str, Any] | None, header: str | FedAuth | None, *,
                           body: bytes | None = None) -> FedAuth:
        """Check a peer's signed request to us; returns the verified header.

        ``header``: as received, or already parsed; ``body``: the raw bytes
        ``content`` was parsed from (core.signing.verify_request).
        Raises SW_FED_SIGNATURE_MISMATCH (and discovery errors of the origin).
        """
        auth = header if isinstance(header, FedAuth) else parse_auth_header(header)
        if auth.destination != tenant.server_name:
            raise mismatch(f"request is addressed to {auth.destination}, this is "
                           f"{tenant.server_name}")
        now = self.state.clock()

        def check(raw: bytes, key_id: str) -> None:
            verify_request(auth, method=method, uri=uri, content=content, verify_key=raw,
                           now_ms=now, body=body)

        await self._verify_with_peer_key(tenant, auth.origin, [auth.key_id],
                                         lambda info: verifies_request(info, now), check)
        return auth

    # -- requests to peers -----------------------------------------------------

    def _auth(self, tenant: Tenant, destination: str) -> Callable[..., str]:
        keypair = self.keyring.current(tenant)
        if keypair is None:
            raise FederationError("this server has no federation key: run "
                                  "'swfed admin federation key generate'",
                                  code="SW_FED_NO_KEY", status=503)

        def auth(method: str, uri: str, content: Any, content_bytes: bytes | None) -> str:
            # the bytes sent are canonical JSON of the content: sign them as they are
            return sign_request(method=method, uri=uri, origin=tenant.server_name,
                                destination=destination, ts_ms=self.state.clock(),
                                content=content, keypair=keypair, content_bytes=content_bytes)

        return auth

    async def _ready(self, tenant: Tenant, destination: str) -> None:
        # Knowing the peer's descriptor first checks the protocol version
        # intersection before any event leaves.
        await self.peer_keys(tenant, destination)

    async def post(self, tenant: Tenant, destination: str, path: str,
                   body: dict[str, Any] | None, *, raw: bytes | None = None) -> FedResponse:
        """A signed POST of ``body``, or of ``raw`` (the body as canonical JSON already)."""
        await self._ready(tenant, destination)
        return await self.client.post_json(destination, FED_PREFIX + path, body,
                                           auth=self._auth(tenant, destination), raw=raw)

    async def get(self, tenant: Tenant, destination: str, path: str) -> FedResponse:
        await self._ready(tenant, destination)
        return await self.client.get_json(destination, FED_PREFIX + path,
                                          auth=self._auth(tenant, destination))

    async def fetch_file(self, tenant: Tenant, destination: str, path: str, *,
                         max_bytes: int, timeout: float,
                         sink: Callable[[bytes], Awaitable[None]]) -> FedResponse:
        """A signed GET of a file (swfed.federation.media); its bytes go to ``sink``."""
        await self._ready(tenant, destination)
        return await self.client.fetch_bytes(destination, FED_PREFIX + path,
                                             auth=self._auth(tenant, destination),
                                             max_bytes=max_bytes, timeout=timeout, sink=sink)

    async def heard_from(self, tenant: Tenant, server_name: str) -> None:
        """A verified request from a peer: it is up, retry its queue now.

        The peer's row (``last_seen``, its error cleared) is written at most
        every :data:`SEEN_WRITE_SECONDS` while nothing failed meanwhile, not
        once per request: a busy peer's every /send would cost a commit.
        """
        key = (tenant.tenant_id, server_name)
        now = trio.current_time()
        written = self._seen_written.get(key)
        if written is None or now - written >= SEEN_WRITE_SECONDS:
            await self.state.db.write(peers_db.peer_ok_txn, tenant.tenant_id, server_name,
                                      self.state.clock())
            if len(self._seen_written) >= MAX_REMEMBERED:
                self._seen_written.clear()
            self._seen_written[key] = now
        self.sender.heard_from(tenant.tenant_id, server_name)

    def failed_toward(self, tenant_id: int, server_name: str) -> None:
        """Our delivery to the peer failed (its row says so): the next contact clears it."""
        self._seen_written.pop((tenant_id, server_name), None)

