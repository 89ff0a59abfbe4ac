"""Canonical JSON: byte-identical to the canonicaljson library, strict parsing."""

from __future__ import annotations

import json

import canonicaljson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swfed.core.canonical import INT_MAX, INT_MIN, decode_json_object, encode_canonical_json
from swfed.core.errors import BadRequest

values = st.recursive(
    st.none() | st.booleans() | st.integers(INT_MIN, INT_MAX) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=values)
def test_same_bytes_as_canonicaljson(value: object) -> None:
    assert encode_canonical_json(value) == canonicaljson.encode_canonical_json(value)


@settings(max_examples=200, deadline=None)
@given(value=st.dictionaries(st.text(), values, max_size=6))
def test_decode_roundtrip(value: dict[str, object]) -> None:
    assert decode_json_object(encode_canonical_json(value)) == value


def test_known_encodings() -> None:
    assert encode_canonical_json({"b": 1, "a": [True, None, "é"], "€": {}}) == (
        '{"a":[true,null,"é"],"b":1,"€":{}}'.encode())
    # code point order, not UTF-16 order
    assert encode_canonical_json({"\U0001f600": 1, "\uffff": 2}) == (
        '{"\uffff":2,"\U0001f600":1}'.encode())
    assert encode_canonical_json(INT_MAX) == str(INT_MAX).encode()


@pytest.mark.parametrize("value", [1.5, INT_MAX + 1, INT_MIN - 1, {1: "a"}, {"a": {1, 2}},
                                   float("nan"), b"bytes"])
def test_unencodable(value: object) -> None:
    with pytest.raises(BadRequest) as info:
        encode_canonical_json(value)
    assert info.value.code == "SW_BAD_JSON"


@pytest.mark.parametrize("data", [
    b"", b"[]", b"1", b'"x"', b"{", b'{"a":1,"a":2}', b'{"a":NaN}', b'{"a":Infinity}',
    b'{"a":1.0}', b'{"a":9007199254740992}', b"\xff\xfe", b"[" * 100_000,
])
def test_decode_refuses(data: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        decode_json_object(data)
    assert info.value.code == "SW_BAD_JSON"


def test_decode_keeps_unicode() -> None:
    assert decode_json_object(json.dumps({"k": "é\u2028"}).encode()) == {"k": "é\u2028"}
