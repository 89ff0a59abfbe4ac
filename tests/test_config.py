"""Config loading: good files parse; every mistake stops with one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from swfed.config import ConfigError, load_config

REPO = Path(__file__).parent.parent


def test_shipped_config_loads() -> None:
    cfg = load_config(REPO / "conf" / "server.toml", env={})
    assert cfg.server.name == "localhost"
    assert cfg.server.bind == ("127.0.0.1:8448",)
    assert cfg.storage.synchronous == "FULL"
    assert cfg.federation.verify_tls is True
    assert cfg.federation.ca_file is None  # "" means unset


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(text)
    return path


def error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)) or message.startswith(
        "SCAIWAVE_")
    return message


def test_minimal_and_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[server]\nname = "Chat.Example.com"\n'), env={})
    assert cfg.server.name == "chat.example.com"
    assert cfg.server.max_request_bytes == 1_048_576
    assert cfg.federation.key_rotation_days == 365
    assert not cfg.server.tls.enabled


def test_env_overrides_server_name(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nname = "a.test"\n')
    assert load_config(path, env={"SCAIWAVE_SERVER_NAME": "b.test"}).server.name == "b.test"
    assert "SCAIWAVE_SERVER_NAME" in error(tmp_path, '[server]\nname = "a.test"\n',
                                           env={"SCAIWAVE_SERVER_NAME": "bad name!"})
    # the variable alone satisfies the required key
    path = write(tmp_path, "[server]\n")
    assert load_config(path, env={"SCAIWAVE_SERVER_NAME": "c.test"}).server.name == "c.test"


@pytest.mark.parametrize(("text", "expected"), [
    ("[server]\n", "[server] name: required"),
    ('[server]\nname = "a"\nnmae = 1\n', "[server] nmae: unknown key"),
    ('[server]\nname = "a"\nbnid = []\n', "did you mean bind?"),
    ('[server]\nname = "a"\n[federaton]\n', "[federaton]: unknown table (did you mean "
                                           "federation?)"),
    ('[server]\nname = "a"\nmax_request_bytes = "big"\n', "[server] max_request_bytes"),
    ('[server]\nname = "a"\nmax_request_bytes = 10\n', "max_request_bytes"),
    ('[server]\nname = "a"\nlog_format = "xml"\n', "[server] log_format"),
    ('[server]\nname = 5\n', "[server] name"),
    ('[server]\nname = "no spaces"\n', "[server] name"),
    ('[server]\nname = "a"\n[storage]\nsynchronous = "OFF"\n', "[storage] synchronous"),
    ('[server]\nname = "a"\n[federation]\nverify_tls = "yes"\n', "[federation] verify_tls"),
    ('[server]\nname = "a"\n[federation]\nkey_rotation_days = 0\n', "key_rotation_days"),
    ('[server]\nname = "a"\n[server.tls]\ncertfile = "c.pem"\n', "[server.tls] keyfile"),
    ('[server]\nname = "a"\n[server.tls]\ncert = "c.pem"\n', "did you mean certfile?"),
    ('[server]\nname = "a"\n[federation.resolve]\n"b.test" = "nohost"\n',
     "[federation.resolve]"),
    ('[server]\nname = "a"\n[federation]\nproxy = "ftp://x"\n', "[federation] proxy"),
    ("[server\n", "invalid TOML"),
])
def test_one_line_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error(tmp_path, text)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml", env={})
    assert "cannot read" in str(info.value)


def test_resolve_map(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[server]\nname = "a"\n[federation.resolve]\n'
                            '"B.test:8448" = "127.0.0.1:9000"\n'), env={})
    assert dict(cfg.federation.resolve) == {"b.test:8448": "127.0.0.1:9000"}
