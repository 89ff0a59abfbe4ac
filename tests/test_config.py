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
    ('[server]\nname = "a"\ntrusted_proxies = "127.0.0.1"\n', "[server] trusted_proxies"),
    ('[server]\nname = "a"\ntrusted_proxies = ["nginx"]\n',
     "[server] trusted_proxies: 'nginx' is not an IP address"),
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


def test_names_in_the_config_are_canonical(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[server]\nname = "Chat.Example.com.:443"\n'
                                      '[federation.resolve]\n"Peer.LAN.:443" = "10.0.0.7:8448"\n'
                                      '"peer2.lan:8448" = "10.0.0.8:8448"\n'), env={})
    assert cfg.server.name == "chat.example.com"
    assert dict(cfg.federation.resolve) == {"peer.lan": "10.0.0.7:8448",
                                            "peer2.lan:8448": "10.0.0.8:8448"}
    assert load_config(write(tmp_path, "[server]\n"),
                       env={"SCAIWAVE_SERVER_NAME": "B.test."}).server.name == "b.test"
    for bad in ("a..b", "a.test:x", "a.test:0", "-a.test"):
        assert "[server] name:" in error(tmp_path, f'[server]\nname = "{bad}"\n')


def test_limits_and_retention_tables(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[server]\nname = "a.test"\n'), env={})
    assert cfg.limits.client_requests_per_second == 50.0 and cfg.limits.streams_per_user == 8
    assert cfg.retention.audit_days == 90 and cfg.retention.batch_rows == 1000
    cfg = load_config(write(tmp_path, '[server]\nname = "a.test"\n[limits]\nclient_burst = 7\n'
                                      'federation_events_per_second = 2\n'
                                      '[retention]\naudit_days = 3\n'), env={})
    assert cfg.limits.client_burst == 7 and cfg.limits.federation_events_per_second == 2.0
    assert cfg.retention.audit_days == 3
    assert "[limits] client_burst:" in error(
        tmp_path, '[server]\nname = "a"\n[limits]\nclient_burst = 0\n')
    assert "did you mean streams_per_user?" in error(
        tmp_path, '[server]\nname = "a"\n[limits]\nstreams_per_usr = 3\n')
    assert "[retention] peer_counts_days:" in error(
        tmp_path, '[server]\nname = "a"\n[retention]\npeer_counts_days = 1\n')
    assert "[retention] audit_days:" in error(
        tmp_path, '[server]\nname = "a"\n[retention]\naudit_days = "90"\n')


def test_storage_backend_and_url(tmp_path: Path) -> None:
    base = '[server]\nname = "a.test"\n[storage]\n'
    cfg = load_config(write(tmp_path, base), env={})
    assert cfg.storage.backend == "sqlite" and cfg.storage.url == ""
    url = "postgresql://swfed:hunter2@db.example/swfed"
    cfg = load_config(write(tmp_path, base + f'backend = "postgresql"\nurl = "{url}"\n'), env={})
    assert (cfg.storage.backend, cfg.storage.url) == ("postgresql", url)
    assert "hunter2" not in repr(cfg)
    # the environment's SWFED_STORAGE_URL wins over the file
    other = "postgresql:///swfed?host=/run/postgresql"
    cfg = load_config(write(tmp_path, base + f'backend = "postgresql"\nurl = "{url}"\n'),
                      env={"SWFED_STORAGE_URL": other})
    assert cfg.storage.url == other
    cfg = load_config(write(tmp_path, base + 'backend = "postgresql"\n'),
                      env={"SWFED_STORAGE_URL": other})
    assert cfg.storage.url == other

    assert "[storage] backend: expected one of 'sqlite', 'postgresql', got 'mysql'" in error(
        tmp_path, base + 'backend = "mysql"\n')
    assert "[storage] url: required when backend = \"postgresql\"" in error(
        tmp_path, base + 'backend = "postgresql"\n')
    bad = error(tmp_path, base + 'url = "mysql://root:hunter2@x/db"\n')
    assert "[storage] url: expected a libpq URI starting with postgresql://" in bad
    assert "hunter2" not in bad
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, base), env={"SWFED_STORAGE_URL": "http://x"})
    assert str(info.value).startswith("SWFED_STORAGE_URL: expected a libpq URI")
