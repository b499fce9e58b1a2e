"""The two refusals of a login, each with the header that tells the client what to do next.

Bad or missing credentials are a 401 whose ``WWW-Authenticate`` asks for Basic credentials again;
too many failures are a 429 whose ``Retry-After`` says when to try again.
"""

from __future__ import annotations

from services.common.errors import TOOMANYREQUESTS, UNAUTHORIZED, RegistryError


def unauthorized(detail: str, realm: str) -> RegistryError:
    """Bad or missing credentials; the challenge tells clients to retry with Basic auth."""
    return RegistryError(UNAUTHORIZED, detail, headers={"WWW-Authenticate": f'Basic realm="{realm}"'})


def too_many_requests(retry_after: int) -> RegistryError:
    """Logins refused for a while; ``retry_after`` seconds (at least 1) until they are counted again."""
    return RegistryError(TOOMANYREQUESTS, "too many failed logins; retry later", headers={"Retry-After": str(max(1, retry_after))})
