"""The TOML config, loaded into frozen attrs classes (DESIGN §8).

Anything wrong stops the start with ONE line naming the file, the key and
what was expected (:class:`ConfigError`). Unknown keys are errors too, with
a did-you-mean hint: a typo must never silently fall back to a default.
``SCAIWAVE_SERVER_NAME`` overrides ``[server] name``. Relative paths are
resolved against the working directory at load time.
"""

from __future__ import annotations

import difflib
import os
import tomllib
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from swfed.core.addresses import Network, parse_networks
from swfed.core.errors import BadRequest
from swfed.core.ids import canonical_server_name


class ConfigError(Exception):
    """One line: ``file: [table] key: what is wrong``."""


def validate_server_name(value: str) -> str:
    """A DNS name or IP with optional ``:port``, in its canonical form.

    Lower case, no trailing dot, no default port (``:443``): see
    :func:`swfed.core.ids.canonical_server_name`. Surrounding blanks are
    dropped. Raises ValueError with a human message.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a host name like chat.example.com")
    try:
        return canonical_server_name(value.strip())
    except BadRequest as exc:
        raise ValueError(exc.message) from None


def parse_host_port(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); raises ValueError."""
    if not isinstance(value, str):
        raise ValueError("expected \"host:port\"")
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
    else:
        host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not \"host:port\" (IPv6 as \"[::1]:8448\")")
    return host, int(port)


@attrs.frozen
class TlsConfig:
    certfile: Path | None = None
    keyfile: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.certfile is not None and self.keyfile is not None


@attrs.frozen
class ServerConfig:
    name: str
    bind: tuple[str, ...] = ("127.0.0.1:8448",)
    data_dir: Path = Path("data")
    max_request_bytes: int = 1_048_576
    graceful_timeout_seconds: float = 5.0
    log_format: str = "json"
    log_level: str = "info"
    public_base_url: str = ""
    #: Reverse proxies whose X-Forwarded-For is believed (see
    #: swfed.core.addresses.client_address); empty: the TCP peer is the client.
    trusted_proxies: tuple[Network, ...] = ()
    tls: TlsConfig = TlsConfig()


@attrs.frozen
class StorageConfig:
    #: "sqlite" (the file under data_dir, the default) or "postgresql" (``url``).
    backend: str = "sqlite"
    #: A libpq URI, ``postgresql://user:password@host/dbname`` (postgresql only);
    #: the environment's SWFED_STORAGE_URL overrides it.
    url: str = attrs.field(default="", repr=False)
    synchronous: str = "FULL"
    read_connections: int = 4
    busy_timeout_ms: int = 5000


@attrs.frozen
class FederationConfig:
    enabled: bool = True
    generate_key_on_start: bool = True
    verify_tls: bool = True
    ca_file: Path | None = None
    allow_private_addresses: bool = False
    key_rotation_days: int = 365
    key_overlap_days: int = 30
    request_timeout_seconds: float = 10.0
    max_response_bytes: int = 4_194_304
    proxy: str = ""
    resolve: Mapping[str, str] = types.MappingProxyType({})


@attrs.frozen
class CallsConfig:
    """The LiveKit server calls in rooms we host run on ("" URL: calls off)."""

    livekit_url: str = ""
    livekit_api_key: str = ""
    livekit_api_secret: str = attrs.field(default="", repr=False)
    token_ttl_seconds: int = 600

    @property
    def enabled(self) -> bool:
        return bool(self.livekit_url)


@attrs.frozen
class LimitsConfig:
    """Rates per bearer token and per peer; 429 SW_RATE_LIMITED with Retry-After past them.

    The defaults are far above what a person's client or a peer catching up
    after downtime does, and far below what one flooding token or peer could.
    """

    client_requests_per_second: float = 50.0
    client_burst: int = 500
    federation_requests_per_second: float = 50.0
    federation_burst: int = 500
    federation_events_per_second: float = 500.0
    federation_events_burst: int = 5000
    refused_requests_per_second: float = 10.0
    refused_requests_burst: int = 1000
    streams_per_user: int = 8
    max_tracked_keys: int = 10_000


@attrs.frozen
class RetentionConfig:
    """How long the housekeeping task keeps what only grows (days)."""

    audit_days: int = 90
    rejected_days: int = 90
    peer_counts_days: int = 30
    interval_seconds: float = 3600.0
    batch_rows: int = 1000


@attrs.frozen
class MediaConfig:
    """Files and images (``[media]``): limits on uploads and on fetching peers' files."""

    max_upload_bytes: int = 26_214_400
    user_quota_bytes: int = 1_073_741_824
    tenant_quota_bytes: int = 21_474_836_480
    upload_timeout_seconds: float = 600.0
    fetch_timeout_seconds: float = 120.0
    unreferenced_hours: float = 24.0


@attrs.frozen
class BackupConfig:
    """Scheduled backups (swfed.backups): off while ``interval_hours`` is 0."""

    interval_hours: float = 0.0
    keep: int = 7
    dir: Path | None = None  # None: data_dir/backups

    @property
    def enabled(self) -> bool:
        return self.interval_hours > 0


@attrs.frozen
class Config:
    path: Path
    server: ServerConfig
    storage: StorageConfig = StorageConfig()
    federation: FederationConfig = FederationConfig()
    calls: CallsConfig = CallsConfig()
    limits: LimitsConfig = LimitsConfig()
    retention: RetentionConfig = RetentionConfig()
    media: MediaConfig = MediaConfig()
    backup: BackupConfig = BackupConfig()


# -- the schema: (key, parser, default) per table; each check written once ------

Parser = Callable[[Any], Any]
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a table"}


def _describe(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "float", str: "string", list: "list",
            dict: "table"}.get(type(value), type(value).__name__)
    shown = repr(value) if not isinstance(value, (dict, list)) else kind
    return f"{kind} {shown}" if kind != shown else kind


def _typed(kind: type) -> Parser:
    def parse(value: Any) -> Any:
        ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            raise ValueError(f"expected {_TYPE_NAMES[kind]}, got {_describe(value)}")
        return value
    return parse


def _ranged(kind: type, low: float, high: float, *, low_open: bool = False) -> Parser:
    base = _typed(kind)

    def parse(value: Any) -> Any:
        value = base(value)
        if value < low or value > high or (low_open and value == low):
            lo = f"> {low}" if low_open else f">= {low}"
            raise ValueError(f"expected a number {lo} and <= {high}, got {value}")
        return value
    return parse


def _choice(*options: str, upper: bool = False) -> Parser:
    def parse(value: Any) -> str:
        value = _typed(str)(value)
        norm = value.upper() if upper else value
        if norm not in options:
            raise ValueError(f"expected one of {', '.join(map(repr, options))}, got {value!r}")
        return str(norm)
    return parse


def _path(value: Any) -> Path | None:
    value = _typed(str)(value)
    return Path(value).expanduser().absolute() if value else None


def _server_name(value: Any) -> str:
    return validate_server_name(_typed(str)(value))


def _bind(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f'expected a list of "host:port" strings, got {_describe(value)}')
    for item in value:
        parse_host_port(item)
    return tuple(value)


def _networks(value: Any) -> tuple[Network, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError('expected a list of addresses or networks like ["127.0.0.1", '
                         f'"10.0.0.0/8"], got {_describe(value)}')
    return parse_networks(value)


def _url(value: Any) -> str:
    value = _typed(str)(value)
    if value and not value.startswith(("http://", "https://")):
        raise ValueError(f"expected a URL starting with http:// or https://, got {value!r}")
    return str(value)


def _pg_url(value: Any) -> str:
    value = _secret(value)  # it may hold a password: never echoed
    if value and not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("expected a libpq URI starting with postgresql:// "
                         "(value not shown: it may hold a password)")
    return str(value)


def _livekit_url(value: Any) -> str:
    value = str(_typed(str)(value))
    scheme, sep, rest = value.partition("://")
    if value and (scheme not in ("ws", "wss", "http", "https") or not sep
                  or not rest.split("/", 1)[0]):
        raise ValueError("expected the LiveKit server's URL, like \"wss://livekit.example.com\" "
                         f"(ws://, wss://, http:// or https://), got {value!r}")
    return value


def _secret(value: Any) -> str:
    # Like _typed(str), but a wrong value is not echoed: it may be the secret.
    if not isinstance(value, str):
        kind = _describe(value).split(" ", 1)[0]
        raise ValueError(f"expected a string in quotes, got {kind} (value not shown)")
    return value


def _resolve(value: Any) -> Mapping[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a table, got {_describe(value)}")
    out = {}
    for name, address in value.items():
        try:
            key = validate_server_name(name)
            parse_host_port(address)
        except ValueError as exc:
            raise ValueError(f"{name!r}: {exc}") from None
        out[key] = address
    return types.MappingProxyType(out)


SCHEMA: dict[str, dict[str, Parser]] = {
    "server": {
        "name": _server_name, "bind": _bind, "data_dir": _path,
        "max_request_bytes": _ranged(int, 1024, 67_108_864),
        "graceful_timeout_seconds": _ranged(float, 0, 300, low_open=True),
        "log_format": _choice("json", "text"),
        "log_level": _choice("debug", "info", "warning", "error"),
        "public_base_url": _url, "trusted_proxies": _networks,
    },
    "server.tls": {"certfile": _path, "keyfile": _path},
    "storage": {
        "backend": _choice("sqlite", "postgresql"), "url": _pg_url,
        "synchronous": _choice("FULL", "NORMAL", upper=True),
        "read_connections": _ranged(int, 1, 32),
        "busy_timeout_ms": _ranged(int, 0, 600_000),
    },
    "federation": {
        "enabled": _typed(bool), "generate_key_on_start": _typed(bool),
        "verify_tls": _typed(bool), "ca_file": _path,
        "allow_private_addresses": _typed(bool),
        "key_rotation_days": _ranged(int, 1, 3650), "key_overlap_days": _ranged(int, 1, 365),
        "request_timeout_seconds": _ranged(float, 0, 300, low_open=True),
        "max_response_bytes": _ranged(int, 1024, 268_435_456), "proxy": _url,
    },
    "federation.resolve": {},
    "calls": {
        "livekit_url": _livekit_url, "livekit_api_key": _typed(str),
        "livekit_api_secret": _secret, "token_ttl_seconds": _ranged(int, 60, 86_400),
    },
    "limits": {
        "client_requests_per_second": _ranged(float, 0, 100_000, low_open=True),
        "client_burst": _ranged(int, 1, 1_000_000),
        "federation_requests_per_second": _ranged(float, 0, 100_000, low_open=True),
        "federation_burst": _ranged(int, 1, 1_000_000),
        "federation_events_per_second": _ranged(float, 0, 1_000_000, low_open=True),
        "federation_events_burst": _ranged(int, 1, 10_000_000),
        "refused_requests_per_second": _ranged(float, 0, 100_000, low_open=True),
        "refused_requests_burst": _ranged(int, 1, 10_000_000),
        "streams_per_user": _ranged(int, 1, 1000),
        "max_tracked_keys": _ranged(int, 100, 10_000_000),
    },
    "retention": {
        "audit_days": _ranged(int, 1, 36_500),
        "rejected_days": _ranged(int, 1, 36_500),
        "peer_counts_days": _ranged(int, 2, 36_500),
        "interval_seconds": _ranged(float, 1, 86_400),
        "batch_rows": _ranged(int, 1, 100_000),
    },
    "media": {
        "max_upload_bytes": _ranged(int, 1, 2**40),
        "user_quota_bytes": _ranged(int, 0, 2**50),
        "tenant_quota_bytes": _ranged(int, 0, 2**50),
        "upload_timeout_seconds": _ranged(float, 0, 86_400, low_open=True),
        "fetch_timeout_seconds": _ranged(float, 0, 86_400, low_open=True),
        "unreferenced_hours": _ranged(float, 0, 87_600, low_open=True),
    },
    "backup": {
        "interval_hours": _ranged(float, 0, 8760), "keep": _ranged(int, 1, 10_000),
        "dir": _path,
    },
}
SUBTABLES = {"server": ("tls",), "federation": ("resolve",)}


def _hint(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and check a config file; raises ConfigError (one line)."""
    env = os.environ if env is None else env
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        what = ("pass --config FILE or set SWFED_CONFIG (conf/server.toml in the source "
                "documents every option)" if isinstance(exc, FileNotFoundError)
                else "let the user swfed runs as read it")
        raise ConfigError(f"{shown}: cannot read: {exc.strerror or exc}: {what}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: invalid TOML: {exc}") from None

    def fail(table: str, key: str, why: str) -> ConfigError:
        return ConfigError(f"{shown}: [{table}] {key}: {why}")

    parsed: dict[str, dict[str, Any]] = {t: {} for t in SCHEMA}
    tops = ["server", "storage", "federation", "calls", "limits", "retention", "media",
            "backup"]
    unknown_tables = sorted(set(doc) - set(tops))
    if unknown_tables:
        raise ConfigError(f"{shown}: [{unknown_tables[0]}]: unknown table"
                          f"{_hint(unknown_tables[0], tops)}")
    for top in tops:
        table = doc.get(top, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{shown}: {top}: expected a table [{top}]")
        for key, value in table.items():
            full = f"{top}.{key}"
            if key in SUBTABLES.get(top, ()):
                if full == "federation.resolve":
                    try:
                        parsed[full]["resolve"] = _resolve(value)
                    except ValueError as exc:
                        raise fail(full, "", str(exc)).with_traceback(None) from None
                    continue
                if not isinstance(value, dict):
                    raise fail(top, key, f"expected a table [{full}]")
                for sub_key, sub_value in value.items():
                    parser = SCHEMA[full].get(sub_key)
                    if parser is None:
                        raise fail(full, sub_key, "unknown key"
                                   + _hint(sub_key, list(SCHEMA[full])))
                    try:
                        parsed[full][sub_key] = parser(sub_value)
                    except ValueError as exc:
                        raise fail(full, sub_key, str(exc)) from None
                continue
            parser = SCHEMA[top].get(key)
            if parser is None:
                raise fail(top, key, "unknown key"
                           + _hint(key, list(SCHEMA[top]) + list(SUBTABLES.get(top, ()))))
            try:
                parsed[top][key] = parser(value)
            except ValueError as exc:
                raise fail(top, key, str(exc)) from None

    override = env.get("SCAIWAVE_SERVER_NAME", "")
    if override:
        try:
            parsed["server"]["name"] = validate_server_name(override)
        except ValueError as exc:
            raise ConfigError(f"SCAIWAVE_SERVER_NAME: {exc}") from None
    if "name" not in parsed["server"]:
        raise fail("server", "name", 'required, e.g. name = "chat.example.com"')
    tls = parsed["server.tls"]
    if bool(tls.get("certfile")) != bool(tls.get("keyfile")):
        missing = "keyfile" if tls.get("certfile") else "certfile"
        raise fail("server.tls", missing, "required when the other of certfile/keyfile is set")
    server = dict(parsed["server"])
    server.setdefault("data_dir", Path("data").absolute())
    if server["data_dir"] is None:
        raise fail("server", "data_dir", "must not be empty")
    storage = dict(parsed["storage"])
    env_url = env.get("SWFED_STORAGE_URL", "").strip()
    if env_url:
        try:
            storage["url"] = _pg_url(env_url)
        except ValueError as exc:
            raise ConfigError(f"SWFED_STORAGE_URL: {exc}") from None
    if storage.get("backend") == "postgresql" and not storage.get("url"):
        raise fail("storage", "url", 'required when backend = "postgresql", e.g. url = '
                   '"postgresql://swfed@localhost/swfed" (or set SWFED_STORAGE_URL)')
    calls = parsed["calls"]
    if calls.get("livekit_url"):
        for key in ("livekit_api_key", "livekit_api_secret"):
            if not calls.get(key):
                raise fail("calls", key, "required when livekit_url is set (from your "
                                         "LiveKit server's keys)")
    return Config(
        path=Path(path).absolute(),
        server=ServerConfig(tls=TlsConfig(**tls), **server),
        storage=StorageConfig(**storage),
        federation=FederationConfig(**parsed["federation"], **parsed["federation.resolve"]),
        calls=CallsConfig(**calls),
        limits=LimitsConfig(**parsed["limits"]),
        retention=RetentionConfig(**parsed["retention"]),
        media=MediaConfig(**parsed["media"]),
        backup=BackupConfig(**parsed["backup"]),
    )
