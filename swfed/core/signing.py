"""Ed25519 signatures: Matrix "signing JSON" and signed server requests (DESIGN §4).

- :func:`sign_json` / :func:`verify_signed_json`: drop ``signatures`` and
  ``unsigned``, canonical-encode, sign; the unpadded base64 signature goes
  under ``signatures[server_name][key_id]``. Any independent implementation
  of that algorithm verifies ours and we theirs (see the known-answer tests).
- :func:`sign_request` / :func:`parse_auth_header` / :func:`verify_request`:
  ``Authorization: SW-Fed origin="…",destination="…",key="…",ts="…",sig="…"``
  over the canonical JSON of {method, uri, origin, destination, ts, content}.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

import attrs
import nacl.bindings
import nacl.exceptions
import nacl.signing

from swfed.core.canonical import encode_canonical_json
from swfed.core.errors import BadRequest, FederationError

#: Sizes of an Ed25519 public key and signature.
KEY_BYTES = 32
SIGNATURE_BYTES = 64

CLOCK_WINDOW_MS = 60_000


def encode_base64(data: bytes) -> str:
    """Standard alphabet, no padding."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def decode_base64(text: str) -> bytes:
    """Padded or not, standard or URL-safe; raises BadRequest SW_BAD_BASE64."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9+/_-]*={0,2}", text):
        raise BadRequest(f"{text!r} is not base64", code="SW_BAD_BASE64")
    raw = text.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except binascii.Error:
        raise BadRequest(f"{text!r} is not base64", code="SW_BAD_BASE64") from None


def key_id_for(verify_key: bytes) -> str:
    """``ed25519:`` and 8 characters derived from the public key."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(verify_key).digest()).decode()
    return "ed25519:" + digest[:8]


@attrs.frozen
class KeyPair:
    """One Ed25519 key: its id and the 32-byte seed (never logged)."""

    key_id: str
    seed: bytes = attrs.field(repr=False)
    #: libsodium's expanded key, made once (deriving it costs a scalar multiplication).
    _signing_key: nacl.signing.SigningKey = attrs.field(
        init=False, repr=False, eq=False,
        default=attrs.Factory(lambda self: nacl.signing.SigningKey(self.seed), takes_self=True))

    @property
    def verify_key_bytes(self) -> bytes:
        return bytes(self._signing_key.verify_key)

    @property
    def public_key_b64(self) -> str:
        return encode_base64(self.verify_key_bytes)

    def sign(self, data: bytes) -> bytes:
        return bytes(self._signing_key.sign(data).signature)


def keypair_from_seed(seed: bytes, key_id: str | None = None) -> KeyPair:
    verify = bytes(nacl.signing.SigningKey(seed).verify_key)
    return KeyPair(key_id or key_id_for(verify), seed)


def generate_keypair() -> KeyPair:
    return keypair_from_seed(bytes(nacl.signing.SigningKey.generate()))


def signable_bytes(obj: dict[str, Any], *, checked: bool = False) -> bytes:
    """The bytes a signature covers: canonical JSON without ``signatures`` and ``unsigned``.

    Encode them once per event and pass them on (``signable=``): sizing,
    signing and verifying an event all need the same bytes. ``checked``: see
    :func:`~swfed.core.canonical.encode_canonical_json`.
    """
    return encode_canonical_json({k: v for k, v in obj.items()
                                  if k not in ("signatures", "unsigned")}, checked=checked)


def signable_or_none(raw: Any, *, checked: bool = False) -> bytes | None:
    """:func:`signable_bytes` of what a peer sent, or None if it cannot be encoded
    (then the event's own checks say what is wrong)."""
    if not isinstance(raw, dict):
        return None
    try:
        return signable_bytes(raw, checked=checked)
    except (BadRequest, ValueError, TypeError, RecursionError, UnicodeError):
        return None


def sign_json(obj: dict[str, Any], server_name: str, keypair: KeyPair, *,
              signable: bytes | None = None) -> dict[str, Any]:
    """A new dict: ``obj`` plus our signature. Raises BadRequest SW_BAD_JSON."""
    data = signable_bytes(obj) if signable is None else signable
    signature = encode_base64(keypair.sign(data))
    signatures = {name: dict(sigs) for name, sigs in obj.get("signatures", {}).items()}
    signatures.setdefault(server_name, {})[keypair.key_id] = signature
    return {**obj, "signatures": signatures}


def _mismatch(message: str) -> FederationError:
    return FederationError(message, code="SW_FED_SIGNATURE_MISMATCH", status=401)


def signing_key_ids(obj: dict[str, Any], server_name: str) -> list[str]:
    sigs = obj.get("signatures")
    if not isinstance(sigs, dict) or not isinstance(sigs.get(server_name), dict):
        return []
    return [k for k in sigs[server_name] if isinstance(k, str)]


def verify_signed_json(obj: dict[str, Any], server_name: str, key_id: str,
                       verify_key: bytes, *, signable: bytes | None = None) -> None:
    """Raises FederationError SW_FED_SIGNATURE_MISMATCH unless the signature holds."""
    sigs = obj.get("signatures")
    sig = sigs.get(server_name, {}).get(key_id) if isinstance(sigs, dict) and isinstance(
        sigs.get(server_name), dict) else None
    if not isinstance(sig, str):
        raise _mismatch(f"no signature of {server_name} with key {key_id}")
    try:
        raw = decode_base64(sig)
        data = signable_bytes(obj) if signable is None else signable
        nacl.signing.VerifyKey(verify_key).verify(data, raw)
    except (BadRequest, nacl.exceptions.BadSignatureError, ValueError,
            nacl.exceptions.CryptoError):
        raise _mismatch(f"signature of {server_name} with key {key_id} does not verify: the "
                        "content was changed, or the key is not the one it signed with "
                        "(if the peer rotated its key, refresh it)") from None


def verify_detached(checks: list[tuple[int, bytes, bytes, bytes]]) -> set[int]:
    """The indexes of ``(index, data, signature, public key)`` whose signature holds.

    Pure libsodium calls, which release the GIL: safe and useful in a worker thread.
    """
    good = set()
    for index, data, signature, key in checks:
        # libsodium's own call: VerifyKey(...).verify holds the GIL for its
        # object and checks, which halved what a second thread gained. The
        # sizes it would check are checked here (the call trusts them).
        if len(key) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
            continue
        try:
            nacl.bindings.crypto_sign_open(signature + data, key)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, TypeError):
            continue
        good.add(index)
    return good


# -- signed requests -------------------------------------------------------------

_PARAMS = ("origin", "destination", "key", "ts", "sig")
_PARAM_RE = re.compile(r'\s*([a-z]+)="([^",]*)"\s*')


@attrs.frozen
class FedAuth:
    origin: str
    destination: str
    key_id: str
    ts_ms: int
    sig: str


def _request_bytes(method: str, uri: str, origin: str, destination: str, ts_ms: int,
                   content: Any, content_bytes: bytes | None = None) -> bytes:
    """The canonical JSON of {method, uri, origin, destination, ts, content}.

    ``content_bytes``: the content already as canonical JSON (a /send body
    joined from stored events); it is placed as it is, not parsed or encoded.
    """
    obj: dict[str, Any] = {"method": method.upper(), "uri": uri, "origin": origin,
                           "destination": destination, "ts": ts_ms}
    if content_bytes is not None:
        # "content" sorts first: {"content":BYTES,<the rest, canonical>}
        return b'{"content":' + content_bytes + b"," + encode_canonical_json(obj)[1:]
    if content is not None:
        obj["content"] = content
    return encode_canonical_json(obj)


def sign_request(*, method: str, uri: str, origin: str, destination: str, ts_ms: int,
                 content: Any, keypair: KeyPair, content_bytes: bytes | None = None) -> str:
    """The ``Authorization`` header value for one server-to-server request.

    ``content_bytes``: the body, when it is already canonical JSON (see above).
    """
    for name, value in (("origin", origin), ("destination", destination)):
        if '"' in value or "," in value:
            raise ValueError(f"{name} {value!r} cannot go in a header")
    sig = encode_base64(keypair.sign(_request_bytes(method, uri, origin, destination, ts_ms,
                                                    content, content_bytes)))
    return (f'SW-Fed origin="{origin}",destination="{destination}",key="{keypair.key_id}",'
            f'ts="{ts_ms}",sig="{sig}"')


def parse_auth_header(value: str | None) -> FedAuth:
    """Parse ``SW-Fed …``; raises SW_FED_SIGNATURE_MISMATCH saying what is wrong."""
    if not value:
        raise _mismatch("missing Authorization: SW-Fed header: federation requests must "
                        "be signed by the origin server")
    scheme, _, rest = value.strip().partition(" ")
    if scheme != "SW-Fed":
        raise _mismatch(f"Authorization scheme {scheme!r} is not SW-Fed")
    params: dict[str, str] = {}
    for part in rest.split(","):
        m = _PARAM_RE.fullmatch(part)
        if m is None:
            raise _mismatch(f"malformed SW-Fed parameter {part.strip()!r}")
        name, val = m.groups()
        if name not in _PARAMS:
            raise _mismatch(f"unknown SW-Fed parameter {name!r}")
        if name in params:
            raise _mismatch(f"SW-Fed parameter {name} given twice")
        params[name] = val
    missing = [p for p in _PARAMS if p not in params]
    if missing:
        raise _mismatch(f"SW-Fed header lacks {', '.join(missing)}")
    if not re.fullmatch(r"-?[0-9]{1,16}", params["ts"]):
        raise _mismatch("SW-Fed parameter ts is not an integer (milliseconds)")
    return FedAuth(params["origin"], params["destination"], params["key"], int(params["ts"]),
                   params["sig"])


def verify_request(auth: FedAuth, *, method: str, uri: str, content: Any, verify_key: bytes,
                   now_ms: int, window_ms: int = CLOCK_WINDOW_MS,
                   body: bytes | None = None) -> None:
    """Raises SW_FED_SIGNATURE_MISMATCH on clock skew or a bad signature.

    ``body``: the request body as received. A sender that sent canonical JSON
    (as we do) signed those very bytes, so they are tried first and the
    content is not encoded again; any other body is checked as its canonical
    encoding. Either way the signature covers exactly the content we parsed.
    """
    skew = abs(now_ms - auth.ts_ms)
    if skew > window_ms:
        raise _mismatch(f"clock skew of {skew // 1000} s exceeds {window_ms // 1000} s between "
                        f"{auth.origin} and us: sync NTP on both servers")
    try:
        raw = decode_base64(auth.sig)
        key = nacl.signing.VerifyKey(verify_key)
        if body and content is not None:
            try:
                key.verify(_request_bytes(method, uri, auth.origin, auth.destination,
                                          auth.ts_ms, None, body), raw)
                return
            except nacl.exceptions.BadSignatureError:
                pass  # not canonical as sent: check the canonical encoding below
        key.verify(
            _request_bytes(method, uri, auth.origin, auth.destination, auth.ts_ms, content), raw)
    except (BadRequest, nacl.exceptions.BadSignatureError, ValueError,
            nacl.exceptions.CryptoError):
        raise _mismatch(f"request signature of {auth.origin} with key {auth.key_id} does not "
                        "verify") from None
