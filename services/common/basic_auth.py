"""Reading ``Authorization: Basic`` without trusting it, for the token service and the gateway.

Anything odd (another scheme, nothing after it, more than ``MAX_LENGTH`` characters, bad base64,
bytes that are not UTF-8, no ``:``, an empty user name) is a ``MalformedCredentials`` whose message
says why without repeating the header, never an exception that would escape as a 500. The password
is kept out of ``repr`` so it cannot reach a log line by accident.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

# Basic credentials longer than this are refused before decoding.
MAX_LENGTH = 8192


class MalformedCredentials(Exception):
    """An Authorization header that cannot be read (the message says why, without its content)."""


@dataclass(frozen=True)
class BasicCredentials:
    username: str
    password: str = field(repr=False)


def parse(header: str | None) -> BasicCredentials | None:
    """The Basic credentials of the header; None when there is no header (an anonymous request)."""
    if header is None or not header.strip():
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise MalformedCredentials("expected Basic credentials")
    value = value.strip()
    if not value or len(value) > MAX_LENGTH:
        raise MalformedCredentials("malformed Basic credentials")
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise MalformedCredentials("Basic credentials are not base64 of UTF-8 text") from None
    username, sep, password = text.partition(":")
    if not sep or not username:
        raise MalformedCredentials("Basic credentials need user:password")
    return BasicCredentials(username, password)


def parse_or_none(header: str | None) -> BasicCredentials | None:
    """The credentials, or None when absent or malformed: for callers (the gateway) that answer
    both with the same challenge."""
    try:
        return parse(header)
    except MalformedCredentials:
        return None
