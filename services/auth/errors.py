"""The token service's failures and the one body shape they answer with.

Every error is the registry's envelope, ``{"errors": [{"code", "message", "detail"}]}``, because
that is what Docker, containerd and the other registry clients parse from a token server (the
reference ``contrib/token-server`` answers the same way, with the same extra codes). Answers to the
OAuth2 ``POST /token`` additionally carry RFC 6749 section 5.2's ``error`` and
``error_description`` at the top level, so generic OAuth2 clients understand them too; the two
shapes do not collide.
"""
from __future__ import annotations

from typing import Any

from services.common.errors import TOOMANYREQUESTS, UNAUTHORIZED, ErrorCode

# Codes of the reference token server (contrib/token-server/errors.go), plus one for scopes.
BAD_TOKEN_OPTION = ErrorCode("BAD_TOKEN_OPTION", "bad token option", 400)
MISSING_REQUIRED_FIELD = ErrorCode("MISSING_REQUIRED_FIELD", "missing required field", 400)
UNSUPPORTED_VALUE = ErrorCode("UNSUPPORTED_VALUE", "unsupported value", 400)
SCOPE_INVALID = ErrorCode("SCOPE_INVALID", "invalid scope", 400)
NOT_FOUND = ErrorCode("NOT_FOUND", "no such endpoint", 404)
METHOD_NOT_ALLOWED = ErrorCode("UNSUPPORTED", "the operation is unsupported", 405)
UNKNOWN = ErrorCode("UNKNOWN", "unknown error", 500)

__all__ = [
    "AuthError", "BAD_TOKEN_OPTION", "MISSING_REQUIRED_FIELD", "UNSUPPORTED_VALUE", "SCOPE_INVALID",
    "NOT_FOUND", "METHOD_NOT_ALLOWED", "UNKNOWN", "UNAUTHORIZED", "TOOMANYREQUESTS",
]

# RFC 6749 section 5.2 names, for the OAuth2 endpoint.
_OAUTH_ERRORS = {
    "BAD_TOKEN_OPTION": "invalid_request",
    "MISSING_REQUIRED_FIELD": "invalid_request",
    "UNSUPPORTED_VALUE": "invalid_request",
    "SCOPE_INVALID": "invalid_scope",
    "UNAUTHORIZED": "invalid_grant",
    "TOOMANYREQUESTS": "invalid_request",
}


class AuthError(Exception):
    """A refusal with a code; ``detail`` is a short, secret-free explanation for the client."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        oauth_error: str | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {detail or code.message}")
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        # Overrides the RFC 6749 name where the code alone is ambiguous (unsupported_grant_type).
        self.oauth_error = oauth_error

    @property
    def status(self) -> int:
        return self.code.status

    def body(self, *, oauth: bool = False) -> dict[str, Any]:
        entry: dict[str, Any] = {"code": self.code.name, "message": self.code.message}
        if self.detail:
            entry["detail"] = self.detail
        body: dict[str, Any] = {"errors": [entry]}
        if oauth:
            body["error"] = self.oauth_error or _OAUTH_ERRORS.get(self.code.name, "invalid_request")
            body["error_description"] = self.detail or self.code.message
        return body


def unauthorized(detail: str, realm: str) -> AuthError:
    """Bad or missing credentials; the challenge tells clients to retry with Basic auth."""
    return AuthError(UNAUTHORIZED, detail, headers={"WWW-Authenticate": f'Basic realm="{realm}"'})


def too_many_requests(retry_after: int) -> AuthError:
    return AuthError(TOOMANYREQUESTS, "too many failed logins; retry later",
                     headers={"Retry-After": str(max(1, retry_after))})
