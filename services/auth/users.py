"""Who may log in: the composite of the two user stores that the service uses.

Two stores implement ``user_store.UserStore``: ``user_table.SqlUserStore`` (the writable one,
managed with ``berth users ...``) and ``htpasswd.HtpasswdStore`` (an Apache htpasswd file with
bcrypt hashes, for setups that already have one). The service asks SQL first, then htpasswd; a
name in both is the SQL account.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine

from services.auth.htpasswd import HtpasswdStore
from services.auth.user_store import User, UserStore
from services.auth.user_table import SqlUserStore


class CompositeStore(UserStore):
    """SQL first, then an optional htpasswd file; changes go to SQL."""

    def __init__(self, primary: UserStore, fallback: UserStore | None = None) -> None:
        self.primary = primary
        self.fallback = fallback

    def _owner(self, name: str) -> tuple[UserStore | None, str | None]:
        stored = self.primary.password_hash(name)
        if stored is not None:
            return self.primary, stored
        if self.fallback is not None:
            stored = self.fallback.password_hash(name)
            if stored is not None:
                return self.fallback, stored
        return None, None

    def password_hash(self, name: str) -> str | None:
        return self._owner(name)[1]

    def groups(self, name: str) -> tuple[str, ...]:
        owner, _ = self._owner(name)
        return owner.groups(name) if owner is not None else ()

    def list_users(self) -> list[User]:
        users = {u.name: u for u in (self.fallback.list_users() if self.fallback else [])}
        users.update({u.name: u for u in self.primary.list_users()})
        return [users[name] for name in sorted(users)]

    def add(self, name: str, password: str, groups: Iterable[str] = ()) -> None:
        self.primary.add(name, password, groups)

    def remove(self, name: str) -> None:
        self.primary.remove(name)

    def set_password(self, name: str, password: str) -> None:
        self.primary.set_password(name, password)


def open_store(engine: Engine, htpasswd_path: str = "") -> CompositeStore:
    """The service's store: the SQL table, and the htpasswd file when one is configured."""
    return CompositeStore(SqlUserStore(engine), HtpasswdStore(htpasswd_path) if htpasswd_path else None)
