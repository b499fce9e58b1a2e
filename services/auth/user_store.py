"""The user-store interface and what every store shares, apart from any one store.

``UserStore`` is what the service asks of accounts (a bcrypt hash, groups, changes), and the
errors and checks here are what both implementations (``user_table.SqlUserStore`` and
``htpasswd.HtpasswdStore``) need. It lives in a module of its own so the implementations import
the interface and ``users`` (the composite the service uses) imports the implementations, with no
module importing back up.

Every password check goes through ``passwords.check``, so each login costs one bcrypt comparison
whether the account exists or not.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

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
    """The bcrypt hash of a new password; a password bcrypt cannot hold whole is an InvalidUser."""
    try:
        return passwords.hash_password(password)
    except passwords.PasswordRejected as exc:
        raise InvalidUser(str(exc)) from None
