"""Signing JSON (DESIGN §4) against published vectors and another implementation.

The vectors in tests/vectors/signing-json.json are the Matrix specification's
appendix vectors plus one produced with python-signedjson. signedjson is also
used live: it must verify what we sign and we must verify what it signs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import signedjson.key
import signedjson.sign
from hypothesis import given, settings
from hypothesis import strategies as st

from swfed.core.canonical import INT_MAX, INT_MIN
from swfed.core.errors import BadRequest, FederationError
from swfed.core.signing import (
    CLOCK_WINDOW_MS,
    decode_base64,
    encode_base64,
    generate_keypair,
    key_id_for,
    keypair_from_seed,
    parse_auth_header,
    sign_json,
    sign_request,
    verify_request,
    verify_signed_json,
)

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "signing-json.json")
                     .read_text())
SEED = decode_base64(VECTORS["seed"])
KEY = keypair_from_seed(SEED, VECTORS["key_id"])
NAME = VECTORS["server_name"]


def theirs_signing_key(seed: bytes, key_id: str) -> Any:
    _, version = key_id.split(":", 1)
    return signedjson.key.decode_signing_key_base64("ed25519", version, encode_base64(seed))


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: json.dumps(c["object"]))
def test_known_answer_vectors(case: dict[str, Any]) -> None:
    assert KEY.public_key_b64 == VECTORS["verify_key"]
    signed = sign_json(case["object"], NAME, KEY)
    assert signed["signatures"] == {NAME: {VECTORS["key_id"]: case["signature"]}}
    verify_signed_json(signed, NAME, VECTORS["key_id"], KEY.verify_key_bytes)
    # sign_json returns a new dict and leaves the input alone
    assert "signatures" not in case["object"]


def test_signedjson_verifies_ours_and_we_verify_theirs() -> None:
    ours = generate_keypair()
    event = {"type": "m.message", "room_id": "!r:a.test", "content": {"body": "héllo 🌍"},
             "origin_server_ts": 1_700_000_000_000, "depth": 3,
             "unsigned": {"seq": 7}}
    signed = sign_json(event, "a.test", ours)
    verify_key = signedjson.key.decode_verify_key_bytes(ours.key_id, ours.verify_key_bytes)
    signedjson.sign.verify_signed_json(signed, "a.test", verify_key)

    theirs = signedjson.key.generate_signing_key("abc")
    by_them = signedjson.sign.sign_json(dict(event), "b.test", theirs)
    verify_signed_json(by_them, "b.test", "ed25519:abc", bytes(theirs.verify_key))
    # both sides produce the same signature for the same key and object
    same = theirs_signing_key(bytes(theirs), "ed25519:abc")
    ours_same = keypair_from_seed(bytes(theirs), "ed25519:abc")
    assert (sign_json(event, "b.test", ours_same)["signatures"]["b.test"]["ed25519:abc"]
            == signedjson.sign.sign_json(dict(event), "b.test", same)
            ["signatures"]["b.test"]["ed25519:abc"])


def test_unsigned_is_excluded_and_signatures_accumulate() -> None:
    first = sign_json({"a": 1}, "a.test", KEY)
    changed = {**first, "unsigned": {"seq": 99}}
    verify_signed_json(changed, "a.test", KEY.key_id, KEY.verify_key_bytes)
    other = generate_keypair()
    both = sign_json(first, "b.test", other)
    verify_signed_json(both, "a.test", KEY.key_id, KEY.verify_key_bytes)
    verify_signed_json(both, "b.test", other.key_id, other.verify_key_bytes)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(INT_MIN, INT_MAX) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)
objects = st.dictionaries(st.text(max_size=8).filter(lambda k: k not in ("signatures",
                                                                          "unsigned")),
                          json_values, max_size=6)


@settings(max_examples=150, deadline=None)
@given(obj=objects)
def test_roundtrip_and_cross_implementation(obj: dict[str, Any]) -> None:
    signed = sign_json(obj, NAME, KEY)
    verify_signed_json(signed, NAME, KEY.key_id, KEY.verify_key_bytes)
    theirs = signedjson.sign.sign_json(json.loads(json.dumps(obj)), NAME,
                                       theirs_signing_key(SEED, KEY.key_id))
    assert theirs["signatures"] == signed["signatures"]


@settings(max_examples=150, deadline=None)
@given(obj=objects.filter(bool), data=st.data())
def test_any_change_breaks_the_signature(obj: dict[str, Any], data: st.DataObject) -> None:
    signed = sign_json(obj, NAME, KEY)
    key = data.draw(st.sampled_from(sorted(obj)))
    new_value = data.draw(json_values.filter(lambda v: v != obj[key]))
    tampered = {**signed, key: new_value}
    with pytest.raises(FederationError) as info:
        verify_signed_json(tampered, NAME, KEY.key_id, KEY.verify_key_bytes)
    assert info.value.code == "SW_FED_SIGNATURE_MISMATCH"


def test_wrong_key_missing_signature_and_garbage() -> None:
    signed = sign_json({"a": 1}, NAME, KEY)
    other = generate_keypair()
    for obj, key_id, vk in [
        (signed, KEY.key_id, other.verify_key_bytes),  # wrong key
        ({"a": 1}, KEY.key_id, KEY.verify_key_bytes),  # unsigned
        (signed, "ed25519:nope", KEY.verify_key_bytes),  # other key id
        ({**signed, "signatures": {NAME: {KEY.key_id: "!!"}}}, KEY.key_id,
         KEY.verify_key_bytes),
        ({**signed, "signatures": "x"}, KEY.key_id, KEY.verify_key_bytes),
        (signed, KEY.key_id, b"short"),
    ]:
        with pytest.raises(FederationError) as info:
            verify_signed_json(obj, NAME, key_id, vk)
        assert info.value.code == "SW_FED_SIGNATURE_MISMATCH"


def test_base64_and_key_ids() -> None:
    assert encode_base64(b"\xff\xfe") == "//4"
    assert decode_base64("//4") == decode_base64("__4") == decode_base64("//4=") == b"\xff\xfe"
    for bad in ["a b", "é", "====", 5]:
        with pytest.raises(BadRequest):
            decode_base64(bad)  # type: ignore[arg-type]
    kid = key_id_for(KEY.verify_key_bytes)
    assert kid.startswith("ed25519:") and len(kid) == len("ed25519:") + 8
    assert keypair_from_seed(SEED).key_id == kid
    assert "seed" not in repr(KEY) or SEED.hex() not in repr(KEY)
    assert VECTORS["seed"] not in repr(KEY)


# -- signed requests -------------------------------------------------------------

NOW = 1_800_000_000_000


def header(**over: Any) -> str:
    args: dict[str, Any] = dict(method="PUT", uri="/_scaiwave/federation/v1/send",
                                origin="a.test", destination="b.test", ts_ms=NOW,
                                content={"events": []}, keypair=KEY)
    args.update(over)
    return sign_request(**args)


def check(value: str, *, now: int = NOW, **over: Any) -> None:
    args: dict[str, Any] = dict(method="PUT", uri="/_scaiwave/federation/v1/send",
                                content={"events": []})
    args.update(over)
    verify_request(parse_auth_header(value), verify_key=KEY.verify_key_bytes, now_ms=now,
                   **args)


def refused(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(FederationError) as info:
        fn(*args, **kwargs)
    assert info.value.code == "SW_FED_SIGNATURE_MISMATCH"
    return str(info.value)


def test_request_roundtrip_and_parse() -> None:
    value = header()
    auth = parse_auth_header(value)
    assert (auth.origin, auth.destination, auth.key_id, auth.ts_ms) == (
        "a.test", "b.test", KEY.key_id, NOW)
    check(value)
    check(header(method="get", content=None), method="GET", content=None)


def test_request_clock_window() -> None:
    check(header(), now=NOW + CLOCK_WINDOW_MS)
    check(header(), now=NOW - CLOCK_WINDOW_MS)
    assert "clock skew" in refused(check, header(), now=NOW + CLOCK_WINDOW_MS + 1)
    assert "clock skew" in refused(check, header(), now=NOW - 120_000)


def test_request_tampering() -> None:
    refused(check, header(), method="POST")
    refused(check, header(), uri="/_scaiwave/federation/v1/profile/x")
    refused(check, header(), content={"events": [1]})
    # a request signed for another destination cannot be replayed at this one
    replayed = header(destination="c.test").replace('destination="c.test"',
                                                    'destination="b.test"')
    refused(check, replayed)
    forged = header().replace('origin="a.test"', 'origin="evil.test"')
    refused(check, forged)
    other = generate_keypair()
    refused(check, header(keypair=other))


@pytest.mark.parametrize("value", [
    None, "", "Bearer abc", "SW-Fed", 'SW-Fed origin="a"',
    'SW-Fed origin="a",destination="b",key="k",ts="x",sig="s"',
    'SW-Fed origin="a",origin="a",destination="b",key="k",ts="1",sig="s"',
    'SW-Fed origin="a",destination="b",key="k",ts="1",sig="s",extra="1"',
    'SW-Fed origin=a,destination="b",key="k",ts="1",sig="s"',
])
def test_bad_headers(value: str | None) -> None:
    refused(parse_auth_header, value)


def test_header_values_cannot_inject() -> None:
    with pytest.raises(ValueError):
        header(origin='a.test",destination="x')


def test_a_request_signed_over_its_canonical_bytes_is_the_same_signature() -> None:
    """The sender signs a /send body it joined from stored bytes; a peer that
    re-encodes the parsed content (an older swfed, another implementation) agrees,
    and we accept a body sent with other spacing by its canonical encoding."""
    import json

    from swfed.core.canonical import encode_canonical_json
    from swfed.core.signing import (
        generate_keypair,
        parse_auth_header,
        sign_request,
        verify_request,
    )

    kp = generate_keypair()
    content = {"origin": "a.test", "txn_id": "1-1", "events": [{"b": "é", "a": 1}]}
    kw = dict(method="POST", uri="/_scaiwave/federation/v1/send", origin="a.test",
              destination="b.test", ts_ms=1_000, keypair=kp)
    by_bytes = sign_request(content=None, content_bytes=encode_canonical_json(content), **kw)
    assert by_bytes == sign_request(content=content, **kw)
    auth = parse_auth_header(by_bytes)
    check = dict(method="POST", uri="/_scaiwave/federation/v1/send", content=content,
                 verify_key=kp.verify_key_bytes, now_ms=1_000)
    verify_request(auth, **check)  # an older receiver: canonical encoding
    verify_request(auth, body=encode_canonical_json(content), **check)  # ours: the bytes
    verify_request(auth, body=json.dumps(content, indent=2).encode(), **check)  # other spacing
    tampered = {**content, "txn_id": "1-2"}
    with pytest.raises(FederationError):
        verify_request(auth, **{**check, "content": tampered},
                       body=encode_canonical_json(tampered))


def test_verify_detached_keeps_only_signatures_that_hold() -> None:
    from swfed.core.signing import verify_detached

    kp, other = generate_keypair(), generate_keypair()
    data = b'{"a":1}'
    sig = kp.sign(data)
    checks = [(0, data, sig, kp.verify_key_bytes),
              (1, data + b" ", sig, kp.verify_key_bytes),       # changed content
              (2, data, sig, other.verify_key_bytes),           # another key
              (3, data, sig[:63], kp.verify_key_bytes),         # short signature
              (4, data, sig, kp.verify_key_bytes[:31]),         # short key
              (5, data, sig + b"\0", kp.verify_key_bytes),      # long signature
              (6, data, sig, kp.verify_key_bytes)]
    assert verify_detached(checks) == {0, 6}
