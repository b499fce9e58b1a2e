"""``berth``: one command line for every service.

    berth blobstore         the gRPC blobstore
    berth gateway           the registry HTTP API
    berth auth              the token service (Docker token auth, JWKS)
    berth search            the search service (POST /events, GET /v1/search)
    berth search reindex    rebuild the search index from a registry's catalog
    berth run               every service as child processes, stopped together on Ctrl-C
    berth config check      validate the configuration and print the effective result
    berth garbage-collect   remove blobs no manifest references (offline, or while pushes go on)
    berth users add|list|remove|passwd   accounts of the token service (its SQL user table)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from services.common import config, logs

log = logging.getLogger("berth")


# Set by `berth run` for its children, so what the configuration warns about is said once.
QUIET_ENV = "BERTH_CONFIG_WARNED"


def _settings(args: argparse.Namespace) -> config.Settings:
    try:
        settings = config.load(args.config)
    except config.ConfigError as exc:
        print(f"berth: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if not os.environ.get(QUIET_ENV):
        for warning in settings.warnings:
            print(f"berth: configuration warning: {warning}", file=sys.stderr)
    return settings


def cmd_blobstore(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.configure("blobstore", settings)
    from services.blobstore.server import serve

    try:
        serve(settings)
    except config.ConfigError as exc:  # unreadable certificates, an address in use
        return _unusable(exc)
    return 0


def _serve_http(app: Any, addr: str, settings: config.Settings, *, tls: ssl.SSLContext | None = None, **options: Any) -> int:
    """Serves one service's ASGI app with uvicorn, the same way for every service; HTTPS with
    ``tls`` (``_tls_context``, built before the app so bad files stop the service early)."""
    import uvicorn

    if tls is not None:
        # uvicorn's own SSL options set neither a minimum version nor several client CAs.
        options["ssl_context_factory"] = lambda _config, _default: tls
    host, _, port = addr.rpartition(":")
    uvicorn.Server(
        uvicorn.Config(
            app,
            host=host.strip("[]"),
            port=int(port),
            log_config=None,
            # Query strings only: credentials travel in headers and bodies.
            access_log=settings.loglevel == "debug",
            proxy_headers=False,  # X-Forwarded-* are honoured by the URL builder, for trusted proxies only
            server_header=False,
            timeout_graceful_shutdown=10,
            **options,
        )
    ).run()
    return 0


def _tls_context(section: config.TLSSettings, key: str) -> ssl.SSLContext | None:
    """The listener's SSL context (None: plain HTTP); exit 2 naming the key when a file is unusable."""
    from services.common import https

    try:
        return https.server_context(section, key)
    except config.ConfigError as exc:
        raise SystemExit(_unusable(exc)) from None


def _unusable(exc: Exception, what: str = "configuration error") -> int:
    """Settings that validate but cannot be used (keys, rules, a newer database): exit 2."""
    print(f"berth: {what}: {exc}", file=sys.stderr)
    return 2


def cmd_gateway(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.configure("gateway", settings)
    from services.gateway.app import create_app
    from services.gateway.http_protocol import protocol_class

    tls = _tls_context(settings.http.tls, "http.tls")
    try:
        app = create_app(settings)
    except config.ConfigError as exc:
        return _unusable(exc)
    return _serve_http(app, settings.http.addr, settings, tls=tls, http=protocol_class())


def cmd_auth(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.configure("auth", settings)
    from services.auth.app import create_app

    try:
        app = create_app(settings)
    except config.ConfigError as exc:
        return _unusable(exc)
    return _serve_http(app, settings.token_service.addr, settings)


def cmd_users(args: argparse.Namespace) -> int:
    """Manages the SQL user table; safe while the token service runs (it reads the table per login)."""
    settings = _settings(args)
    from sqlalchemy.exc import SQLAlchemyError

    from services.auth.database import connect
    from services.auth.user_table import SqlUserStore
    from services.auth.users import InvalidUser, UserError

    try:
        store = SqlUserStore(connect(settings.token_service.database))
    except config.ConfigError as exc:
        print(f"berth: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.users_command == "list":
            for user in store.list_users():
                print(f"{user.name}\t{','.join(user.groups)}")
        elif args.users_command == "add":
            store.add(args.name, _password(args), args.group)
            print(f"added user {args.name}" + (f" (groups: {', '.join(args.group)})" if args.group else ""))
        elif args.users_command == "passwd":
            store.set_password(args.name, _password(args))
            print(f"changed the password of {args.name} (its refresh tokens are revoked)")
        elif args.users_command == "remove":
            store.remove(args.name)
            print(f"removed user {args.name}")
    except InvalidUser as exc:
        print(f"berth: {exc}", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"berth: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:  # the database went away, or refused the write
        print(f"berth: user database failed: {type(exc).__name__}: {getattr(exc, 'orig', None) or exc}", file=sys.stderr)
        return 1
    return 0


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(args.password)


def cmd_search(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.configure("search", settings)
    from services.search.app import create_app
    from services.search.schema import SchemaError

    try:
        app = create_app(settings)
    except SchemaError as exc:  # a database written by a newer Berth
        return _unusable(exc, "search index")
    except config.ConfigError as exc:  # a search_backend module that cannot be loaded
        return _unusable(exc)
    return _serve_http(app, settings.search.addr, settings)


def _local_url(addr: str, https: bool = False) -> str:
    """http(s)://host:port for a listen address, 0.0.0.0 and :: read as the local host."""
    host, _, port = addr.rpartition(":")
    return f"{'https' if https else 'http'}://{'127.0.0.1' if host in ('0.0.0.0', '::', '[::]') else host}:{port}"


def cmd_search_reindex(args: argparse.Namespace) -> int:
    """Exit codes: see REINDEX_HELP."""
    settings = _settings(args)
    logs.configure("search", settings)
    if settings.search_backend != "sqlalchemy":
        what = "no search index" if not settings.search_backend else f"the module {settings.search_backend!r} keeps its own index"
        return _unusable(ValueError(f"search_backend: {what}; reindex rebuilds the sqlalchemy index only"))
    import asyncio

    import sqlalchemy

    from services.search.index import Index
    from services.search.reindex import RegistryUnavailable, reindex
    from services.search.schema import SchemaError

    registry = args.registry or settings.search.registry or (
        _local_url(settings.http.addr, https=bool(settings.http.tls.certificate)) + settings.http.prefix
    )
    try:
        index = Index.open(settings.search.database)
    except sqlalchemy.exc.OperationalError as exc:  # a database server that does not answer: try again later
        print(f"berth: search index unreachable: {getattr(exc, 'orig', None) or exc}", file=sys.stderr)
        return 1
    except (SchemaError, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        print(f"berth: configuration error: search.database unusable: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(reindex(index, registry)).exit_code
    except RegistryUnavailable as exc:
        print(f"berth: {exc}", file=sys.stderr)
        return 1
    except sqlalchemy.exc.SQLAlchemyError as exc:
        print(f"berth: search index write failed: {exc}", file=sys.stderr)
        return 1
    finally:
        index.close()


def cmd_garbage_collect(args: argparse.Namespace) -> int:
    """Exit codes: see GC_HELP."""
    settings = _settings(args)
    logging.basicConfig(level=logging.WARNING, format="berth: %(message)s")
    if settings.storage.driver == "inmemory":
        return _unusable(ValueError("storage.driver: inmemory storage lives in the blobstore's own memory; nothing to collect from here"))
    from services.blobstore.drivers import StorageError, create
    from services.blobstore.gc import GarbageCollector
    from services.common.config.durations import to_seconds

    try:
        delay = settings.storage.maintenance.gc.delay if args.delay is None else float(to_seconds(args.delay))
    except ValueError as exc:
        return _unusable(ValueError(f"--delay: {exc}"), "usage error")
    try:
        driver = create(settings.storage.driver, settings.storage.driver_parameters)
    except StorageError as exc:
        return _unusable(exc)
    status_line = sys.stderr.isatty()

    def progress(message: str) -> None:
        if message.startswith(("would ", "removed ", "deleting ")):
            if status_line:
                print("\r\033[K", end="", file=sys.stderr)
            print(message, flush=True)
        elif status_line:
            print("\r\033[K" + message[:150], end="", file=sys.stderr, flush=True)

    from services.blobstore.gc_cache import CacheForgetter

    forget = CacheForgetter.from_settings(settings.cache_lru)
    collector = GarbageCollector(driver, dry_run=args.dry_run, delete_untagged=args.delete_untagged, delay=delay,
                                 progress=progress, forget=forget)
    try:
        report = collector.run()
    except KeyboardInterrupt:
        print("\nberth: garbage collection interrupted; nothing is half-done, run it again", file=sys.stderr)
        return 130
    except (StorageError, OSError) as exc:
        print(f"\nberth: garbage collection failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if status_line:
            print("\r\033[K", end="", file=sys.stderr)
    if forget is not None:
        forget.close()
    for warning in report.warnings:
        print(f"berth: warning: {warning}", file=sys.stderr)
    print(("dry run, nothing removed: " if args.dry_run else "") + report.summary())
    return 1 if report.errors else 0


def cmd_config_check(args: argparse.Namespace) -> int:
    """Exit codes: see CONFIG_CHECK_HELP. Checks what validation alone cannot (files, address
    lists) the way the services will at startup, so a bad setting shows here first."""
    settings = _settings(args)
    from services.common import forwarded, https, redact, search_security
    from services.search import backends

    try:
        https.server_context(settings.http.tls, "http.tls")
        forwarded.TrustedProxies(settings.http.trusted_proxies, header=settings.http.forwarded_header)
        backends.check(settings.search_backend)
        if settings.search_service:
            search_security.required_token(settings)
    except config.ConfigError as exc:
        return _unusable(exc)
    names = {"berth": "Berth's own", "classic": "the classic registry's", "registry2": "registry:2's"}
    print(f"berth: configuration read in {names[settings.dialect]} form", file=sys.stderr)
    print(json.dumps(redact.redact(settings.model_dump()), indent=2))
    return 0


def _listeners(settings: config.Settings) -> list[tuple[str, str, str]]:
    """(service, config key, address) of every listener `berth run` opens, in start order."""
    out = [("blobstore", "blobstore.addr", settings.blobstore.addr)]
    if settings.blobstore.http_addr:
        out.append(("blobstore", "blobstore.http_addr", settings.blobstore.http_addr))
    if settings.auth.type == "token":  # before the gateway, which may fetch its JWKS
        out.append(("auth", "token_service.addr", settings.token_service.addr))
    if settings.search_service:  # before the gateway, which sends it events
        out.append(("search", "search.addr", settings.search.addr))
    out.append(("gateway", "http.addr", settings.http.addr))
    return out


def _address_in_use(addr: str) -> OSError | None:
    """Whether something else listens on ``addr`` already (a bind fails); None when it is free."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            return exc
    return None


def _wait_for_port(addr: str, timeout: float, child: subprocess.Popen[bytes]) -> bool:
    host, _, port = addr.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            return False
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def cmd_run(args: argparse.Namespace) -> int:
    """Starts the blobstore, the token service (auth.type token), the search service
    (any search_backend), then the gateway; a signal or a dying child stops them all."""
    settings = _settings(args)
    logs.configure("berth", settings)
    listeners = _listeners(settings)
    seen: dict[str, str] = {}
    for _, key, addr in listeners:
        if addr in seen:
            return _unusable(ValueError(f"{key} and {seen[addr]} are both {addr}"))
        seen[addr] = key
        # A service answering there already would be taken for ours (and get our traffic).
        busy = _address_in_use(addr)
        if busy is not None:
            return _unusable(ValueError(f"{key}: {addr} cannot be used ({busy.strerror}); "
                                        "another program listens there, or pick another address"))
    base = [sys.executable, "-m", "services.cli"] + (["--config", args.config] if args.config else [])
    child_env = {**os.environ, QUIET_ENV: "1"}
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        services = [(name, addr) for name, key, addr in listeners if key != "blobstore.http_addr"]
        for name, addr in services:
            child = subprocess.Popen([*base, name], start_new_session=True, env=child_env)
            children.append((name, child))
            if not _wait_for_port(addr, 30, child):
                log.error("%s did not start listening on %s", name, addr)
                return 1
        scheme = "https" if settings.http.tls.certificate else "http"
        log.info("Berth is up: registry at %s://%s/v2/ (storage: %s)", scheme, settings.http.addr, settings.storage.driver)
        if settings.auth.type == "token":
            log.info("token service at http://%s/token", settings.token_service.addr)
        if settings.search_service:
            log.info("search service at http://%s", settings.search.addr)
        while not stopping:
            for name, child in children:
                if child.poll() is not None:
                    log.error("%s exited with status %s; stopping", name, child.returncode)
                    return 1
            time.sleep(0.2)
        return 0
    finally:
        for _, child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for name, child in reversed(children):
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", name)
                child.kill()
        log.info("Berth stopped")


# Help texts of the operator commands. Exit codes follow one rule everywhere, so scripts can
# tell "try again later" (1) from "fix the command or the configuration" (2).
EXIT_CODES = """exit status:
  0  success
  1  runtime failure: {runtime}
  2  usage or configuration error: {usage}"""

SERVICE_EXIT = EXIT_CODES.format(
    runtime="the service failed while running",
    usage="bad arguments, or a setting that cannot be used (the key is named on stderr); nothing was started",
)

CONFIG_CHECK_HELP = (
    """examples:
  berth --config /etc/berth/config.yml config check
  SETTINGS_FLAVOR=prod berth config check | jq .storage
  berth config check >/dev/null && systemctl restart berth

exit status:
  0  the configuration is valid; the effective configuration is on stdout
  2  usage or configuration error: stderr names the offending key (config key 'http.addr': ...)"""
)

USERS_HELP = (
    """examples:
  berth users list
  berth users add alice --group admins --group ci --password-stdin < alice.password
  printf '%s\\n' "$NEW_PASSWORD" | berth users passwd alice --password-stdin
  berth users remove alice

"""
    + EXIT_CODES.format(
        runtime="the account already exists (add), no such account (passwd, remove), or the database failed",
        usage="bad arguments, an invalid account name or password, or an unusable token_service.database",
    )
)

REINDEX_HELP = (
    """examples:
  berth search reindex
  berth --config /etc/berth/config.yml search reindex --registry https://registry.example.com

Progress goes to stderr (repositories done / total, once a second), then a summary and the
repositories that failed.

"""
    + EXIT_CODES.format(
        runtime="some repositories failed (the rest are indexed), or the registry or the database could not be reached",
        usage="bad arguments, an invalid configuration, or an unusable search.database (bad URL, written by a newer Berth)",
    )
)


GC_HELP = (
    """examples:
  berth --config /etc/berth/config.yml garbage-collect --dry-run
  berth --config /etc/berth/config.yml garbage-collect --delete-untagged
  berth --config config.yml garbage-collect --delay 0     (the registry is stopped or read-only)

Marks every blob a manifest of any repository references (configs, layers, index children,
subjects; with --delete-untagged only manifests a tag reaches, through an index, or as a referrer
or subject of one), then removes the rest, links first. Safe while the registry serves pushes:
blobs younger than the delay (storage.maintenance.gc.delay, 1h by default) are never removed and
pushes during the run name what they reference. The delay does not default to 0, even though a
stopped registry would allow it (registry:2 has no delay): the command cannot tell whether the
registry is stopped, and 0 on a live one fails pushes in flight; offline, the 1h default only
leaves the last hour's unreferenced blobs for the next run. With cache_lru configured, what is
removed is dropped from the gateways' Redis cache as it goes. Safe to interrupt and run again. Removals are
listed on stdout (what would be removed, with --dry-run), then a summary; progress on a terminal.

"""
    + EXIT_CODES.format(
        runtime="the storage failed (nothing is left half-done: run it again), or cache_lru could not be told what was removed",
        usage="bad arguments or an invalid configuration (inmemory storage cannot be collected from outside)",
    )
)


def _command(sub: Any, name: str, summary: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A subcommand whose --help shows its description, examples and exit codes as written."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="berth", description="Berth container registry", epilog=SERVICE_EXIT, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=os.environ.get("DOCKER_REGISTRY_CONFIG"),
                        help="YAML config file (default: $DOCKER_REGISTRY_CONFIG, else built-in defaults)")
    sub = parser.add_subparsers(dest="command", required=True)
    _command(sub, "blobstore", "run the gRPC blobstore", "Runs the blobstore (gRPC) until SIGTERM.",
             SERVICE_EXIT).set_defaults(func=cmd_blobstore)
    _command(sub, "gateway", "run the registry HTTP API", "Runs the registry API (HTTPS when http.tls is set) until SIGTERM.",
             SERVICE_EXIT).set_defaults(func=cmd_gateway)
    _command(sub, "auth", "run the token service", "Runs the token service until SIGTERM.", SERVICE_EXIT).set_defaults(func=cmd_auth)
    search = _command(sub, "search", "run the search service; `search reindex` rebuilds its index",
                      "Runs the search service until SIGTERM; `berth search reindex` rebuilds its index.", SERVICE_EXIT)
    search.set_defaults(func=cmd_search)
    search_sub = search.add_subparsers(dest="search_command")
    reindex = _command(
        search_sub, "reindex", "rebuild the index from a registry's catalog",
        "Rebuilds the search index (search.database) from what a registry holds: every repository of\n"
        "/v2/_catalog, its tags and a description; repositories and tags the registry no longer has\n"
        "leave the index, pull counts stay. The search service may be running meanwhile.",
        REINDEX_HELP,
    )
    reindex.add_argument("--registry", default="", help="registry base URL (default: search.registry, else http(s)://<http.addr><http.prefix>)")
    reindex.set_defaults(func=cmd_search_reindex)
    _command(sub, "run", "run every service until interrupted",
             "Runs the blobstore, the token service (auth.type token), the search service (unless\n"
             "search_backend is empty) and the gateway as child processes; Ctrl-C or SIGTERM stops them all.",
             EXIT_CODES.format(runtime="a service failed to start or died", usage="bad arguments or an invalid configuration"),
             ).set_defaults(func=cmd_run)
    users_text = ("Manages the token service's accounts in its SQL user table (token_service.database).\n"
                  "Changes count at the next login: the token service may be running.")
    users = _command(sub, "users", "accounts of the token service (the SQL user table)", users_text, USERS_HELP)
    users_sub = users.add_subparsers(dest="users_command", required=True)
    _command(users_sub, "list", "list accounts and their groups", "Prints one account per line: name<TAB>groups (comma-separated).",
             USERS_HELP).set_defaults(func=cmd_users)
    for name, text in (("add", "create an account"), ("passwd", "set an account's password (revokes its refresh tokens)")):
        cmd = _command(users_sub, name, text, text[0].upper() + text[1:] + ".", USERS_HELP)
        cmd.add_argument("name", help="the account name")
        secret = cmd.add_mutually_exclusive_group(required=True)
        secret.add_argument("--password", help="the password (visible to other local users in ps)")
        secret.add_argument("--password-stdin", action="store_true", help="read the password from stdin (its first line)")
        if name == "add":
            cmd.add_argument("--group", action="append", default=[], help="a group of the account (repeatable)")
        cmd.set_defaults(func=cmd_users)
    remove = _command(users_sub, "remove", "delete an account (and revoke its refresh tokens)",
                      "Deletes an account and revokes its refresh tokens; access tokens already issued live until they expire.",
                      USERS_HELP)
    remove.add_argument("name", help="the account name")
    remove.set_defaults(func=cmd_users)
    gc = _command(sub, "garbage-collect", "remove blobs no manifest references",
                  "Garbage collection, as registry:2's garbage-collect does it, on the configured storage\n"
                  "(filesystem or s3), offline or while the registry runs.", GC_HELP)
    gc.add_argument("--dry-run", action="store_true", help="print what would be removed; remove nothing")
    gc.add_argument("--delete-untagged", action="store_true", help="first delete manifests no tag reaches (and their referrers)")
    gc.add_argument("--delay", default=None,
                    help="keep blobs younger than this (seconds or a Go duration; default storage.maintenance.gc.delay, "
                         "1h). Use 0 on a stopped or read-only registry for registry:2's exact result; the default "
                         "stays 1h because this command cannot tell a stopped registry from a live one")
    gc.set_defaults(func=cmd_garbage_collect)
    cfg = _command(sub, "config", "configuration tools", "Configuration tools.", CONFIG_CHECK_HELP)
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    _command(
        cfg_sub, "check", "validate and print the effective configuration",
        "Loads the configuration as every service does (the file, its flavor, _env: values, REGISTRY_*\n"
        "overrides), validates it, checks the files and lists it names (http.tls, http.trusted_proxies),\n"
        'and prints the effective result as JSON with secrets (keys, tokens, passwords) shown as "***".',
        CONFIG_CHECK_HELP,
    ).set_defaults(func=cmd_config_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
