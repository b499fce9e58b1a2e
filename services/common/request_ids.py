"""The request id: made (or taken from ``X-Request-Id``) at the gateway, then carried in gRPC
metadata, calls to other services and events, so one id finds a request in every service's logs."""

from __future__ import annotations

import contextvars
import os
import re

HEADER = "X-Request-Id"
# gRPC metadata keys are lower case.
METADATA_KEY = "x-request-id"

_current: contextvars.ContextVar[str] = contextvars.ContextVar("berth_request_id", default="")
# What a client may hand us: printable, short, no separators that could forge log fields.
_ACCEPTABLE = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def current() -> str:
    return _current.get()


def adopt(incoming: str | None) -> str:
    """Makes ``incoming`` (when acceptable) or a fresh id the current one, and returns it."""
    # 128 random bits as 32 hex digits, like uuid4().hex at a quarter of the cost (made per request).
    value = incoming if incoming and _ACCEPTABLE.fullmatch(incoming) else os.urandom(16).hex()
    _current.set(value)
    return value


def set_current(value: str) -> contextvars.Token[str]:
    return _current.set(value)


def reset(token: contextvars.Token[str]) -> None:
    _current.reset(token)
