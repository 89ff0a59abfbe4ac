"""swfed/core does no I/O; SQL lives only in swfed/storage (DESIGN §9)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import swfed

ROOT = Path(swfed.__file__).parent
FORBIDDEN = {"trio", "httpx", "sqlite3", "quart", "quart_trio", "hypercorn", "socket", "ssl",
             "asyncio", "threading", "subprocess", "os", "urllib", "http", "requests",
             "swfed.storage", "swfed.federation", "swfed.api", "swfed.app"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_has_no_io_imports() -> None:
    bad = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        for name in imported_modules(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert bad == []


SQL = re.compile(r"\b(SELECT\s+.+\s+FROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|"
                 r"DELETE\s+FROM|CREATE\s+(TABLE|INDEX|VIRTUAL))\b", re.I | re.S)


def test_sql_only_in_storage() -> None:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        if "storage" in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(
                    node.value):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert bad == []
