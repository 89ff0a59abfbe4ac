"""What a start checks before it opens anything: files, the data directory, the ports.

Each mistake an admin makes while setting up (a typo in a certificate path,
a CA file the service user cannot read, a data directory it cannot write, a
port another process holds) ends the start with ONE line naming the config
file, the key (or the address) and what to do, as a :class:`ConfigError`
(exit status 2) -- never a traceback from deep inside the TLS, SQLite or
socket layers, where the same mistake used to surface as a 55-line
ExceptionGroup. The checks run in order of the config file, so the first
line printed is the first thing to fix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import tempfile
from pathlib import Path

from hypercorn.config import Config as HyperConfig

from swfed.config import Config, ConfigError


def _fail(config: Config, where: str, why: str) -> ConfigError:
    return ConfigError(f"{config.path}: {where}: {why}")


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_files(config: Config) -> None:
    """The TLS certificate and key, and the peers' CA file, can be read and used.

    Raises ConfigError naming the key. Loading them here (not only reading)
    also catches a key that does not match its certificate, or a file that
    is not PEM at all.
    """
    tls = config.server.tls
    if tls.enabled:
        assert tls.certfile is not None and tls.keyfile is not None
        for key, path in (("certfile", tls.certfile), ("keyfile", tls.keyfile)):
            _readable(config, f"[server.tls] {key}", path)
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                str(tls.certfile), str(tls.keyfile))
        except (ssl.SSLError, OSError) as exc:
            raise _fail(config, "[server.tls] certfile", f"{tls.certfile} with keyfile "
                        f"{tls.keyfile} does not load ({exc}): both must be PEM, the key "
                        "the certificate's own (swfed admin dev-certs makes a matching "
                        "pair)") from None
    ca_file = config.federation.ca_file
    if ca_file is not None:
        _readable(config, "[federation] ca_file", ca_file)
        try:
            ssl.create_default_context().load_verify_locations(cafile=str(ca_file))
        except (ssl.SSLError, OSError) as exc:
            raise _fail(config, "[federation] ca_file", f"{ca_file} holds no PEM CA "
                        f"certificate ({exc}): point it at the CA's certificate, not a "
                        "key") from None


def _readable(config: Config, where: str, path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except IsADirectoryError:
        raise _fail(config, where, f"{path} is a directory: name the PEM file") from None
    except OSError as exc:
        raise _fail(config, where, f"cannot read {path}: {_why(exc)}: fix the path, or let "
                    "the user swfed runs as read the file") from None


def check_data_dir(config: Config) -> None:
    """``data_dir`` exists (it is made 0700 if not) and takes a new file; raises ConfigError."""
    data_dir = config.server.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        # access() says yes to root on a read-only file system: really write.
        with tempfile.TemporaryFile(dir=data_dir, prefix=".swfed-write-check-"):
            pass
    except OSError as exc:
        raise _fail(config, "[server] data_dir", f"cannot write {data_dir}: {_why(exc)}: "
                    "create it for the user swfed runs as (it holds the database and the "
                    "signing keys), or choose another data_dir") from None


def check_schema(config: Config) -> int:
    """The database's schema level (0: none yet); a ConfigError when it is newer than ours.

    A file written by a newer swfed is never opened by an older one: its
    migrations might have moved data this code would misread.
    """
    from swfed.storage import maintenance

    db_file = config.server.data_dir / "swfed.sqlite3"
    if not db_file.exists():
        return 0
    try:
        version = maintenance.file_schema_version(db_file)
    except Exception as exc:  # sqlite3's errors; the driver stays inside storage
        raise _fail(config, "[server] data_dir", f"{db_file} cannot be read as a database "
                    f"({exc}): restore a backup (swfed admin restore)") from None
    latest = maintenance.latest_version()
    if version > latest:
        raise _fail(config, "[server] data_dir", f"{db_file} is at schema {version}, newer "
                    f"than this swfed {_version()} knows (schema {latest}): run the swfed "
                    "that wrote it, or restore a backup made at schema "
                    f"{latest} or older")
    return version


def snapshot_before_migrations(config: Config) -> Path | None:
    """A copy of a database that is about to be migrated, beside it, named with its level.

    ``swfed.sqlite3.schema-N.bak`` (0600 under the umask), made only when the
    file has data at an older level than ours; an existing snapshot of that
    level is kept (it is the older copy). None when nothing is to migrate.
    """
    from swfed import logs
    from swfed.storage import maintenance
    from swfed.storage.db import backup_file

    version = check_schema(config)
    latest = maintenance.latest_version()
    if version == 0 or version >= latest:
        return None
    db_file = config.server.data_dir / "swfed.sqlite3"
    snapshot = db_file.with_name(f"{db_file.name}.schema-{version}.bak")
    if not snapshot.exists():
        tmp = snapshot.with_name(snapshot.name + ".tmp")
        tmp.unlink(missing_ok=True)
        backup_file(db_file, tmp)
        os.replace(tmp, snapshot)
    logs.log("storage.snapshot", level="warning", schema=version, latest=latest,
             pending=maintenance.pending_migrations(version), snapshot=str(snapshot),
             message=f"migrating the database from schema {version} to {latest}; "
             f"the file as it was is {snapshot}")
    return snapshot


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("swfed")
    except metadata.PackageNotFoundError:
        from swfed import __version__

        return __version__


def bind_sockets(config: Config, backlog: int) -> list[str]:
    """Bind and listen on every ``[server] bind`` address; raises ConfigError naming it.

    Done before hypercorn starts, so a port in use is one line with the
    address instead of an error inside its nursery. Hypercorn takes the
    sockets over as ``fd://N`` binds (its documented form for inherited
    sockets); the caller closes them (:func:`close_binds`) if it never gets
    that far.
    """
    binds: list[str] = []
    try:
        for address in config.server.bind:
            one = HyperConfig()
            one.bind = [address]
            try:
                [sock] = one.create_sockets().insecure_sockets
                sock.listen(backlog)
            except OSError as exc:
                raise _fail(config, "[server] bind", _bind_advice(address, exc)) from None
            binds.append(f"fd://{sock.detach()}")
    except BaseException:
        close_binds(binds)
        raise
    return binds


def close_binds(binds: list[str]) -> None:
    for bind in binds:
        with contextlib.suppress(OSError):
            os.close(int(bind.removeprefix("fd://")))


def _bind_advice(address: str, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (f"{address}: address already in use: another process listens there "
                f"(ss -ltnp 'sport = :{address.rsplit(':', 1)[1]}' shows which); stop it, "
                "or choose another port in [server] bind or with --bind")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"{address}: cannot listen there ({_why(exc)}): the address is not one of "
                "this machine's; use 127.0.0.1, 0.0.0.0 or one of `ip addr`'s")
    if exc.errno == errno.EACCES:
        return (f"{address}: permission denied: ports below 1024 need root or "
                "CAP_NET_BIND_SERVICE; use a port above 1024 behind a reverse proxy")
    if isinstance(exc, socket.gaierror):
        return f"{address}: unknown host ({_why(exc)}): use an IP address"
    return f"{address}: cannot listen there: {_why(exc)}"


def check_storage(config: Config) -> None:
    """The PostgreSQL backend needs psycopg (the optional extra); raises ConfigError."""
    if config.storage.backend != "postgresql":
        return
    from swfed.storage import pg

    if not pg.available():
        raise _fail(config, "[storage] backend", 'is "postgresql" but psycopg is not '
                    "installed: pip install 'swfed[postgresql]'")
    if config.backup.enabled:
        raise _fail(config, "[backup] interval_hours", "scheduled backups copy the SQLite "
                    'file and this server runs on PostgreSQL: set it to 0 and back up '
                    "with pg_dump (docs/admin.md §11)")


def preflight(config: Config) -> None:
    """Everything checkable before the server opens its database; raises ConfigError."""
    check_files(config)
    check_data_dir(config)
    check_storage(config)
    check_schema(config)

