"""The registry's error codes, registered once, raised by name.

Every failure a client can see is one of these codes, in every service: handlers raise
``RegistryError(CODE, detail)`` and ``services.common.http_errors`` turns it into the spec's
``{"errors": [...]}`` envelope (the gateway, the token service and the search service install the
same handlers). The blobstore raises the same errors; they cross gRPC as a status plus the code name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorCode:
    name: str
    message: str
    status: int


_REGISTRY: dict[str, ErrorCode] = {}


def _register(name: str, message: str, status: int) -> ErrorCode:
    """A new code; each name once, so a code string always means one message and one status."""
    if name in _REGISTRY:
        raise ValueError(f"error code {name} is registered twice")
    code = ErrorCode(name, message, status)
    _REGISTRY[name] = code
    return code


def lookup(name: str) -> ErrorCode:
    """The registered code of that name; UNKNOWN for a name this version does not know."""
    return _REGISTRY.get(name, UNKNOWN)


# OCI Distribution Spec v1.1 codes.
BLOB_UNKNOWN = _register("BLOB_UNKNOWN", "blob unknown to registry", 404)
BLOB_UPLOAD_INVALID = _register("BLOB_UPLOAD_INVALID", "blob upload invalid", 400)
BLOB_UPLOAD_UNKNOWN = _register("BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", 404)
DIGEST_INVALID = _register("DIGEST_INVALID", "provided digest did not match uploaded content", 400)
MANIFEST_BLOB_UNKNOWN = _register("MANIFEST_BLOB_UNKNOWN", "manifest references a manifest or blob unknown to registry", 400)
MANIFEST_INVALID = _register("MANIFEST_INVALID", "manifest invalid", 400)
MANIFEST_UNKNOWN = _register("MANIFEST_UNKNOWN", "manifest unknown to registry", 404)
NAME_INVALID = _register("NAME_INVALID", "invalid repository name", 400)
NAME_UNKNOWN = _register("NAME_UNKNOWN", "repository name not known to registry", 404)
SIZE_INVALID = _register("SIZE_INVALID", "provided length did not match content length", 400)
UNAUTHORIZED = _register("UNAUTHORIZED", "authentication required", 401)
DENIED = _register("DENIED", "requested access to the resource is denied", 403)
UNSUPPORTED = _register("UNSUPPORTED", "the operation is unsupported", 405)
TOOMANYREQUESTS = _register("TOOMANYREQUESTS", "too many requests", 429)

# Codes the reference registry adds, which Docker clients know.
TAG_INVALID = _register("TAG_INVALID", "manifest tag did not match URI", 400)
RANGE_INVALID = _register("RANGE_INVALID", "invalid content range", 416)
PAGINATION_NUMBER_INVALID = _register("PAGINATION_NUMBER_INVALID", "invalid number of results requested", 400)
NOT_FOUND = _register("NOT_FOUND", "no such endpoint", 404)
UNAVAILABLE = _register("UNAVAILABLE", "service unavailable", 503)
UNKNOWN = _register("UNKNOWN", "unknown error", 500)

# Codes of the reference token server (contrib/token-server/errors.go), which the token service
# answers with, plus one for scopes the token spec's grammar refuses.
BAD_TOKEN_OPTION = _register("BAD_TOKEN_OPTION", "bad token option", 400)
MISSING_REQUIRED_FIELD = _register("MISSING_REQUIRED_FIELD", "missing required field", 400)
UNSUPPORTED_VALUE = _register("UNSUPPORTED_VALUE", "unsupported value", 400)
SCOPE_INVALID = _register("SCOPE_INVALID", "invalid scope", 400)


class RegistryError(Exception):
    """A failure with a registered code; ``detail`` is any JSON-able value for the client."""

    def __init__(
        self,
        code: ErrorCode,
        detail: Any = None,
        *,
        message: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message or code.message}" + (f" ({detail})" if detail else ""))
        self.code = code
        self.detail = detail
        self.message = message or code.message
        # A few codes answer with another status in one place (MANIFEST_INVALID as 413 for size).
        self.status = status or code.status
        self.headers = headers or {}

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code.name, "message": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        return body
