"""``swfed [--config FILE] [--bind ADDR]… [COMMAND …]`` (also ``python -m swfed``).

No command runs the server; ``--bind`` (repeatable) then replaces ``[server]
bind``, so one config can serve several processes. Admin commands open the
data directory's SQLite file directly, so they work whether or not the
server is running (WAL lets both write; each command is one short
transaction); ``admin dev-certs`` needs no config at all.

Exit status: 0 done, 1 refused (the message says why), 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from swfed import logs
from swfed.config import Config, ConfigError, load_config, validate_server_name
from swfed.core.errors import SwfedError
from swfed.core.ids import check_local_id
from swfed.storage import media as media_db
from swfed.storage import tenants as tenants_db
from swfed.storage.db import backup_file, open_direct, run_in_transaction

DEFAULT_CONFIG = "conf/server.toml"

def _now() -> int:
    import time

    return int(time.time() * 1000)


def _db(config: Config) -> Any:
    from swfed.server import db_path
    from swfed.startup import check_data_dir, snapshot_before_migrations

    check_data_dir(config)  # a ConfigError, exit 2, rather than SQLite's "unable to open"
    if config.storage.backend == "postgresql":
        from swfed.startup import check_storage
        from swfed.storage import pg

        check_storage(config)
        conn = pg.open_direct(config.storage.url, db_path(config))
        run_in_transaction(conn, tenants_db.ensure_default_tenant_txn, config.server.name, _now())
        return conn
    snapshot_before_migrations(config)  # and refuses a schema newer than ours
    conn = open_direct(db_path(config), synchronous=config.storage.synchronous,
                       busy_timeout_ms=config.storage.busy_timeout_ms)
    run_in_transaction(conn, tenants_db.ensure_default_tenant_txn, config.server.name, _now())
    return conn


def _tenant(conn: Any, config: Config, name: str | None) -> tenants_db.Tenant:
    server_name = name or config.server.name
    try:
        server_name = validate_server_name(server_name)
    except ValueError as exc:
        raise SwfedError(f"--tenant {server_name!r}: {exc}", code="SW_BAD_SERVER_NAME") from exc
    tenant = tenants_db.tenant_by_name_txn(conn, server_name)
    if tenant is None:
        raise SwfedError(f"no tenant {server_name}: create it with "
                         f"swfed admin tenant create {server_name}", code="SW_TENANT_NOT_FOUND")
    return tenant


def cmd_tenant_create(config: Config, args: argparse.Namespace) -> int:
    try:
        name = validate_server_name(args.name)
    except ValueError as exc:
        raise SwfedError(f"tenant name {args.name!r}: {exc}", code="SW_BAD_SERVER_NAME") from exc
    from swfed.server import db_path

    conn = _db(config)
    tenant = run_in_transaction(conn, tenants_db.create_tenant_txn, name, _now())
    try:
        # A running server serves the new Host name from its next request on.
        tenants_db.bump_tenants_stamp(db_path(config))
    except OSError as exc:
        print(f"swfed: warning: could not tell a running server ({exc}); it serves "
              f"{tenant.server_name} within a few seconds anyway", file=sys.stderr)
    _print(args, {"server_name": tenant.server_name}, f"created tenant {tenant.server_name}")
    return 0


def cmd_tenant_list(config: Config, args: argparse.Namespace) -> int:
    conn = _db(config)
    tenants = tenants_db.list_tenants_txn(conn)
    rows = [{"server_name": t.server_name, "default": t.is_default,
             "federation_enabled": t.federation_enabled} for t in tenants]
    _print(args, {"data": rows},
           "\n".join(t.server_name + (" (default)" if t.is_default else "") for t in tenants))
    return 0


def _read_password(what: str) -> str:
    """A new password: asked twice on a terminal, else the first line of stdin."""
    import getpass

    from swfed.storage.passwords import check_password

    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass(f"password for {what}: ")
        if getpass.getpass("again: ") != first:
            raise SwfedError("the two passwords differ", code="SW_BAD_PASSWORD")
    else:
        first = (sys.stdin.readline() if sys.stdin is not None else "").rstrip("\r\n")
        if not first:
            raise SwfedError("--password: no terminal to ask on and nothing on stdin; "
                             "pipe the password in, e.g. printf %s \"$PW\" | swfed admin user "
                             "...", code="SW_BAD_PASSWORD")
    return check_password(first, "password")


def _password_hash(what: str) -> str:
    from swfed.storage.passwords import hash_password

    return hash_password(_read_password(what))


def cmd_user_create(config: Config, args: argparse.Namespace) -> int:
    from swfed.storage.passwords import create_user_with_password_txn

    local_id = check_local_id(args.local_id.removeprefix("@"), "LOCAL_ID")
    conn = _db(config)
    tenant = _tenant(conn, config, args.tenant)
    name = args.display_name or local_id
    if args.password:
        if tenants_db.user_txn(conn, tenant, local_id) is not None:  # before asking
            raise SwfedError(f"user @{local_id} already exists on {tenant.server_name}: "
                             "swfed admin user set-password changes a password",
                             code="SW_USER_EXISTS")
        token = run_in_transaction(conn, create_user_with_password_txn, tenant, local_id, name,
                                   args.admin, _password_hash(f"@{local_id}"), _now())
    else:
        token = run_in_transaction(conn, tenants_db.create_user_txn, tenant, local_id, name,
                                   args.admin, _now())
    _print(args, {"id": f"@{local_id}", "fqid": f"@{local_id}:{tenant.server_name}",
                  "admin": args.admin, "token": token}, token)
    return 0


def cmd_user_token(config: Config, args: argparse.Namespace) -> int:
    local_id = check_local_id(args.local_id.removeprefix("@"), "LOCAL_ID")
    conn = _db(config)
    tenant = _tenant(conn, config, args.tenant)
    token = run_in_transaction(conn, tenants_db.issue_token_txn, tenant, local_id, _now())
    _print(args, {"id": f"@{local_id}", "token": token}, token)
    return 0


def cmd_user_set_password(config: Config, args: argparse.Namespace) -> int:
    from swfed.storage.passwords import set_password_txn

    local_id = check_local_id(args.local_id.removeprefix("@"), "LOCAL_ID")
    conn = _db(config)
    tenant = _tenant(conn, config, args.tenant)
    if tenants_db.user_txn(conn, tenant, local_id) is None:
        raise SwfedError(f"no user @{local_id} on {tenant.server_name}",
                         code="SW_USER_NOT_FOUND")
    hashed = _password_hash(f"@{local_id}")
    run_in_transaction(conn, set_password_txn, tenant, local_id, hashed, _now())
    _print(args, {"id": f"@{local_id}", "password_set": True},
           f"password set for @{local_id} on {tenant.server_name}")
    return 0


def cmd_backup(config: Config, args: argparse.Namespace) -> int:
    from swfed.server import db_path

    source = db_path(config)
    target = Path(args.path).resolve()
    if config.storage.backend == "postgresql":
        raise SwfedError("swfed admin backup copies the SQLite file; this server runs on "
                         "PostgreSQL: back it up with pg_dump (or base backups and WAL "
                         "archiving)", code="SW_BACKUP_UNSUPPORTED")
    if not source.exists():
        raise SwfedError(f"no database at {source}: start the server once or check data_dir",
                         code="SW_NO_DATABASE")
    if target.exists() and not args.force:
        raise SwfedError(f"{target} exists: choose a new path or pass --force",
                         code="SW_BACKUP_EXISTS")
    if target.exists():
        target.unlink()
    backup_file(source, target)
    # the files of messages: beside the database, as PATH.media/ (issue 21)
    media_target = media_db.MediaStore(Path(f"{target}.media"))
    copy = open_direct(target)
    try:
        hashes = run_in_transaction(copy, media_db.stored_hashes_txn)
    finally:
        copy.close()
    files, size = media_db.copy_files(media_db.MediaStore.for_data_dir(config.server.data_dir),
                                      media_target, hashes)
    _print(args, {"backup": str(target), "media": str(media_target.root), "media_files": files,
                  "media_bytes": size},
           f"backed up {source} to {target}, and {files} media files ({size} bytes) to "
           f"{media_target.root}")
    return 0


def cmd_media(config: Config, args: argparse.Namespace) -> int:
    """Media usage per tenant and user (uploads), and peers' files cached."""
    rows = run_in_transaction(_db(config), media_db.usage_report_txn)
    lines = [f"{'tenant':<30} {'user':<40} {'files':>7} {'bytes':>14}"]
    for row in rows:
        who = row["uploader"] or "(peers' files)"
        lines.append(f"{row['tenant']:<30} {who:<40} {row['files']:>7} {row['bytes']:>14}")
    _print(args, {"data": rows}, "\n".join(lines))
    return 0


def cmd_restore(config: Config, args: argparse.Namespace) -> int:
    """The backup becomes the database; refused while a server holds data_dir's lock."""
    import time

    from swfed.server import db_path
    from swfed.startup import check_data_dir
    from swfed.storage import maintenance
    from swfed.storage.files import DataDirBusy, lock_data_dir, unlock_data_dir

    backup = Path(args.path).resolve()
    if not backup.is_file():
        raise SwfedError(f"{backup}: no such file: give a file `swfed admin backup` made",
                         code="SW_NOT_FOUND")
    problems = maintenance.integrity_problems(backup)
    if problems:
        raise SwfedError(f"{backup} is not a sound database ({problems[0]}): "
                         "restore another backup", code="SW_BAD_BACKUP")
    version = maintenance.file_schema_version(backup)
    if version == 0 or version > maintenance.latest_version():
        raise SwfedError(f"{backup} is at schema {version}, this swfed knows 1.."
                         f"{maintenance.latest_version()}: restore it with the swfed that "
                         "made it", code="SW_BAD_BACKUP")
    check_data_dir(config)
    target = db_path(config)
    try:
        lock = lock_data_dir(config.server.data_dir)
    except DataDirBusy as exc:
        raise SwfedError(f"the server is running on {config.server.data_dir} (pid "
                         f"{exc.pid or '?'} holds {exc.path}): stop it first, e.g. "
                         "systemctl stop swfed", code="SW_SERVER_RUNNING") from None
    try:
        kept = None
        if target.exists():
            if not args.force:
                raise SwfedError(f"{target} exists: restoring would replace it; pass --force "
                                 "(the old file is kept beside it)", code="SW_RESTORE_OVER_DATA")
            kept = target.with_name(f"{target.name}.before-restore-"
                                    f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
            # the old database, with its WAL, as a file of its own
            backup_file(target, kept)
        maintenance.restore_file(backup, target)
        # the files of messages `admin backup` put beside it (PATH.media/), if any
        media = maintenance.restore_tree(Path(f"{backup}.media"),
                                         config.server.data_dir / "media")
    finally:
        unlock_data_dir(lock)
    _print(args, {"restored": str(backup), "database": str(target), "schema": version,
                  "previous": str(kept) if kept else None, "media_files": media},
           f"restored {backup} to {target} (schema {version})"
           + (f", and {media} media files" if media else "")
           + (f"; the database it replaced is {kept}" if kept else "")
           + "; start the server")
    return 0


def cmd_db_check(config: Config, args: argparse.Namespace) -> int:
    from swfed.server import db_path
    from swfed.storage import maintenance

    target = db_path(config)
    if not target.exists():
        raise SwfedError(f"no database at {target}: start the server once or check data_dir",
                         code="SW_NO_DATABASE")
    problems = maintenance.integrity_problems(target)
    if args.json:
        print(json.dumps({"database": str(target), "ok": not problems, "problems": problems}))
    else:
        for line in problems:
            print(f"{target}: {line}")
        if not problems:
            print(f"{target}: ok")
    return 1 if problems else 0


def cmd_db_status(config: Config, args: argparse.Namespace) -> int:
    from swfed.server import db_path
    from swfed.storage import maintenance

    target = db_path(config)
    latest = maintenance.latest_version()
    version = maintenance.file_schema_version(target) if target.exists() else 0
    pending = maintenance.pending_migrations(version)
    if args.json:
        print(json.dumps({"database": str(target), "schema": version, "latest": latest,
                          "pending": pending, "exists": target.exists()}))
    elif not target.exists():
        print(f"{target}: no database yet; the first start creates it at schema {latest}")
    elif version > latest:
        print(f"{target}: schema {version}, newer than this swfed ({latest}): upgrade swfed")
    else:
        print(f"{target}: schema {version} of {latest}; "
              + (f"pending: {', '.join(map(str, pending))} (the next start runs them)"
                 if pending else "nothing pending"))
    return 2 if version > latest else 0


def cmd_port_db(config: Config, args: argparse.Namespace) -> int:
    """Copy the SQLite database into an empty PostgreSQL one (swfed.storage.port)."""
    from swfed.server import db_path
    from swfed.storage import pg
    from swfed.storage import port as port_db

    source_path = db_path(config)
    if config.storage.backend != "sqlite":
        raise SwfedError("port-db copies the SQLite database of a config with backend = "
                         '"sqlite": run it with the config the server used on SQLite',
                         code="SW_PORT_REFUSED")
    if not source_path.exists():
        raise SwfedError(f"no database at {source_path}: check data_dir",
                         code="SW_NO_DATABASE")
    if not pg.available():
        raise SwfedError("port-db needs psycopg: pip install 'swfed[postgresql]'",
                         code="SW_PORT_REFUSED")
    url = args.to
    if not url.startswith(("postgresql://", "postgres://")):
        raise SwfedError("--to: give a libpq URI, postgresql://user@host/dbname",
                         code="SW_PORT_REFUSED")
    source = open_direct(source_path, synchronous=config.storage.synchronous,
                         busy_timeout_ms=config.storage.busy_timeout_ms)
    try:
        target = pg.open_direct(url, source_path)
    except Exception as exc:  # noqa: BLE001 - a one-line answer, not a traceback
        source.close()
        raise SwfedError(f"--to: cannot open the PostgreSQL database: "
                         f"{str(exc).strip().splitlines()[0]}", code="SW_PORT_REFUSED") from exc
    try:
        try:
            summary = port_db.port(source, target)
        except port_db.PortRefused as exc:
            raise SwfedError(str(exc), code="SW_PORT_REFUSED") from exc
    finally:
        source.close()
        target.close()
    total = sum(summary["tables"].values())
    _print(args, summary, f"copied {total} rows ({summary['tables']['events']} events, digest "
                          f"{summary['events_digest'][:16]}…) from {source_path} into PostgreSQL; "
                          'now set [storage] backend = "postgresql" and url, and start the '
                          "server (stop the SQLite one first)")
    return 0


def _key_command(config: Config, args: argparse.Namespace, rotate: bool) -> int:
    from swfed.storage.keys import new_key_txn

    conn = _db(config)
    tenant = _tenant(conn, config, args.tenant)
    keypair = run_in_transaction(conn, new_key_txn, tenant, _now(),
                                 config.federation.key_overlap_days, rotate=rotate, actor="cli")
    verb = "rotated to" if rotate else "generated"
    _print(args, {"server_name": tenant.server_name, "key_id": keypair.key_id,
                  "public_key": f"ed25519:{keypair.public_key_b64}"},
           f"{tenant.server_name}: {verb} key {keypair.key_id} "
           f"(ed25519:{keypair.public_key_b64})"
           + (f"; the previous key verifies live requests for "
              f"{config.federation.key_overlap_days} days, and the events it signed for good"
              if rotate else ""))
    return 0


def cmd_key_generate(config: Config, args: argparse.Namespace) -> int:
    return _key_command(config, args, rotate=False)


def cmd_key_rotate(config: Config, args: argparse.Namespace) -> int:
    return _key_command(config, args, rotate=True)


def cmd_key_show(config: Config, args: argparse.Namespace) -> int:
    from swfed.storage.keys import own_keys_txn

    conn = _db(config)
    tenant = _tenant(conn, config, args.tenant)
    keys = [{"key_id": k.key_id, "public_key": f"ed25519:{k.public_key}",
             "current": k.retired_at is None, "created_at": k.created_at,
             "retired_at": k.retired_at, "expires_at": k.expires_at,
             "private_half": k.seed is not None} for k in own_keys_txn(conn, tenant)]
    text = "\n".join(f"{k['key_id']} {'current' if k['current'] else 'retired'} "
                     f"{k['public_key']}" for k in keys) or f"{tenant.server_name}: no key"
    _print(args, {"server_name": tenant.server_name, "keys": keys}, text)
    return 0


def cmd_doctor(config: Config, args: argparse.Namespace) -> int:
    """Run the troubleshooting guide's checks against one peer (swfed.doctor)."""
    import attrs
    import trio

    from swfed.doctor import Doctor, Local, exit_status
    from swfed.federation.client import FederationClient
    from swfed.storage.keys import doctor_facts_txn

    try:
        peer = validate_server_name(args.peer)
    except ValueError as exc:
        raise SwfedError(f"PEER {args.peer!r}: {exc}", code="SW_BAD_SERVER_NAME") from exc
    conn = _db(config)
    tenant = _tenant(conn, config, args.tenant)
    local = Local(tenant, *doctor_facts_txn(conn, tenant, peer, _now()))
    conn.close()

    async def run() -> list[Any]:
        # Our own descriptor is fetched the way a peer would, but it may well
        # live on a private address in a homelab: allow that for this one check.
        own_cfg = attrs.evolve(config.federation, allow_private_addresses=True)
        async with FederationClient(config.federation) as client, \
                FederationClient(own_cfg) as own_client:
            return await Doctor(config, local, peer, client=client, own_client=own_client,
                                clock=_now).run()

    checks = trio.run(run)
    status = exit_status(checks)
    _print(args, {"server_name": tenant.server_name, "peer": peer, "ok": status == 0,
                  "checks": [c.to_json() for c in checks]},
           "\n".join(c.line() for c in checks)
           + ("\nno problem found" if status == 0 else
              f"\n{sum(c.status == 'problem' for c in checks)} problem(s) found"))
    return status


def cmd_dev_certs(args: argparse.Namespace) -> int:
    """A private CA and a certificate per name, for a homelab (swfed.devcerts)."""
    from swfed.devcerts import make_dev_certs

    names = []
    for raw in args.names:
        try:
            names.append(validate_server_name(raw))
        except ValueError as exc:
            raise SwfedError(f"NAME {raw!r}: {exc}", code="SW_BAD_SERVER_NAME") from exc
    made = make_dev_certs(names, Path(args.out))
    lines = [f"{'reused' if made.ca_reused else 'made'} CA {made.ca_cert} (key {made.ca_key}, "
             "keep it private)"]
    lines += [f"{name}: certfile {cert}, keyfile {key}" for name, cert, key in made.servers]
    lines.append(f"trust {made.ca_cert} in [federation] ca_file and in your browser")
    _print(args, {"ca_cert": str(made.ca_cert), "ca_key": str(made.ca_key),
                  "ca_reused": made.ca_reused,
                  "servers": [{"name": n, "certfile": str(c), "keyfile": str(k)}
                              for n, c, k in made.servers]}, "\n".join(lines))
    return 0


def where_next(config: Config, config_arg: str, command: str = "scripts/serve") -> str:
    """What ``scripts/serve`` prints before it runs the server: the URL, how to make a user."""
    from swfed.config import parse_host_port

    host, port = parse_host_port(config.server.bind[0])
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if config.server.tls.enabled else "http"
    url = f"{scheme}://{shown}:{port}/" if port else f"{scheme}://{shown}:PORT/ (PORT: the " \
        "server.listening line below)"
    return "\n".join([
        f"swfed: serving {config_arg} (server name {config.server.name}) at {url}",
        "  make yourself a user, in a second terminal:",
        f"    {command} admin user create alice --admin --password",
        f"  then open {url.split(' ')[0]} and sign in as alice; Ctrl-C stops the server.",
        "  JSON log lines follow ([server] log_format = \"text\" for plain ones).",
    ])


def print_where_next(config_arg: str) -> int:
    """``scripts/serve``'s greeting on stderr; says nothing about a bad config (the server will)."""
    try:
        config = load_config(config_arg)
    except ConfigError:
        return 0
    print(where_next(config, config_arg), file=sys.stderr)
    return 0


def _print(args: argparse.Namespace, obj: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(obj))
    else:
        print(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swfed", description="swfed: a self-hosted chat server built for federation. "
        "With no command, runs the server.")
    parser.add_argument("--config", default=os.environ.get("SWFED_CONFIG", DEFAULT_CONFIG),
                        help=f"TOML config file (default: $SWFED_CONFIG or {DEFAULT_CONFIG})")
    parser.add_argument("--bind", action="append", metavar="ADDR",
                        help='listen on ADDR ("host:port", "[::1]:port", or a bare port for '
                        '127.0.0.1:port) instead of [server] bind; repeat for several')
    parser.add_argument("--version", action="version", version=f"swfed {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    admin = commands.add_parser("admin", help="administer tenants, users, keys, backups")
    admin_cmds = admin.add_subparsers(dest="admin_command", metavar="WHAT", required=True)

    tenant = admin_cmds.add_parser("tenant", help="tenants (virtual hosts)")
    tenant_cmds = tenant.add_subparsers(dest="tenant_command", required=True)
    p = tenant_cmds.add_parser("create", help="add a tenant served under its own host name")
    p.add_argument("name", help="its server name, e.g. chat.example.org")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tenant_create)
    p = tenant_cmds.add_parser("list", help="list tenants")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tenant_list)

    user = admin_cmds.add_parser("user", help="users and their tokens")
    user_cmds = user.add_subparsers(dest="user_command", required=True)
    p = user_cmds.add_parser("create", help="create a user and print a bearer token")
    p.add_argument("local_id")
    p.add_argument("--tenant", help="tenant server name (default: [server] name)")
    p.add_argument("--admin", action="store_true", help="make a tenant admin")
    p.add_argument("--display-name", dest="display_name")
    p.add_argument("--json", action="store_true", help="print a JSON object with the token")
    p.add_argument("--password", action="store_true",
                   help="also set a password for the web client: asked on the terminal, "
                   "else read from the first line of stdin")
    p.set_defaults(func=cmd_user_create)
    p = user_cmds.add_parser("set-password", help="set or change a user's password (asked on "
                             "the terminal, else the first line of stdin)")
    p.add_argument("local_id")
    p.add_argument("--tenant")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_user_set_password)
    p = user_cmds.add_parser("token", help="issue another bearer token for a user")
    p.add_argument("local_id")
    p.add_argument("--tenant")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_user_token)

    p = admin_cmds.add_parser("backup", help="online backup of the database (keys included)")
    p.add_argument("path")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_backup)

    p = admin_cmds.add_parser("media", help="media usage per tenant and user")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_media)

    p = admin_cmds.add_parser(
        "restore", help="make a backup the database (the server must be stopped)")
    p.add_argument("path", help="a file `swfed admin backup` made")
    p.add_argument("--force", action="store_true",
                   help="replace an existing database (kept beside it as "
                   "swfed.sqlite3.before-restore-TIME)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_restore)

    db = admin_cmds.add_parser("db", help="the database file: integrity, schema level")
    db_cmds = db.add_subparsers(dest="db_command", required=True)
    p = db_cmds.add_parser("check", help="SQLite's integrity and foreign-key checks; one "
                           "line per problem, exit 1 if any")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_db_check)
    p = db_cmds.add_parser("status", help="the schema level and the migrations pending")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_db_status)

    p = admin_cmds.add_parser("port-db", help="copy the SQLite database into an empty "
                              "PostgreSQL database")
    p.add_argument("--to", required=True, metavar="URL",
                   help="the target, a libpq URI: postgresql://user@host/dbname")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_port_db)
    federation = admin_cmds.add_parser("federation", help="federation keys")
    fed_cmds = federation.add_subparsers(dest="federation_command", required=True)
    key = fed_cmds.add_parser("key", help="this server's Ed25519 signing key")
    key_cmds = key.add_subparsers(dest="key_command", required=True)
    for name, func, text in (
            ("generate", cmd_key_generate, "make the first signing key"),
            ("rotate", cmd_key_rotate, "replace the key; the old one verifies during the overlap"),
            ("show", cmd_key_show, "list current and retired keys (public halves only)")):
        p = key_cmds.add_parser(name, help=text)
        p.add_argument("--tenant", help="tenant server name (default: [server] name)")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)
    doctor = commands.add_parser(
        "doctor", help="check federation with one peer, step by step, and say what to fix")
    doctor.add_argument("peer", metavar="PEER_SERVER_NAME")
    doctor.add_argument("--tenant", help="our tenant to check from (default: [server] name)")
    doctor.add_argument("--json", action="store_true", help="one JSON object for machines")
    doctor.set_defaults(func=cmd_doctor)

    p = admin_cmds.add_parser(
        "dev-certs", help="make a private CA and server certificates (homelab, trying "
        "federation on one machine); needs no config")
    p.add_argument("names", nargs="+", metavar="NAME",
                   help="server names, e.g. a.localhost:8448 (the port is not part of the "
                   "certificate)")
    p.add_argument("--out", default="certs", help="directory for the files (default: certs); "
                   "a CA already there is reused, so later servers share it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_dev_certs, needs_config=False)
    return parser


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("swfed")
    except metadata.PackageNotFoundError:  # run from a source tree without installing
        from swfed import __version__

        return __version__


def _binds(values: list[str]) -> tuple[str, ...]:
    """``--bind`` values, checked like ``[server] bind``; a bare port is 127.0.0.1:port."""
    from swfed.config import parse_host_port

    out = []
    for value in values:
        address = f"127.0.0.1:{value}" if value.isdigit() else value
        try:
            parse_host_port(address)
        except ValueError as exc:
            raise ConfigError(f"--bind: {exc}") from None
        out.append(address)
    return tuple(out)


def main(argv: Sequence[str] | None = None) -> int:
    from swfed.storage.files import private_umask

    private_umask()  # before anything is created: keys live in the database
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "needs_config", True):
        try:
            return int(args.func(args))
        except SwfedError as exc:
            print(f"swfed: {exc.code}: {exc.message}", file=sys.stderr)
            return 1
    try:
        config = load_config(args.config)
        if args.bind:
            import attrs

            config = attrs.evolve(config, server=attrs.evolve(config.server,
                                                              bind=_binds(args.bind)))
    except ConfigError as exc:
        print(f"swfed: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.server.log_format, config.server.log_level)
    try:
        if args.command is None:
            from swfed.server import run

            try:
                run(config)
            except KeyboardInterrupt:  # a second Ctrl-C during shutdown
                return 130
            return 0
        return int(args.func(config, args))
    except ConfigError as exc:  # found at start: a file, the data directory, a port
        print(f"swfed: {exc}", file=sys.stderr)
        return 2
    except SwfedError as exc:
        print(f"swfed: {exc.code}: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
