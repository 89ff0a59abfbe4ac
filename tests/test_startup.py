"""Start-up mistakes end in ONE line on stderr naming the file and key, exit 2.

Each case runs the real ``python -m swfed`` the way an admin would; the
mistake is one an admin makes while setting up (a typo in a path, a port
another process holds, a data directory that cannot be written).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.harness import ServerProcess, TlsNet, free_port, running, write_config


def swfed(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("SCAIWAVE_SERVER_NAME", None)
    env.pop("SWFED_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "swfed", *args], capture_output=True,
                          text=True, timeout=60, env=env, cwd=cwd)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("swfed: ")
    return lines[0]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> TlsNet:
    return TlsNet(tmp_path_factory.mktemp("startup-tls"))


def config(tmp_path: Path, **tables: dict[str, object]) -> Path:
    path = tmp_path / "server.toml"
    base: dict[str, dict[str, object]] = {"server": {
        "name": "a.test", "bind": [f"127.0.0.1:{free_port()}"],
        "data_dir": str(tmp_path / "data")}}
    for table, values in tables.items():
        base.setdefault(table.replace("__", "."), {}).update(values)
    write_config(path, base)
    return path


@pytest.mark.parametrize("which", ["certfile", "keyfile"])
def test_tls_file_typo(tmp_path: Path, net: TlsNet, which: str) -> None:
    cert, key = net.cert_for("a.test")
    files = {"certfile": str(cert), "keyfile": str(key)}
    files[which] = files[which] + ".typo"
    path = config(tmp_path, server__tls=files)
    line = one_line(swfed("--config", str(path)))
    assert line.startswith(f"swfed: {path}: [server.tls] {which}: cannot read ")
    assert ".typo: No such file or directory: fix the path" in line


def test_tls_key_of_another_certificate(tmp_path: Path, net: TlsNet) -> None:
    cert, _ = net.cert_for("a.test")
    _, other_key = net.cert_for("b.test")
    path = config(tmp_path, server__tls={"certfile": str(cert), "keyfile": str(other_key)})
    line = one_line(swfed("--config", str(path)))
    assert f"{path}: [server.tls] certfile: " in line and "does not load" in line


def test_ca_file_typo_and_not_a_ca(tmp_path: Path, net: TlsNet) -> None:
    path = config(tmp_path, federation={"ca_file": str(net.ca_file) + "x"})
    line = one_line(swfed("--config", str(path)))
    assert f"{path}: [federation] ca_file: cannot read {net.ca_file}x: No such file" in line
    _, key = net.cert_for("a.test")
    path = config(tmp_path, federation={"ca_file": str(key)})
    assert "[federation] ca_file: " in one_line(swfed("--config", str(path)))


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        path = config(tmp_path, server={"bind": [f"127.0.0.1:{port}"]})
        line = one_line(swfed("--config", str(path)))
    assert line.startswith(f"swfed: {path}: [server] bind: 127.0.0.1:{port}: address "
                           "already in use")
    assert "--bind" in line


def test_unwritable_data_dir(tmp_path: Path) -> None:
    # A path through a regular file: unwritable even for root, who ignores modes.
    (tmp_path / "a-file").write_text("")
    data_dir = tmp_path / "a-file" / "data"
    path = config(tmp_path, server={"data_dir": str(data_dir)})
    for args in ((), ("admin", "tenant", "list")):
        line = one_line(swfed("--config", str(path), *args))
        assert line == (f"swfed: {path}: [server] data_dir: cannot write {data_dir}: Not a "
                        "directory: create it for the user swfed runs as (it holds the "
                        "database and the signing keys), or choose another data_dir")


def test_missing_config_file_and_bad_key(tmp_path: Path) -> None:
    line = one_line(swfed("--config", "nope.toml", cwd=tmp_path))
    assert line == ("swfed: nope.toml: cannot read: No such file or directory: pass --config "
                    "FILE or set SWFED_CONFIG (conf/server.toml in the source documents every "
                    "option)")
    path = config(tmp_path, server={"bnid": ["127.0.0.1:1"]})
    assert one_line(swfed("--config", str(path))) == (
        f"swfed: {path}: [server] bnid: unknown key (did you mean bind?)")
    path = config(tmp_path)
    assert one_line(swfed("--config", str(path), "--bind", "nohost")).startswith(
        "swfed: --bind: 'nohost' is not \"host:port\"")


def test_version() -> None:
    from swfed import __version__

    result = swfed("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"swfed {__version__}"


async def test_bind_overrides_the_config(tmp_path: Path) -> None:
    """``--bind`` replaces ``[server] bind`` (twice: both listen; a bare port is 127.0.0.1)."""
    server = ServerProcess(tmp_path / "a", "a.test")
    first, second = free_port(), free_port()
    server.start_args = ["--bind", f"127.0.0.1:{first}", "--bind", str(second)]
    with running(server):
        async with httpx.AsyncClient() as client:
            for port in (first, second):
                r = await client.get(f"http://127.0.0.1:{port}/healthz")
                assert r.status_code in (200, 503) and "checks" in r.json()
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{server.url}/healthz")  # the config's port is unused


def test_where_next_names_the_url_and_how_to_make_a_user(tmp_path: Path, net: TlsNet) -> None:
    from swfed.cli import where_next
    from swfed.config import load_config

    repo = Path(__file__).parent.parent
    text = where_next(load_config(repo / "conf" / "server.toml", env={}), "conf/server.toml")
    assert "at http://127.0.0.1:8448/" in text
    assert "scripts/serve admin user create alice --admin --password" in text
    assert "scripts/serve" in (repo / "scripts" / "serve").read_text()
    assert "print_where_next" in (repo / "scripts" / "serve").read_text()
    cert, key = net.cert_for("a.test")
    path = config(tmp_path, server={"bind": ["0.0.0.0:9443"]},
                  server__tls={"certfile": str(cert), "keyfile": str(key)})
    assert "at https://127.0.0.1:9443/" in where_next(load_config(path, env={}), str(path))
