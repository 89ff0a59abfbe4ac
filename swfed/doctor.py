"""``swfed doctor PEER``: the troubleshooting guide, run from this server.

Each check is one line: ``ok``, ``warning``, ``problem`` (with the fix the
guide gives) or ``skipped`` (an earlier problem makes it meaningless). The
exit status is 1 when any check found a problem. The checks, in order:

====================  =====================================================
own_config            [server] name, [federation] enabled, a signing key
own_descriptor        our descriptor over TLS, as a peer fetches it, matches
                      the config and our current key
peer_reachable        the peer's address answers (DNS or [federation.resolve])
peer_tls              its certificate chain verifies for its name
peer_descriptor       its descriptor is valid and self-signed
protocol_versions     at least one protocol version in common
our_policy            our policy lets the peer in
clock_skew            its clock against ours (signed requests allow ±60 s)
their_policy          a signed probe: does the peer accept us?
key_cache             the peer key we cached is the one it signs with now
queue                 our outbox to the peer: depth, last error, next retry
====================  =====================================================

The doctor only reads: it never changes the key cache, the policy or the
queue (the fixes say which call does).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs

from swfed.config import Config
from swfed.core.descriptor import (
    DESCRIPTOR_PATH,
    FED_PREFIX,
    PROTOCOL_VERSIONS,
    common_versions,
    parse_descriptor,
)
from swfed.core.errors import FederationError
from swfed.core.policy import decide_peer
from swfed.core.signing import CLOCK_WINDOW_MS, KeyPair, sign_request
from swfed.federation.client import FederationClient, FedResponse
from swfed.storage.keys import PeerKey, TenantKeys
from swfed.storage.tenants import Tenant

#: A skew below this is fine; up to CLOCK_WINDOW_MS it is a warning.
SKEW_WARN_MS = 10_000

STATUSES = ("ok", "warning", "problem", "skipped")


@attrs.frozen
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""
    code: str | None = None

    def line(self) -> str:
        text = f"{self.status.upper() if self.status == 'problem' else self.status:8} " \
               f"{self.name:18} {self.detail}"
        return text + (f" -- fix: {self.fix}" if self.fix else "")

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class Local:
    """What the doctor reads from our database before it goes on the network."""

    tenant: Tenant
    keys: TenantKeys
    peer_keys: list[PeerKey]
    peer_row: dict[str, Any] | None


def _policy_call(me: str, body: str) -> str:
    return (f"curl -X PUT https://{me}/v1/admin/federation/policy "
            f"-H \"Authorization: Bearer $ADMIN\" -d '{body}'")


def reach_fix(peer: str, code: str, their_versions: Any = None) -> str:
    """The guide's fix for a failure to reach or trust ``peer``."""
    return {
        "SW_FED_PEER_UNREACHABLE": f"{peer} is down or its address is wrong: check DNS for "
        f"{peer} (or its entry in [federation.resolve]) and that its server listens there; "
        "if it is down, wait: queued events are kept and retried",
        "SW_FED_PEER_TIMEOUT": f"{peer} accepts connections but does not answer: its server "
        "is overloaded or stuck; ask its admin, queued events are kept and retried",
        "SW_FED_TLS_FAILED": f"the certificate chain of {peer} does not verify from here: if "
        "it uses a private CA, point [federation] ca_file at that CA; otherwise its admin "
        f"fixes the chain (complete, issued for {peer}, not expired)",
        "SW_FED_PRIVATE_ADDRESS": f"{peer} resolves to a private address: add it to "
        "[federation.resolve] or set [federation] allow_private_addresses = true",
        "SW_FED_RESPONSE_TOO_LARGE": f"{peer} sent an oversized answer: raise [federation] "
        "max_response_bytes only if you trust it",
        "SW_FED_BAD_RESPONSE": f"{peer} does not answer federation requests with JSON: it "
        "may not run a federation server at that address",
        "SW_FED_BAD_DESCRIPTOR": f"{peer} publishes no usable descriptor at {DESCRIPTOR_PATH}: "
        "federation is not possible until it does (its admin checks its server name, TLS "
        "and 'swfed admin federation key generate')",
        "SW_FED_PROTOCOL_VERSION": f"no protocol version in common (ours: "
        f"{list(PROTOCOL_VERSIONS)}, theirs: {their_versions}): one side must upgrade",
    }.get(code, f"see the troubleshooting guide for {code}")


def our_policy_fix(me: str, peer: str, code: str) -> str:
    return {
        "SW_FED_DISABLED": "federation is off tenant-wide: "
        + _policy_call(me, '{"federation_enabled": true}'),
        "SW_FED_CLOSED": "default_mode is closed: "
        + _policy_call(me, f'{{"default_mode": "invite_only", "allowed_peers": ["{peer}"]}}'),
        "SW_FED_PEER_DENIED": f"{peer} is in denied_peers: remove it with "
        + _policy_call(me, '{"denied_peers": [...]}'),
        "SW_FED_PEER_UNKNOWN": f"add {peer} to allowed_peers: "
        + _policy_call(me, f'{{"allowed_peers": ["{peer}"]}}')
        + ' (or set "default_mode": "open")',
    }.get(code, "")


def their_refusal_fix(me: str, peer: str, code: str, message: str) -> str:
    if code == "SW_FED_SIGNATURE_MISMATCH" and "clock skew" in message:
        return "the clocks differ by more than 60 s: sync NTP on both servers"
    return {
        "SW_FED_PEER_UNKNOWN": f"{peer}'s admin adds {me} to its allowed_peers (or sets "
        "default_mode open): the peer needs the same setup pointed at your host",
        "SW_FED_PEER_DENIED": f"{peer} has {me} on its deny list: its admin checks its policy",
        "SW_FED_CLOSED": f"{peer} refuses all federation (default_mode closed): ask its admin",
        "SW_FED_DISABLED": f"{peer} has federation switched off: ask its admin",
        "SW_FED_SIGNATURE_MISMATCH": f"{peer} cannot verify our signature: check that it "
        f"fetches https://{me}{DESCRIPTOR_PATH} (TLS chain, our current key) and that both "
        "clocks are within 60 s",
        "SW_FED_NO_KEY": f"{peer} has no signing key yet: its admin runs "
        "'swfed admin federation key generate'",
    }.get(code, reach_fix(me, code) if code.startswith("SW_FED_") else "")


class Doctor:
    def __init__(self, config: Config, local: Local, peer: str, *,
                 client: FederationClient, own_client: FederationClient,
                 clock: Callable[[], int]) -> None:
        self.config = config
        self.local = local
        self.peer = peer
        self.me = local.tenant.server_name
        self.client = client
        self.own_client = own_client
        self.clock = clock
        self.checks: list[Check] = []
        self._peer_desc: dict[str, Any] | None = None
        self._peer_versions: Any = None

    def add(self, name: str, status: str, detail: str, fix: str = "",
            code: str | None = None) -> None:
        assert status in STATUSES
        self.checks.append(Check(name, status, detail, fix, code))

    def skip(self, names: list[str], why: str) -> None:
        for name in names:
            self.add(name, "skipped", why)

    async def run(self) -> list[Check]:
        self.check_own_config()
        await self.check_own_descriptor()
        if await self.check_peer():
            self.check_versions()
        self.check_our_policy()
        await self.check_probe()
        self.check_key_cache()
        self.check_queue()
        return self.checks

    # -- us --------------------------------------------------------------------

    def check_own_config(self) -> None:
        cfg = self.config
        if not cfg.federation.enabled:
            self.add("own_config", "problem", "[federation] enabled is false in "
                     f"{cfg.path}", "set enabled = true and restart the server")
        elif self.local.keys.current is None:
            self.add("own_config", "problem", f"{self.me} has no federation signing key",
                     "swfed admin federation key generate", code="SW_FED_NO_KEY")
        else:
            self.add("own_config", "ok", f"{self.me}: federation on, signing with "
                     f"{self.local.keys.current.key_id}")

    async def check_own_descriptor(self) -> None:
        current = self.local.keys.current
        try:
            resp = await self.own_client.get_json(self.me, DESCRIPTOR_PATH)
        except FederationError as exc:
            fix = reach_fix(self.me, exc.code)
            if exc.code in ("SW_FED_PEER_UNREACHABLE", "SW_FED_PEER_TIMEOUT"):
                fix = (f"peers reach https://{self.me}: check that the server runs, that "
                       f"{self.me} resolves to it (or [federation.resolve]) and that "
                       "SCAIWAVE_SERVER_NAME / [server] name is the public host name")
            self.add("own_descriptor", "problem", exc.message, fix, exc.code)
            return
        desc = resp.body
        if resp.status != 200 or desc.get("server_name") != self.me:
            self.add("own_descriptor", "problem",
                     f"https://{self.me}{DESCRIPTOR_PATH} answered {resp.status} naming "
                     f"{desc.get('server_name')!r}",
                     f"the server at that address is not {self.me}: SCAIWAVE_SERVER_NAME must "
                     "match the host name peers use", "SW_FED_BAD_DESCRIPTOR")
            return
        if not desc.get("public_key"):
            self.add("own_descriptor", "problem", "our descriptor has an empty public_key",
                     "swfed admin federation key generate", "SW_FED_NO_KEY")
            return
        if current is not None and desc.get("key_id") != current.key_id:
            self.add("own_descriptor", "problem",
                     f"our descriptor shows key {desc.get('key_id')}, the database has "
                     f"{current.key_id}",
                     "the running server has not picked up the current key: it reloads keys "
                     "every few seconds; if this persists, restart it", "SW_FED_BAD_DESCRIPTOR")
            return
        try:
            parse_descriptor(self.me, desc, self.clock())
        except FederationError as exc:
            self.add("own_descriptor", "problem", exc.message, reach_fix(self.me, exc.code),
                     exc.code)
            return
        self.add("own_descriptor", "ok", f"https://{self.me}{DESCRIPTOR_PATH} serves key "
                 f"{desc.get('key_id')} over TLS, as in the database")

    # -- the peer --------------------------------------------------------------

    async def check_peer(self) -> bool:
        later = ["peer_tls", "peer_descriptor", "protocol_versions"]
        try:
            resp = await self.client.get_json(self.peer, DESCRIPTOR_PATH)
        except FederationError as exc:
            if exc.code == "SW_FED_TLS_FAILED":
                self.add("peer_reachable", "ok", f"{self.peer} accepts connections")
                self.add("peer_tls", "problem", exc.message, reach_fix(self.peer, exc.code),
                         exc.code)
                self.skip(later[1:], "the peer's TLS does not verify")
            else:
                self.add("peer_reachable", "problem", exc.message,
                         reach_fix(self.peer, exc.code), exc.code)
                self.skip(later, f"{self.peer} is not reachable")
            return False
        self.add("peer_reachable", "ok", f"{self.peer} answers at {resp.address}")
        self.add("peer_tls", "ok" if self.config.federation.verify_tls else "warning",
                 f"certificate chain of {self.peer} verifies" if self.config.federation.verify_tls
                 else "TLS verification is off ([federation] verify_tls = false)",
                 "" if self.config.federation.verify_tls else
                 "turn verify_tls back on outside of tests")
        desc = resp.body
        self._peer_versions = desc.get("protocol_versions")
        if resp.status != 200:
            self.add("peer_descriptor", "problem",
                     f"{self.peer}{DESCRIPTOR_PATH} answered {resp.status}",
                     reach_fix(self.peer, "SW_FED_BAD_DESCRIPTOR"), "SW_FED_BAD_DESCRIPTOR")
            self.skip(["protocol_versions"], "no descriptor")
            return False
        try:
            parse_descriptor(self.peer, desc, self.clock())
        except FederationError as exc:
            if exc.code != "SW_FED_PROTOCOL_VERSION":
                self.add("peer_descriptor", "problem", exc.message,
                         reach_fix(self.peer, exc.code), exc.code)
                self.skip(["protocol_versions"], "no valid descriptor")
                return False
        self._peer_desc = desc
        self.add("peer_descriptor", "ok", f"{self.peer} publishes key {desc.get('key_id')}, "
                 "self-signed")
        return True

    def check_versions(self) -> None:
        theirs = self._peer_versions
        common = common_versions(theirs if isinstance(theirs, list) else [])
        if common:
            self.add("protocol_versions", "ok", f"in common: {', '.join(common)}")
        else:
            self.add("protocol_versions", "problem",
                     f"ours {list(PROTOCOL_VERSIONS)}, {self.peer}'s {theirs}: none in common",
                     reach_fix(self.peer, "SW_FED_PROTOCOL_VERSION", theirs),
                     "SW_FED_PROTOCOL_VERSION")

    def check_our_policy(self) -> None:
        try:
            decide_peer(self.local.tenant.policy, self.peer)
        except FederationError as exc:
            self.add("our_policy", "problem", f"our policy refuses {self.peer}: {exc.code}",
                     our_policy_fix(self.me, self.peer, exc.code), exc.code)
            return
        self.add("our_policy", "ok", f"our policy ({self.local.tenant.policy.default_mode}) "
                 f"lets {self.peer} in")

    async def check_probe(self) -> None:
        names = ["clock_skew", "their_policy"]
        keypair = self.local.keys.current
        if keypair is None:
            self.skip(names, "we have no signing key to sign a probe with")
            return
        if self._peer_desc is None:
            self.skip(names, f"{self.peer} has no usable descriptor")
            return
        before = self.clock()
        try:
            resp = await self.client.get_json(self.peer, FED_PREFIX + "/probe",
                                              auth=self._auth(keypair))
        except FederationError as exc:
            self.skip(names, f"the probe failed: {exc.message}")
            return
        after = self.clock()
        self._check_skew(resp, (before + after) // 2)
        result = resp.body.get("result")
        if resp.status == 404 or not isinstance(result, dict):
            self.add("their_policy", "warning", f"{self.peer} does not answer probes "
                     f"({resp.status}): it may run another implementation or an old version")
            return
        if result.get("ok") is True:
            self.add("their_policy", "ok", f"{self.peer} accepts signed requests from {self.me}")
            return
        code, message = str(result.get("code")), str(result.get("message", ""))
        self.add("their_policy", "problem", f"{self.peer} refuses {self.me}: {code}: {message}",
                 their_refusal_fix(self.me, self.peer, code, message), code)

    def _auth(self, keypair: KeyPair) -> Callable[..., str]:
        def auth(method: str, uri: str, content: Any, content_bytes: bytes | None) -> str:
            return sign_request(method=method, uri=uri, origin=self.me, destination=self.peer,
                                ts_ms=self.clock(), content=content, keypair=keypair,
                                content_bytes=content_bytes)
        return auth

    def _check_skew(self, resp: FedResponse, ours: int) -> None:
        theirs = resp.body.get("server_time_ms")
        if not isinstance(theirs, int) or isinstance(theirs, bool):
            self.add("clock_skew", "skipped", f"{self.peer} does not report its time")
            return
        skew = theirs - ours
        shown = f"{self.peer}'s clock is {abs(skew) / 1000:.1f} s " + (
            "ahead of" if skew > 0 else "behind") + " ours"
        if abs(skew) > CLOCK_WINDOW_MS:
            self.add("clock_skew", "problem", shown + " (signed requests allow 60 s)",
                     "sync NTP on both servers (timedatectl / chrony)",
                     "SW_FED_SIGNATURE_MISMATCH")
        elif abs(skew) > SKEW_WARN_MS:
            self.add("clock_skew", "warning", shown, "sync NTP before it reaches 60 s")
        else:
            self.add("clock_skew", "ok", shown)

    def check_key_cache(self) -> None:
        cached = [k for k in self.local.peer_keys if k.retired_at is None]
        if self._peer_desc is None:
            self.skip(["key_cache"], f"{self.peer}'s current key is unknown")
            return
        now_id = self._peer_desc.get("key_id")
        if not cached:
            self.add("key_cache", "ok", f"no key of {self.peer} cached yet: fetched on first "
                     "contact")
        elif cached[0].key_id != now_id:
            self.add("key_cache", "problem",
                     f"we cached {cached[0].key_id}, {self.peer} now signs with {now_id} "
                     "(it rotated its key)",
                     "refresh it: curl -X POST https://"
                     f"{self.me}/v1/admin/federation/foreign/@USER:{self.peer}/refresh "
                     "-H \"Authorization: Bearer $ADMIN\" (any of its users); events with "
                     "the new key also trigger a refetch", "SW_FED_SIGNATURE_MISMATCH")
        else:
            self.add("key_cache", "ok", f"cached key {now_id} is {self.peer}'s current key")

    def check_queue(self) -> None:
        row = self.local.peer_row
        if row is None:
            self.add("queue", "ok", f"no traffic with {self.peer} yet")
            return
        depth = row["queue_depth"]
        if row.get("last_error"):
            code = str(row["last_error"]).split(":", 1)[0]
            fix = (our_policy_fix(self.me, self.peer, code)
                   or their_refusal_fix(self.me, self.peer, code, str(row["last_error"])))
            retry = row.get("next_retry_at")
            when = (time.strftime(" next retry %H:%M:%SZ", time.gmtime(retry / 1000))
                    if isinstance(retry, int) else "")
            self.add("queue", "problem",
                     f"{depth} event(s) queued; last error: {row['last_error']};{when}",
                     (fix + "; then " if fix else "")
                     + f"curl -X POST https://{self.me}/v1/admin/federation/peers/{self.peer}"
                     "/retry -H \"Authorization: Bearer $ADMIN\"", code)
        else:
            self.add("queue", "ok", f"{depth} event(s) queued, no error; "
                     f"{row['events_sent_24h']} sent and {row['events_received_24h']} "
                     "received in 24 h")


def exit_status(checks: list[Check]) -> int:
    return 1 if any(c.status == "problem" for c in checks) else 0
