"""The connection a transaction gets, whatever the engine: :class:`Conn`.

Every ``*_txn`` function in this package takes a :class:`Conn` and nothing
else of the driver: SQL text and parameters in, rows out (by column name and
by index), plus :attr:`Conn.dialect` for the few statements that differ
between engines and :attr:`Conn.touched` for what the write leaves for the
commit hook (swfed.storage.touched). The SQLite engine's connection
(``db.SqliteConn``) is one, the PostgreSQL engine's (``pg.PgConn``) the
other; nothing outside ``storage/`` sees a driver type.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from swfed.storage.touched import Touched

#: A row as a transaction reads it: ``row["column"]`` and ``row[0]``.
Row = Any


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    #: "sqlite" (db.SqliteConn) or "postgresql" (pg.PgConn).
    dialect: str
    touched: Touched

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...
