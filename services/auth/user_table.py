"""The SQL user store: accounts and groups in ``token_service.database``.

This is the store ``berth users ...`` manages while the service runs; every lookup reads the
database, so a new account or password counts from the next login. Removing an account or
changing its password revokes its refresh tokens: whoever held them (a leaked password's
beneficiary, or a later account reusing the name) must log in again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from services.auth.database import refresh_tokens, user_groups, users
from services.auth.user_store import (
    MAX_NAME_LENGTH,
    User,
    UserExists,
    UserNotFound,
    UserStore,
    check_new_user,
    hash_new_password,
)


class SqlUserStore(UserStore):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def password_hash(self, name: str) -> str | None:
        if len(name) > MAX_NAME_LENGTH:
            return None
        with self.engine.connect() as conn:
            return conn.execute(select(users.c.password_hash).where(users.c.name == name)).scalar_one_or_none()

    def groups(self, name: str) -> tuple[str, ...]:
        query = select(user_groups.c.group_name).where(user_groups.c.user_name == name).order_by(user_groups.c.group_name)
        with self.engine.connect() as conn:
            return tuple(conn.execute(query).scalars())

    def list_users(self) -> list[User]:
        with self.engine.connect() as conn:
            names = list(conn.execute(select(users.c.name).order_by(users.c.name)).scalars())
            groups: dict[str, list[str]] = {}
            query = select(user_groups.c.user_name, user_groups.c.group_name).order_by(user_groups.c.group_name)
            for user, group in conn.execute(query):
                groups.setdefault(user, []).append(group)
        return [User(name, tuple(groups.get(name, ())), "sql") for name in names]

    def add(self, name: str, password: str, groups: Iterable[str] = ()) -> None:
        hashed, group_list = check_new_user(name, password, groups)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(users).values(name=name, password_hash=hashed, created_at=int(time.time())))
                if group_list:
                    conn.execute(insert(user_groups), [{"user_name": name, "group_name": g} for g in group_list])
        except IntegrityError:
            raise UserExists(f"user {name!r} already exists") from None

    def remove(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(user_groups).where(user_groups.c.user_name == name))
            if conn.execute(delete(users).where(users.c.name == name)).rowcount == 0:
                raise UserNotFound(f"no user {name[:130]!r}")
            _revoke_refresh_tokens(conn, name)

    def set_password(self, name: str, password: str) -> None:
        hashed = hash_new_password(password)
        with self.engine.begin() as conn:
            if conn.execute(update(users).where(users.c.name == name).values(password_hash=hashed)).rowcount == 0:
                raise UserNotFound(f"no user {name[:130]!r}")
            _revoke_refresh_tokens(conn, name)


def _revoke_refresh_tokens(conn: Connection, account: str) -> None:
    conn.execute(update(refresh_tokens).where(refresh_tokens.c.account == account).values(revoked=True))
