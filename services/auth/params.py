"""Request parameters: the query of ``GET /token`` and the form of the OAuth2 endpoints.

Forms are parsed here, from a size-capped body, rather than by a multipart library: the token
endpoints only ever take ``application/x-www-form-urlencoded``. Each helper answers a bad value with
a 400 RegistryError naming the field, never with an exception that would become a 500.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request

from services.common.errors import (
    BAD_TOKEN_OPTION,
    MISSING_REQUIRED_FIELD,
    UNSUPPORTED_VALUE,
    RegistryError,
)

MAX_BODY = 64 * 1024
MAX_FIELDS = 200
# RFC 6749 appendix A.1: client_id is printable ASCII; capped, as it lands in logs and rows.
_CLIENT_ID_RE = re.compile(r"[\x20-\x7e]{0,128}")
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}

Form = dict[str, list[str]]


async def read_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise RegistryError(BAD_TOKEN_OPTION, f"request body larger than {MAX_BODY} bytes")
    return bytes(body)


async def read_form(request: Request) -> Form:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise RegistryError(UNSUPPORTED_VALUE, "expected Content-Type: application/x-www-form-urlencoded")
    try:
        text = (await read_body(request)).decode("utf-8")
        return parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise RegistryError(BAD_TOKEN_OPTION, "the form is not valid UTF-8 url-encoded data") from None


async def read_json(request: Request) -> Any:
    try:
        return json.loads(await read_body(request))
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise RegistryError(UNSUPPORTED_VALUE, "the body is not JSON") from None


def first(form: Form, name: str) -> str:
    """The first value of a field, "" when absent."""
    values = form.get(name)
    return values[0] if values else ""


def required(form: Form, name: str) -> str:
    value = first(form, name)
    if not value:
        raise RegistryError(MISSING_REQUIRED_FIELD, f"missing {name} value")
    return value


def boolean(value: str | None, name: str) -> bool:
    """Go's strconv.ParseBool, as the reference token server reads ``offline_token``."""
    if value is None or value == "" or value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise RegistryError(BAD_TOKEN_OPTION, f"{name} must be true or false")


def client_id(value: str) -> str:
    if not _CLIENT_ID_RE.fullmatch(value):
        raise RegistryError(BAD_TOKEN_OPTION, "client_id must be printable ASCII, 128 characters at most")
    return value
