"""Secrets hidden from configuration shown to people (``berth config check``).

By key name rather than a list of known paths, so a secret added to the schema later is hidden
without anyone remembering this file: any non-empty string under a key that names a secret, every
webhook header value (they carry ``Authorization``), and the password inside any URL (database
URLs, webhook URLs with credentials). Empty values stay empty: "not set" is worth seeing.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
_SECRET_NAMES = frozenset({"secret", "token", "password", "accesskey", "secretkey"})
_SECRET_SUFFIXES = ("_password", "_secret", "_token")

_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*:)[^@]*@")


def is_secret(key: str) -> bool:
    """Whether a key names a secret: ``http.secret``, ``blobstore.token``, ``smtp_password``..."""
    name = key.lower()
    return name in _SECRET_NAMES or name.endswith(_SECRET_SUFFIXES)


def redact(value: Any, key: str = "") -> Any:
    """A copy of ``value`` (a ``model_dump()``) with secrets replaced by ``MASK``."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k == "headers" and isinstance(v, dict):
                out[k] = {name: [MASK] * len(vs) if isinstance(vs, list) else MASK for name, vs in v.items()}
            else:
                out[k] = redact(v, str(k))
        return out
    if isinstance(value, list):
        return [redact(item, key) for item in value]
    if isinstance(value, str) and value:
        return MASK if is_secret(key) else url_without_password(value)
    return value


def url_without_password(text: str) -> str:
    """``scheme://user:***@host/...`` for a URL with a password; anything else unchanged.

    By SQLAlchemy's reading (everything from the ``:`` after the user to the ``@``), not urlsplit's,
    which gives up on a password holding ``/``, ``?`` or ``#`` and would print it.
    """
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}@", text)
