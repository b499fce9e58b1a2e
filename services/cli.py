"""``berth``: one command line for every service.

    berth blobstore         the gRPC blobstore
    berth gateway           the registry HTTP API
    berth auth              the token service (Docker token auth, JWKS)
    berth search            the search service (POST /events, GET /v1/search)
    berth search reindex    rebuild the search index from a registry's catalog
    berth run               every service as child processes, stopped together on Ctrl-C
    berth config check      validate the configuration and print the effective result
    berth users add|list|remove|passwd   accounts of the token service (its SQL user table)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from services.common import config, logs

log = logging.getLogger("berth")


def _settings(args: argparse.Namespace) -> config.Settings:
    try:
        return config.load(args.config)
    except config.ConfigError as exc:
        print(f"berth: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_blobstore(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.setup("blobstore", settings.loglevel)
    from services.blobstore.server import serve

    serve(settings)
    return 0


def _serve_http(app: Any, addr: str, settings: config.Settings, **options: Any) -> int:
    """Serves one service's ASGI app with uvicorn, the same way for every service."""
    import uvicorn

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


def _unusable(exc: Exception, what: str = "configuration error") -> int:
    """Settings that validate but cannot be used (keys, rules, a newer database): exit 2."""
    print(f"berth: {what}: {exc}", file=sys.stderr)
    return 2


def cmd_gateway(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.setup("gateway", settings.loglevel)
    from services.gateway.app import create_app
    from services.gateway.http_protocol import protocol_class

    try:
        app = create_app(settings)
    except config.ConfigError as exc:
        return _unusable(exc)
    return _serve_http(app, settings.http.addr, settings, http=protocol_class())


def cmd_auth(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.setup("auth", settings.loglevel)
    from services.auth.app import create_app

    try:
        app = create_app(settings)
    except config.ConfigError as exc:
        return _unusable(exc)
    return _serve_http(app, settings.token_service.addr, settings)


def cmd_users(args: argparse.Namespace) -> int:
    """Manages the SQL user table; safe while the token service runs (it reads the table per login)."""
    settings = _settings(args)
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
    return 0


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(args.password)


def cmd_search(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.setup("search", settings.loglevel)
    from services.search.app import create_app
    from services.search.schema import SchemaError

    try:
        app = create_app(settings)
    except SchemaError as exc:  # a database written by a newer Berth
        return _unusable(exc, "search index")
    return _serve_http(app, settings.search.addr, settings)


def _local_url(addr: str) -> str:
    """http://host:port for a listen address, 0.0.0.0 and :: read as the local host."""
    host, _, port = addr.rpartition(":")
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '[::]') else host}:{port}"


def cmd_search_reindex(args: argparse.Namespace) -> int:
    """Exit 0: all indexed; 1: some repositories failed; 2: nothing could be done."""
    settings = _settings(args)
    logs.setup("search", settings.loglevel)
    import asyncio

    import sqlalchemy

    from services.search.index import Index
    from services.search.reindex import RegistryUnavailable, reindex
    from services.search.schema import SchemaError

    registry = args.registry or settings.search.registry or _local_url(settings.http.addr) + settings.http.prefix
    try:
        index = Index.open(settings.search.database)
    except (SchemaError, sqlalchemy.exc.SQLAlchemyError) as exc:
        print(f"berth: search index unusable: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(reindex(index, registry)).exit_code
    except RegistryUnavailable as exc:
        print(f"berth: {exc}", file=sys.stderr)
        return 2
    except sqlalchemy.exc.SQLAlchemyError as exc:
        print(f"berth: search index write failed: {exc}", file=sys.stderr)
        return 2
    finally:
        index.close()


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    shown = settings.model_dump()
    if shown["http"]["secret"]:
        shown["http"]["secret"] = "********"
    from sqlalchemy.engine import make_url

    try:  # a database URL may carry a password
        shown["token_service"]["database"] = make_url(settings.token_service.database).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy understands: shown as it is (auth would refuse it)
        pass
    try:
        shown["search"]["database"] = make_url(settings.search.database).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - as above (the search service would refuse it)
        pass
    # Webhook headers carry credentials (Authorization).
    for endpoint in shown["notifications"]["endpoints"]:
        endpoint["headers"] = {key: ["********"] * len(values) for key, values in endpoint["headers"].items()}
    print(json.dumps(shown, indent=2))
    return 0


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
    (search_backend sqlalchemy), then the gateway; a signal or a dying child stops them all."""
    settings = _settings(args)
    logs.setup("berth", settings.loglevel)
    base = [sys.executable, "-m", "services.cli"] + (["--config", args.config] if args.config else [])
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        services = [("blobstore", settings.blobstore.addr)]
        if settings.auth.type == "token":  # before the gateway, which may fetch its JWKS
            services.append(("auth", settings.token_service.addr))
        if settings.search_backend == "sqlalchemy":  # before the gateway, which sends it events
            services.append(("search", settings.search.addr))
        services.append(("gateway", settings.http.addr))
        for name, addr in services:
            child = subprocess.Popen([*base, name], start_new_session=True)
            children.append((name, child))
            if not _wait_for_port(addr, 30, child):
                log.error("%s did not start listening on %s", name, addr)
                return 1
        log.info("Berth is up: registry at http://%s/v2/ (storage: %s)", settings.http.addr, settings.storage.driver)
        if settings.auth.type == "token":
            log.info("token service at http://%s/token", settings.token_service.addr)
        if settings.search_backend == "sqlalchemy":
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="berth", description="Berth container registry")
    parser.add_argument("--config", default=os.environ.get("DOCKER_REGISTRY_CONFIG"), help="YAML config file (default: $DOCKER_REGISTRY_CONFIG, else built-in defaults)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("blobstore", help="run the gRPC blobstore").set_defaults(func=cmd_blobstore)
    sub.add_parser("gateway", help="run the registry HTTP API").set_defaults(func=cmd_gateway)
    sub.add_parser("auth", help="run the token service").set_defaults(func=cmd_auth)
    search = sub.add_parser("search", help="run the search service; `search reindex` rebuilds its index")
    search.set_defaults(func=cmd_search)
    search_sub = search.add_subparsers(dest="search_command")
    reindex = search_sub.add_parser(
        "reindex", help="rebuild the index from a registry's catalog (exit 1: some repositories failed, 2: nothing could be read)"
    )
    reindex.add_argument("--registry", default="", help="registry base URL (default: search.registry, else http://<http.addr><http.prefix>)")
    reindex.set_defaults(func=cmd_search_reindex)
    sub.add_parser("run", help="run every service until interrupted").set_defaults(func=cmd_run)
    users = sub.add_parser("users", help="accounts of the token service (the SQL user table)")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    users_sub.add_parser("list", help="list accounts and their groups").set_defaults(func=cmd_users)
    for name, text in (("add", "create an account"), ("passwd", "set an account's password")):
        cmd = users_sub.add_parser(name, help=text)
        cmd.add_argument("name")
        secret = cmd.add_mutually_exclusive_group(required=True)
        secret.add_argument("--password", help="the password (visible to other local users in ps)")
        secret.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
        if name == "add":
            cmd.add_argument("--group", action="append", default=[], help="a group of the account (repeatable)")
        cmd.set_defaults(func=cmd_users)
    remove = users_sub.add_parser("remove", help="delete an account (and revoke its refresh tokens)")
    remove.add_argument("name")
    remove.set_defaults(func=cmd_users)
    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    cfg_sub.add_parser("check", help="validate and print the effective configuration").set_defaults(func=cmd_config_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
