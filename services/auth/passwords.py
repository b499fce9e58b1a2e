"""bcrypt hashing, and a password check that costs the same whether or not the account exists.

Passwords are only ever kept as bcrypt hashes. A check against an unknown account still runs one
bcrypt comparison (against a dummy hash of the default cost), so response time does not tell an
attacker which names exist. bcrypt reads at most 72 bytes; longer passwords are refused when set
and never match (the Go registry's bcrypt does the same), rather than silently truncated.
"""

from __future__ import annotations

import functools
import re

import bcrypt

# Cost of the hashes Berth writes (2^12 rounds, ~0.25 s on a small machine).
DEFAULT_COST = 12
MAX_PASSWORD_BYTES = 72

# Names: what fits in Basic auth, a log line and a ${account} namespace without escaping.
_USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
_GROUP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_BCRYPT_PREFIXES = (b"$2a$", b"$2b$", b"$2y$")


class PasswordRejected(ValueError):
    """A password that cannot be stored (empty, too long, NUL bytes)."""


def valid_user_name(name: str) -> bool:
    return _USER_RE.fullmatch(name) is not None


def valid_group_name(name: str) -> bool:
    return _GROUP_RE.fullmatch(name) is not None


def hash_password(password: str, cost: int | None = None) -> str:
    """The bcrypt hash to store; PasswordRejected for a password bcrypt cannot hold whole."""
    raw = password.encode()
    if not raw:
        raise PasswordRejected("the password is empty")
    if len(raw) > MAX_PASSWORD_BYTES:
        raise PasswordRejected(f"the password is longer than {MAX_PASSWORD_BYTES} bytes")
    if b"\0" in raw:
        raise PasswordRejected("the password contains a NUL byte")
    return bcrypt.hashpw(raw, bcrypt.gensalt(cost or DEFAULT_COST)).decode()


def is_bcrypt_hash(value: str) -> bool:
    return value.encode().startswith(_BCRYPT_PREFIXES)


def hash_cost(value: str) -> int | None:
    """The cost factor of a bcrypt hash (``$2b$12$...`` -> 12), None if it is not one."""
    parts = value.split("$")
    return int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else None


@functools.lru_cache(maxsize=4)
def _dummy_hash(cost: int) -> bytes:
    return bcrypt.hashpw(b"berth: no such account", bcrypt.gensalt(cost))


def check(password: str, stored: str | None) -> bool:
    """True only if ``password`` matches the stored hash; one bcrypt comparison either way.

    ``stored`` is None for an unknown account. bcrypt's own comparison is constant-time.
    """
    raw = password.encode()
    usable = stored is not None and is_bcrypt_hash(stored) and 0 < len(raw) <= MAX_PASSWORD_BYTES and b"\0" not in raw
    if not usable:
        bcrypt.checkpw(raw[:MAX_PASSWORD_BYTES].replace(b"\0", b"") or b"x", _dummy_hash(DEFAULT_COST))
        return False
    assert stored is not None
    try:
        return bcrypt.checkpw(raw, stored.encode())
    except ValueError:  # a damaged hash in the store: never a match
        return False


def warm_up() -> None:
    """Computes the dummy hash at startup, so the first unknown-account check does not cost double."""
    _dummy_hash(DEFAULT_COST)
