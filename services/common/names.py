"""Repository name and tag grammar from the OCI Distribution Spec."""

from __future__ import annotations

import re

from services.common.errors import NAME_INVALID, TAG_INVALID, RegistryError

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")

# Clients limit host + "/" + name to 255 characters; the name alone may not pass 255.
MAX_NAME_LENGTH = 255


def check_name(name: str) -> str:
    if not name or len(name) > MAX_NAME_LENGTH or not _NAME_RE.fullmatch(name):
        raise RegistryError(NAME_INVALID, {"name": name[:300]})
    return name


def check_tag(tag: str) -> str:
    if not _TAG_RE.fullmatch(tag):
        raise RegistryError(TAG_INVALID, {"tag": tag[:300]})
    return tag


def is_valid_name(name: str) -> bool:
    return bool(name) and len(name) <= MAX_NAME_LENGTH and _NAME_RE.fullmatch(name) is not None


def is_valid_tag(tag: str) -> bool:
    return _TAG_RE.fullmatch(tag) is not None
