from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import pg
from tests.harness import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One plain-HTTP server for a whole test module."""
    srv = ServerProcess(tmp_path_factory.mktemp("srv"), "localhost").start()
    yield srv
    srv.kill()


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def peer_row(client: httpx.AsyncClient, admin_token: str, name: str) -> dict[str, Any]:
    """``name``'s row of the admin's peers view (GET /v1/admin/federation/peers)."""
    r = await client.get("/v1/admin/federation/peers", headers=bearer(admin_token))
    assert r.status_code == 200, r.text
    return next(dict(p) for p in r.json()["data"] if p["server_name"] == name)


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the PostgreSQL cluster of SWFED_TEST_BACKEND=postgresql runs (tests/pg.py)."""
    pg.shutdown()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.sqlite_only("why")``: skipped on PostgreSQL runs, with the reason."""
    if not pg.on_pg():
        return
    for item in items:
        mark = item.get_closest_marker("sqlite_only")
        if mark is not None:
            why = mark.args[0] if mark.args else "tests the SQLite file"
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {why}"))
