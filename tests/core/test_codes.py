"""Every SW_ code the package raises is in swfed.core.codes.CODES (STYLE move 4)."""

from __future__ import annotations

import re
from pathlib import Path

import swfed
from swfed.core import errors
from swfed.core.codes import CODES

PACKAGE = Path(swfed.__file__).parent


def test_every_code_raised_is_in_the_table() -> None:
    found: dict[str, str] = {}
    for path in PACKAGE.rglob("*.py"):
        for code in re.findall(r"[\"'](SW_[A-Z0-9_]*[A-Z0-9])[\"']", path.read_text()):
            found.setdefault(code, str(path.relative_to(PACKAGE)))
    missing = {c: where for c, where in found.items() if c not in CODES}
    assert not missing, f"add these to swfed/core/codes.py: {missing}"


def test_the_error_classes_defaults_are_in_the_table() -> None:
    for cls in vars(errors).values():
        if isinstance(cls, type) and issubclass(cls, errors.SwfedError):
            assert cls.code in CODES, cls
            if cls is not errors.RemoteRefusal:
                assert CODES[cls.code][0] == cls.status or cls.code == "SW_FED_ERROR", cls
