"""RFC 6749 section 5.2's names for the registry's errors, for answers to the OAuth2 ``POST /token``.

Every failure of the token service is the registry's envelope, ``{"errors": [{"code", "message",
"detail"}]}``, because that is what Docker, containerd and the other registry clients parse from a
token server (the reference ``contrib/token-server`` answers the same way, with the same codes).
Answers to ``POST /token`` additionally carry ``error`` and ``error_description`` at the top level,
so generic OAuth2 clients understand them too; the two shapes do not collide.
"""

from __future__ import annotations

from services.common.errors import ErrorCode, RegistryError

_OAUTH_ERRORS = {
    "BAD_TOKEN_OPTION": "invalid_request",
    "MISSING_REQUIRED_FIELD": "invalid_request",
    "UNSUPPORTED_VALUE": "invalid_request",
    "SCOPE_INVALID": "invalid_scope",
    "UNAUTHORIZED": "invalid_grant",
    "TOOMANYREQUESTS": "invalid_request",
}


class OAuthRefusal(RegistryError):
    """A refusal whose RFC 6749 name its registry code alone does not decide: a grant type the
    service does not know is an UNSUPPORTED_VALUE to registry clients like any bad field, but
    ``unsupported_grant_type`` to OAuth2 clients."""

    def __init__(self, code: ErrorCode, detail: str, *, oauth_error: str) -> None:
        super().__init__(code, detail)
        self.oauth_error = oauth_error


def fields(error: RegistryError) -> dict[str, str]:
    """The top-level ``error`` and ``error_description`` of an OAuth2 answer to ``error``."""
    name = error.oauth_error if isinstance(error, OAuthRefusal) else _OAUTH_ERRORS.get(error.code.name, "invalid_request")
    description = error.detail if isinstance(error.detail, str) and error.detail else error.message
    return {"error": name, "error_description": description}
