"""Real servers for tests: a swfed process on 127.0.0.1, its CLI, its logs.

Rules (after trio-websocket's test module): loopback only; every server is a
real ``python -m swfed`` process with a real SQLite file under a temporary
directory; ports are picked free up front so a restarted server keeps its
address; a test never sleeps to wait for something, it polls for the thing
with a deadline (:func:`wait_for`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import trio

from tests import pg

START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def write_config(path: Path, tables: dict[str, dict[str, Any]]) -> None:
    lines: list[str] = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        for key, value in values.items():
            quoted = json.dumps(key) if "." in key or ":" in key else key
            lines.append(f"{quoted} = {toml_value(value)}")
        lines.append("")
    path.write_text("\n".join(lines))


class ServerProcess:
    """One swfed server process and its config, data directory and log."""

    def __init__(self, root: Path, name: str = "localhost", *,
                 tls: tuple[Path, Path] | None = None,
                 extra: dict[str, dict[str, Any]] | None = None,
                 env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = port or free_port()
        self.scheme = "https" if tls else "http"
        self.config_path = root / "server.toml"
        self.env = dict(env or {})
        tables: dict[str, dict[str, Any]] = {
            "server": {
                "name": name,
                "bind": [f"127.0.0.1:{self.port}"],
                "data_dir": str(root / "data"),
                "graceful_timeout_seconds": 2.0,
                "log_level": "debug",
            },
            "storage": {"synchronous": "FULL"},
        }
        if pg.on_pg():  # SWFED_TEST_BACKEND=postgresql: a fresh database of the session's cluster
            tables["storage"].update(backend="postgresql", url=pg.cluster().new_database())
        if tls:
            tables["server.tls"] = {"certfile": str(tls[0]), "keyfile": str(tls[1])}
        for table, values in (extra or {}).items():
            tables.setdefault(table, {}).update(values)
        write_config(self.config_path, tables)
        self._tables = tables
        self.proc: subprocess.Popen[bytes] | None = None
        #: more arguments for the server's command line, e.g. ["--bind", "127.0.0.1:9"]
        self.start_args: list[str] = []
        self.log_lines: list[str] = []
        self._reader: threading.Thread | None = None

    def db(self) -> Any:
        """A connection to this server's database, to look at rows (``?`` placeholders,
        ``execute``/``fetchone``/``close``): its SQLite file, or its PostgreSQL database."""
        storage = self._tables.get("storage", {})
        if storage.get("backend") == "postgresql":
            from swfed.storage.pg import connect

            return connect(storage["url"])
        import sqlite3

        return sqlite3.connect(self.root / "data" / "swfed.sqlite3")

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def _environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("SCAIWAVE_SERVER_NAME", None)
        env.update(self.env)
        return env

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> ServerProcess:
        assert self.proc is None or self.proc.poll() is not None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "swfed", "--config", str(self.config_path),
             *self.start_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self._environ())
        ready = threading.Event()
        proc = self.proc

        def read_log() -> None:
            assert proc.stderr is not None
            for raw in proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.log_lines.append(line)
                if '"server.listening"' in line:
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read_log, daemon=True)
        self._reader.start()
        if not ready.wait(START_TIMEOUT) or proc.poll() is not None:
            self.kill()
            raise RuntimeError("server did not start:\n" + "\n".join(self.log_lines[-40:]))
        return self

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        if self._reader:
            self._reader.join(5)
        self._report_errors()
        return rc

    def _report_errors(self) -> None:
        """Print the server's internal errors to stderr: pytest shows them with a failure."""
        errors = [line for line in self.log_lines if "internal_error" in line
                  or "Traceback" in line]
        if errors:
            print(f"--- {self.name}: internal errors in the server log ---", file=sys.stderr)
            for line in errors[:5]:
                print(line[:4000], file=sys.stderr)

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._reader:
            self._reader.join(5)
        self._report_errors()

    def restart(self) -> ServerProcess:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        return self.start()

    # -- CLI and logs --------------------------------------------------------

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "swfed", "--config", str(self.config_path), *args],
            capture_output=True, text=True, env=self._environ(), timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"swfed {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def create_user(self, local_id: str, *, admin: bool = False,
                    tenant: str | None = None) -> str:
        args = ["admin", "user", "create", local_id, "--json"]
        if admin:
            args.append("--admin")
        if tenant:
            args += ["--tenant", tenant]
        return str(json.loads(self.cli(*args).stdout)["token"])

    def logs(self, event: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in list(self.log_lines):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if event is None or obj.get("event") == event:
                out.append(obj)
        return out


async def wait_for(predicate: Callable[[], Any], *, timeout: float = 15.0,
                   interval: float = 0.05, what: str = "condition") -> Any:
    """Poll an async or sync predicate until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if hasattr(value, "__await__"):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await trio.sleep(interval)


class TlsNet:
    """A private CA and certificates for test server names (and 127.0.0.1)."""

    def __init__(self, root: Path) -> None:
        import trustme

        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.ca_file = root / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def cert_for(self, name: str, *also: str) -> tuple[Path, Path]:
        """A certificate for ``name`` (and the names ``also`` served by the same process)."""
        cert = self.ca.issue_cert(name.split(":")[0], *(n.split(":")[0] for n in also),
                                  "127.0.0.1")
        certfile = self.root / f"{name}.crt"
        keyfile = self.root / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(certfile))
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(str(certfile), append=True)
        cert.private_key_pem.write_to_path(str(keyfile))
        return certfile, keyfile

    def ssl_context(self) -> Any:
        import ssl

        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


@contextlib.contextmanager
def running(*servers: ServerProcess) -> Iterator[None]:
    """Start the servers; SIGKILL them at the end whatever happened."""
    try:
        for server in servers:
            server.start()
        yield
    finally:
        for server in servers:
            server.kill()


def federated_servers(root: Path, names: list[str], *,
                      extra: dict[str, dict[str, dict[str, Any]]] | None = None,
                      tenants: dict[str, list[str]] | None = None
                      ) -> tuple[TlsNet, list[ServerProcess]]:
    """Servers with TLS from one test CA, each resolving the others' names.

    ``tenants``: more tenants a server's process serves besides its own name
    (created with the CLI before it starts), e.g. ``{"a.test": ["c.test"]}``.
    """
    net = TlsNet(root / "tls")
    tenants = tenants or {}
    ports = {name: free_port() for name in names}
    resolve = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    for name, more in tenants.items():
        resolve.update({other: resolve[name] for other in more})
    servers = []
    for name in names:
        tables: dict[str, dict[str, Any]] = {
            "federation": {"ca_file": str(net.ca_file), "generate_key_on_start": True},
            "federation.resolve": resolve,
        }
        for table, values in ((extra or {}).get(name) or {}).items():
            tables.setdefault(table, {}).update(values)
        server = ServerProcess(root / name, name, tls=net.cert_for(name, *tenants.get(name, [])),
                               extra=tables, port=ports[name])
        for other in tenants.get(name, []):
            server.cli("admin", "tenant", "create", other)
        servers.append(server)
    return net, servers

