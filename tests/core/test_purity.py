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


#: Layers point one way (STYLE): a package may import its own layer and those
#: below it. Top-level modules: config, logs, metrics, calls and context are
#: shared below the API; app and server and cli sit on top of everything.
LAYERS = {"core": 0, "storage": 1, "federation": 2, "api": 3, "web": 3}
SHARED = {"config": 0, "logs": 0, "metrics": 0, "calls": 1, "context": 2, "doctor": 3,
          "housekeeping": 2, "app": 4, "server": 5, "cli": 5, "__main__": 5}


def _layer(dotted: str) -> int | None:
    parts = dotted.split(".")
    if parts[0] != "swfed" or len(parts) < 2:
        return None
    return LAYERS.get(parts[1], SHARED.get(parts[1]))


def _runtime_imports(path: Path) -> set[str]:
    """Imports that run (not those under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_layers_point_one_way() -> None:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        own = _layer("swfed." + ".".join(rel.with_suffix("").parts))
        if own is None:
            continue
        for name in _runtime_imports(path):
            other = _layer(name)
            if other is not None and other > own:
                bad.append(f"{rel} (layer {own}) imports {name} (layer {other})")
    assert bad == []


DRIVERS = ("sqlite3", "psycopg", "psycopg_pool")


def test_no_driver_outside_storage_and_every_transaction_inside() -> None:
    """Only storage/ sees a driver; every ``*_txn`` lives in storage/ (a grep lists them)."""
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        if "storage" in path.relative_to(ROOT).parts:
            continue
        for name in imported_modules(path):
            if name.split(".")[0] in DRIVERS:
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_txn"):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} defines {node.name}")
    assert bad == []


def test_transactions_take_a_conn_not_a_driver_type() -> None:
    """Transactions are typed by the storage face (storage.conn.Conn), not by sqlite3."""
    bad = []
    for path in sorted((ROOT / "storage").glob("*.py")):
        # the SQLite engine itself, and the file as the admin handles it (check, restore)
        if path.name in ("db.py", "migrations.py", "maintenance.py"):
            continue
        if "sqlite3" in imported_modules(path):
            bad.append(f"{path.relative_to(ROOT)} imports sqlite3")
    assert bad == []
