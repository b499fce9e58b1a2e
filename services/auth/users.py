"""Who may log in: one small user-store interface, and the composite the service uses.

Two stores implement it: ``user_table.SqlUserStore`` (the writable one, managed with
``berth users ...``) and ``htpasswd.HtpasswdStore`` (an Apache htpasswd file with bcrypt hashes,
for setups that already have one). The service asks SQL first, then htpasswd; a name in both is
the SQL account. Every password check goes through ``passwords.check``, so each login costs one
bcrypt comparison whether the account exists or not.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine

from services.auth import passwords

# Longer names are never looked up (they cannot have been created).
MAX_NAME_LENGTH = 256


class UserError(Exception):
    """A user-store operation that cannot be done; the message says why (no secrets in it)."""


class UserExists(UserError):
    pass


class UserNotFound(UserError):
    pass


class InvalidUser(UserError):
    """A name, group or password the store will not accept."""


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]
    source: str  # "sql" or "htpasswd"


class UserStore(ABC):
    """Accounts with bcrypt passwords and (optionally) groups."""

    @abstractmethod
    def password_hash(self, name: str) -> str | None:
        """The stored bcrypt hash, or None if there is no such account."""

    @abstractmethod
    def groups(self, name: str) -> tuple[str, ...]:
        """The account's groups (empty for an unknown account)."""

    @abstractmethod
    def list_users(self) -> list[User]:
        """Every account, sorted by name."""

    @abstractmethod
    def add(self, name: str, password: str, groups: Iterable[str] = ()) -> None:
        """Creates an account; UserExists, InvalidUser."""

    @abstractmethod
    def remove(self, name: str) -> None:
        """Deletes an account; UserNotFound."""

    @abstractmethod
    def set_password(self, name: str, password: str) -> None:
        """Replaces an account's password; UserNotFound, InvalidUser."""

    def verify(self, name: str, password: str) -> bool:
        """True if the account exists and the password is its own; constant cost either way."""
        stored = self.password_hash(name) if len(name) <= MAX_NAME_LENGTH else None
        return passwords.check(password, stored)

    def exists(self, name: str) -> bool:
        return len(name) <= MAX_NAME_LENGTH and self.password_hash(name) is not None


def check_new_user(name: str, password: str, groups: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """Validates a new account and hashes its password; InvalidUser says what is wrong."""
    if not passwords.valid_user_name(name):
        raise InvalidUser(f"invalid user name {name[:130]!r}: letters, digits, '.', '_', '@', '-' (128 at most)")
    group_list = tuple(dict.fromkeys(groups))
    for group in group_list:
        if not passwords.valid_group_name(group):
            raise InvalidUser(f"invalid group name {group[:70]!r}: letters, digits, '.', '_', '-' (64 at most)")
    return hash_new_password(password), group_list


def hash_new_password(password: str) -> str:
    try:
        return passwords.hash_password(password)
    except passwords.PasswordRejected as exc:
        raise InvalidUser(str(exc)) from None


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
    from services.auth.htpasswd import HtpasswdStore
    from services.auth.user_table import SqlUserStore

    return CompositeStore(SqlUserStore(engine), HtpasswdStore(htpasswd_path) if htpasswd_path else None)
