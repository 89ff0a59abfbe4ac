"""The server descriptor at ``/.well-known/scaiwave/server`` (DESIGN §3).

Building ours and checking a peer's. Pure functions over dicts and
millisecond times.

``old_keys`` lists every key we ever retired (public half, ``retired_at``,
``expires_at``), not only those in their overlap: events they signed can be
asked for at any time. Which key may verify what is decided in
:mod:`swfed.core.keys`.
"""

from __future__ import annotations

from typing import Any

from swfed.core.errors import FederationError
from swfed.core.ids import is_server_name
from swfed.core.keys import KeyInfo, published
from swfed.core.signing import (
    KeyPair,
    decode_base64,
    key_id_for,
    sign_json,
    verify_signed_json,
)

PROTOCOL_VERSIONS = ("v1",)
DESCRIPTOR_PATH = "/.well-known/scaiwave/server"
FED_PREFIX = "/_scaiwave/federation/v1"
ENDPOINTS = {
    "send": f"{FED_PREFIX}/send",
    "profile": f"{FED_PREFIX}/profile/{{local_id}}",
    "members": f"{FED_PREFIX}/rooms/{{room_id}}/members",
    "backfill": f"{FED_PREFIX}/rooms/{{room_id}}/backfill",
}
#: How long a peer may cache our descriptor.
VALID_FOR_MS = 24 * 3600 * 1000


def public_key_field(public_key_b64: str) -> str:
    return f"ed25519:{public_key_b64}" if public_key_b64 else ""


def build_descriptor(server_name: str, current: KeyPair | None, old_keys: list[KeyInfo],
                     now: int) -> dict[str, Any]:
    """Our descriptor, signed with the current key; ``public_key`` empty if none."""
    desc: dict[str, Any] = {
        "server_name": server_name,
        "public_key": public_key_field(current.public_key_b64) if current else "",
        "key_id": current.key_id if current else "",
        "protocol_versions": list(PROTOCOL_VERSIONS),
        "endpoints": dict(ENDPOINTS),
        "old_keys": [
            {"key_id": k.key_id, "public_key": public_key_field(k.public_key),
             "retired_at": k.retired_at, "expires_at": k.expires_at}
            for k in published(old_keys)
        ],
        "valid_until": now + VALID_FOR_MS,
    }
    if current is None:
        return desc
    return sign_json(desc, server_name, current)


def _bad(server_name: str, why: str) -> FederationError:
    return FederationError(
        f"descriptor of {server_name} is not usable: {why}; ask its admin to check "
        f"https://{server_name}{DESCRIPTOR_PATH}", code="SW_FED_BAD_DESCRIPTOR", status=502)


def _key(server_name: str, key_id: Any, public_key: Any) -> bytes:
    if not isinstance(key_id, str) or not key_id.startswith("ed25519:"):
        raise _bad(server_name, f"key id {key_id!r} is not an ed25519 key id")
    if not isinstance(public_key, str) or not public_key.startswith("ed25519:"):
        raise _bad(server_name, f"public_key {public_key!r} is not 'ed25519:<base64>'")
    try:
        raw = decode_base64(public_key.removeprefix("ed25519:"))
    except Exception as exc:  # noqa: BLE001 - any decoding problem is a bad descriptor
        raise _bad(server_name, "public_key is not base64") from exc
    if len(raw) != 32:
        raise _bad(server_name, "public_key is not 32 bytes")
    return raw


#: A yearly rotation for a century; a descriptor listing more is not one to trust.
MAX_OLD_KEYS = 100


def parse_descriptor(server_name: str, desc: dict[str, Any], now: int) -> list[KeyInfo]:
    """Check a peer's descriptor and return the keys it lists, current first.

    Raises FederationError: SW_FED_BAD_DESCRIPTOR (malformed, wrong server,
    no key, bad self-signature), SW_FED_PROTOCOL_VERSION (no common version).
    """
    if desc.get("server_name") != server_name:
        raise _bad(server_name, f"it names server {desc.get('server_name')!r}")
    versions = desc.get("protocol_versions")
    if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        raise _bad(server_name, "protocol_versions is not a list of strings")
    common = common_versions(versions)
    if not common:
        raise FederationError(
            f"{server_name} speaks protocol versions {versions}, we speak "
            f"{list(PROTOCOL_VERSIONS)}: no version in common; one side must upgrade",
            code="SW_FED_PROTOCOL_VERSION", status=400)
    if not desc.get("public_key"):
        raise _bad(server_name, "it has no public key (its admin runs "
                                "'swfed admin federation key generate')")
    current_raw = _key(server_name, desc.get("key_id"), desc.get("public_key"))
    key_id = str(desc["key_id"])
    if key_id_for(current_raw) != key_id:
        raise _bad(server_name, f"key id {key_id} does not match its public key")
    verify_signed_json(desc, server_name, key_id, current_raw)
    keys = [KeyInfo(key_id, desc["public_key"].removeprefix("ed25519:"))]
    old = desc.get("old_keys", [])
    if not isinstance(old, list):
        raise _bad(server_name, "old_keys is not a list")
    if len(old) > MAX_OLD_KEYS:
        raise _bad(server_name, f"it lists {len(old)} old keys, over {MAX_OLD_KEYS}")
    ids = [key_id] + [item.get("key_id") for item in old if isinstance(item, dict)]
    if len(set(map(str, ids))) != len(ids):
        raise _bad(server_name, "it lists a key id twice")
    for item in old:
        if not isinstance(item, dict):
            raise _bad(server_name, "old_keys holds a non-object")
        _key(server_name, item.get("key_id"), item.get("public_key"))
        retired, expires = item.get("retired_at"), item.get("expires_at")
        if not isinstance(retired, int) or not isinstance(expires, int):
            raise _bad(server_name, "an old key lacks integer retired_at/expires_at")
        keys.append(KeyInfo(item["key_id"], item["public_key"].removeprefix("ed25519:"),
                            retired, expires))
    return keys


def common_versions(theirs: list[str]) -> list[str]:
    return [v for v in PROTOCOL_VERSIONS if v in theirs]


def check_server_name(value: Any) -> str:
    if not isinstance(value, str) or not is_server_name(value):
        raise FederationError(f"{value!r} is not a server name",
                              code="SW_FED_BAD_REQUEST", status=400)
    return value
