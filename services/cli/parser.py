"""The ``berth`` command line: every command, its help text and the function that runs it, in the
order ``berth --help`` lists them. The commands themselves live in one module per command group."""

from __future__ import annotations

import argparse
import os
from typing import Any

from services.cli.config_check import CONFIG_CHECK_HELP, cmd_config_check
from services.cli.exit_status import EXIT_CODES, SERVICE_EXIT
from services.cli.garbage_collect import GC_HELP, cmd_garbage_collect
from services.cli.run import cmd_run
from services.cli.search_reindex import REINDEX_HELP, cmd_search_reindex
from services.cli.serve import cmd_auth, cmd_blobstore, cmd_gateway, cmd_search
from services.cli.users import USERS_HELP, cmd_users


def _command(sub: Any, name: str, summary: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A subcommand whose --help shows its description, examples and exit codes as written."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The whole ``berth`` parser; each leaf command sets ``func``, the function ``main`` calls."""
    parser = argparse.ArgumentParser(
        prog="berth", description="Berth container registry", epilog=SERVICE_EXIT, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        default=os.environ.get("DOCKER_REGISTRY_CONFIG"),
        help="YAML config file (default: $DOCKER_REGISTRY_CONFIG, else built-in defaults)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _command(sub, "blobstore", "run the gRPC blobstore", "Runs the blobstore (gRPC) until SIGTERM.", SERVICE_EXIT).set_defaults(
        func=cmd_blobstore
    )
    _command(
        sub, "gateway", "run the registry HTTP API", "Runs the registry API (HTTPS when http.tls is set) until SIGTERM.", SERVICE_EXIT
    ).set_defaults(func=cmd_gateway)
    _command(sub, "auth", "run the token service", "Runs the token service until SIGTERM.", SERVICE_EXIT).set_defaults(func=cmd_auth)
    search = _command(
        sub,
        "search",
        "run the search service; `search reindex` rebuilds its index",
        "Runs the search service until SIGTERM; `berth search reindex` rebuilds its index.",
        SERVICE_EXIT,
    )
    search.set_defaults(func=cmd_search)
    search_sub = search.add_subparsers(dest="search_command")
    reindex = _command(
        search_sub,
        "reindex",
        "rebuild the index from a registry's catalog",
        "Rebuilds the search index (search.database) from what a registry holds: every repository of\n"
        "/v2/_catalog, its tags and a description; repositories and tags the registry no longer has\n"
        "leave the index, pull counts stay. The search service may be running meanwhile.",
        REINDEX_HELP,
    )
    reindex.add_argument(
        "--registry", default="", help="registry base URL (default: search.registry, else http(s)://<http.addr><http.prefix>)"
    )
    reindex.set_defaults(func=cmd_search_reindex)
    _command(
        sub,
        "run",
        "run every service until interrupted",
        "Runs the blobstore, the token service (auth.type token), the search service (unless\n"
        "search_backend is empty) and the gateway as child processes; Ctrl-C or SIGTERM stops them all.",
        EXIT_CODES.format(runtime="a service failed to start or died", usage="bad arguments or an invalid configuration"),
    ).set_defaults(func=cmd_run)
    users_text = (
        "Manages the token service's accounts in its SQL user table (token_service.database).\n"
        "Changes count at the next login: the token service may be running."
    )
    users = _command(sub, "users", "accounts of the token service (the SQL user table)", users_text, USERS_HELP)
    users_sub = users.add_subparsers(dest="users_command", required=True)
    _command(
        users_sub, "list", "list accounts and their groups", "Prints one account per line: name<TAB>groups (comma-separated).", USERS_HELP
    ).set_defaults(func=cmd_users)
    for name, text in (("add", "create an account"), ("passwd", "set an account's password (revokes its refresh tokens)")):
        cmd = _command(users_sub, name, text, text[0].upper() + text[1:] + ".", USERS_HELP)
        cmd.add_argument("name", help="the account name")
        secret = cmd.add_mutually_exclusive_group(required=True)
        secret.add_argument("--password", help="the password (visible to other local users in ps)")
        secret.add_argument("--password-stdin", action="store_true", help="read the password from stdin (its first line)")
        if name == "add":
            cmd.add_argument("--group", action="append", default=[], help="a group of the account (repeatable)")
        cmd.set_defaults(func=cmd_users)
    remove = _command(
        users_sub,
        "remove",
        "delete an account (and revoke its refresh tokens)",
        "Deletes an account and revokes its refresh tokens; access tokens already issued live until they expire.",
        USERS_HELP,
    )
    remove.add_argument("name", help="the account name")
    remove.set_defaults(func=cmd_users)
    gc = _command(
        sub,
        "garbage-collect",
        "remove blobs no manifest references",
        "Garbage collection, as registry:2's garbage-collect does it, on the configured storage\n"
        "(filesystem or s3), offline or while the registry runs.",
        GC_HELP,
    )
    gc.add_argument("--dry-run", action="store_true", help="print what would be removed; remove nothing")
    gc.add_argument("--delete-untagged", action="store_true", help="first delete manifests no tag reaches (and their referrers)")
    gc.add_argument(
        "--delay",
        default=None,
        help="keep blobs younger than this (seconds or a Go duration; default storage.maintenance.gc.delay, "
        "1h). Use 0 on a stopped or read-only registry for registry:2's exact result; the default "
        "stays 1h because this command cannot tell a stopped registry from a live one",
    )
    gc.set_defaults(func=cmd_garbage_collect)
    cfg = _command(sub, "config", "configuration tools", "Configuration tools.", CONFIG_CHECK_HELP)
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    _command(
        cfg_sub,
        "check",
        "validate and print the effective configuration",
        "Loads the configuration as every service does (the file, its flavor, _env: values, REGISTRY_*\n"
        "overrides), validates it, checks the files and lists it names (http.tls, http.trusted_proxies),\n"
        'and prints the effective result as JSON with secrets (keys, tokens, passwords) shown as "***".',
        CONFIG_CHECK_HELP,
    ).set_defaults(func=cmd_config_check)
    return parser
