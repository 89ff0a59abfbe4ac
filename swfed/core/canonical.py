"""Canonical JSON (Matrix): the bytes that get signed, and strict parsing.

Keys sorted by code point, no insignificant whitespace, UTF-8, integers only
in [-(2**53)+1, 2**53-1]. Floats are refused rather than guessed at: two
implementations must produce the same bytes for the same value.

What we accept is also what we can store and send on: strings hold no lone
surrogates (``"\ud800"`` decodes in Python but cannot be encoded as UTF-8),
and values nest at most :data:`MAX_DEPTH` deep (deeper is a 400, never a
``RecursionError``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from swfed.core.errors import BadRequest

INT_MIN = -(2**53) + 1
INT_MAX = 2**53 - 1
#: Arrays and objects nested deeper than this are refused (events need ~4).
MAX_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


def _bad(why: str) -> BadRequest:
    return BadRequest(why, code="SW_BAD_JSON")


def _text(value: str, path: str) -> None:
    if _SURROGATE.search(value):
        raise _bad(f"{path}: text holds a lone UTF-16 surrogate (\\ud800-\\udfff without "
                   "its pair), which is not a character")


def _check(value: Any, path: str, depth: int = 0) -> None:
    """Raise SW_BAD_JSON naming the first thing in ``value`` peers cannot agree on."""
    if not _fine(value, MAX_DEPTH - depth):
        _explain(value, path, depth)


def _fine(value: Any, room: int) -> bool:
    """Whether ``value`` is acceptable, as fast as Python allows (the hot path).

    No paths are built here: only when this says no does :func:`_explain`
    walk again to name the place.
    """
    kind = type(value)
    if kind is str:
        return _SURROGATE.search(value) is None
    if kind is int:
        return INT_MIN <= value <= INT_MAX
    if value is None or kind is bool:
        return True
    if kind is dict:
        if room <= 0:
            return False
        room -= 1
        for key, item in value.items():
            if type(key) is not str or _SURROGATE.search(key) is not None:
                return False
            kind = type(item)
            if kind is str:
                if _SURROGATE.search(item) is not None:
                    return False
            elif not (kind is int and INT_MIN <= item <= INT_MAX) and not _fine(item, room):
                return False
        return True
    if kind is list or kind is tuple:
        if room <= 0:
            return False
        return all(_fine(item, room - 1) for item in value)
    return False  # subclasses of the JSON types, floats, anything else: explained below


def _explain(value: Any, path: str, depth: int = 0) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _text(value, path)
        return
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise _bad(f"{path}: integer {value} is outside the range JSON peers agree on "
                       "(±(2**53-1))")
        return
    if isinstance(value, float):
        raise _bad(f"{path}: {value!r} is not an integer; only integers are allowed")
    if isinstance(value, (list, tuple, dict)) and depth >= MAX_DEPTH:
        raise _bad(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _explain(item, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _bad(f"{path}: object key {key!r} is not a string")
            _text(key, path)
            _explain(item, f"{path}.{key[:40]}", depth + 1)
        return
    raise _bad(f"{path}: {type(value).__name__} is not a JSON value")


def encode_canonical_json(value: Any, *, checked: bool = False) -> bytes:
    """The canonical JSON bytes of ``value``; raises BadRequest SW_BAD_JSON.

    ``checked``: ``value`` is (part of) what :func:`decode_json_object` returned,
    which has checked all of it already.
    """
    if not checked:
        _check(value, "$")
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):  # only then look for the key to name
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _bad(f"duplicate key {key!r}")
            seen.add(key)
    return out


def _no_constant(name: str) -> Any:
    raise _bad(f"{name} is not valid JSON")


def decode_json_object(data: bytes) -> dict[str, Any]:
    """Parse strict JSON that must be an object; raises BadRequest SW_BAD_JSON."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("request body is not UTF-8") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates,
                           parse_constant=_no_constant)
    except BadRequest:
        raise
    except (ValueError, RecursionError) as exc:
        raise _bad(f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _bad(f"expected a JSON object, got {type(value).__name__}")
    _check(value, "$")
    return value
