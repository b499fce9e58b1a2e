"""``berth users add|list|remove|passwd``: the token service's accounts in its SQL user table."""

from __future__ import annotations

import argparse
import sys

from services.cli import configuration
from services.cli.exit_status import EXIT_CODES
from services.common import config

USERS_HELP = """examples:
  berth users list
  berth users add alice --group admins --group ci --password-stdin < alice.password
  printf '%s\\n' "$NEW_PASSWORD" | berth users passwd alice --password-stdin
  berth users remove alice

""" + EXIT_CODES.format(
    runtime="the account already exists (add), no such account (passwd, remove), or the database failed",
    usage="bad arguments, an invalid account name or password, or an unusable token_service.database",
)


def cmd_users(args: argparse.Namespace) -> int:
    """Manages the SQL user table; safe while the token service runs (it reads the table per login)."""
    settings = configuration.load(args)
    from sqlalchemy.exc import SQLAlchemyError

    from services.auth.database import connect
    from services.auth.user_store import InvalidUser, UserError
    from services.auth.user_table import SqlUserStore

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
