"""A throwaway PostgreSQL cluster for the tests (SWFED_TEST_BACKEND=postgresql).

One cluster per test session, started on first use: ``initdb`` into a temp
directory (as the ``postgres`` user when we are root: PostgreSQL refuses to
run as root), ``pg_ctl start`` listening on a Unix socket only, in that
directory. Each test gets a fresh database, copied from a migrated template
(``CREATE DATABASE … TEMPLATE``: fast). The cluster is stopped and removed at
the end of the session (tests/conftest.py) or at exit.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

BACKEND_ENV = "SWFED_TEST_BACKEND"
TEMPLATE = "swfed_template"


def backend() -> str:
    return os.environ.get(BACKEND_ENV, "sqlite").strip() or "sqlite"


def on_pg() -> bool:
    return backend() == "postgresql"


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL's initdb not found: apt-get install postgresql")
    return Path(initdb).parent


class Cluster:
    """One PostgreSQL cluster in a temp directory, on a Unix socket."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="swfed-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        self._names = itertools.count(1)
        self.running = False
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", self.user,
                  "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        self.start()

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stdout}\n{result.stderr}")
        return result

    def start(self) -> None:
        opts = (f"-k {self.socket_dir} -c listen_addresses='' -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l",
                  str(self.root / "postgres.log"), "-w", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
            self.running = False

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql:///{dbname}?host={self.socket_dir}&user={self.user}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            cur = conn.execute(sql)
            return "" if cur.description is None else repr(cur.fetchall())

    def new_database(self) -> str:
        """A fresh migrated database; returns its URL."""
        if not self._has_template():
            self._make_template()
        name = f"t{os.getpid()}_{next(self._names)}"
        self.psql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return self.url(name)

    def empty_database(self) -> str:
        """A fresh database without swfed's schema; returns its URL."""
        name = f"e{os.getpid()}_{next(self._names)}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def _has_template(self) -> bool:
        return "swfed" in self.psql(
            f"SELECT 'swfed' FROM pg_database WHERE datname = '{TEMPLATE}'")

    def _make_template(self) -> None:
        from swfed.storage.migrations import migrate_pg
        from swfed.storage.pg import connect

        self.psql(f"CREATE DATABASE {TEMPLATE}")
        conn = connect(self.url(TEMPLATE))
        try:
            migrate_pg(conn)
        finally:
            conn.raw.close()

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except Exception:  # noqa: BLE001 - remove what is left anyway
            pass
        shutil.rmtree(self.root, ignore_errors=True)


_cluster: Cluster | None = None


def cluster() -> Cluster:
    """The session's cluster (started on first use)."""
    global _cluster
    if _cluster is None:
        _cluster = Cluster()
        atexit.register(shutdown)
    return _cluster


def shutdown() -> None:
    global _cluster
    if _cluster is not None:
        _cluster.destroy()
        _cluster = None


def engine_database(path: Path, **kwargs: object) -> object:
    """The Database a storage test uses: SQLite at ``path``, or (on PostgreSQL
    runs) a fresh database of the session's cluster, its stamps beside ``path``."""
    from swfed.storage.db import Database

    if not on_pg():
        return Database(path, **kwargs)  # type: ignore[arg-type]
    from swfed.storage.pg import PgDatabase

    path.parent.mkdir(parents=True, exist_ok=True)
    read_connections = int(kwargs.pop("read_connections", 4))  # type: ignore[call-overload]
    assert not kwargs, f"no PostgreSQL meaning for {sorted(kwargs)}"
    return PgDatabase(cluster().new_database(), path, read_connections=read_connections)


def direct(path: Path) -> object:
    """A migrated connection for a storage test (db.open_direct or pg.open_direct)."""
    if not on_pg():
        from swfed.storage.db import open_direct

        return open_direct(path)
    from swfed.storage import pg as pg_engine

    path.parent.mkdir(parents=True, exist_ok=True)
    return pg_engine.open_direct(cluster().new_database(), path)


def reopen(db: object) -> object:
    """Another direct connection (the CLI's) to the database of ``db``."""
    if not on_pg():
        from swfed.storage.db import open_direct

        return open_direct(db.path)  # type: ignore[attr-defined]
    from swfed.storage import pg as pg_engine

    return pg_engine.open_direct(db.url, db.path)  # type: ignore[attr-defined]
