"""One access check per request, in the style of the reference registry's access controllers.

``requirements.needed`` says what the matched route needs (``repository:<name>:pull`` ...); the
configured ``AccessController`` answers with an ``Identity`` (the grant, kept on
``request.state.identity``) or raises a ``Challenge`` (401 with ``WWW-Authenticate``). The check is
one router-level FastAPI dependency (``dependency``), so route modules know nothing of auth.

    none      everyone may do everything (the identity is UNRESTRICTED)
    htpasswd  Basic auth against a bcrypt htpasswd file; valid credentials grant everything
    token     Docker token auth: Bearer JWTs whose ``access`` claim must hold what is needed;
              on /v1/search Basic credentials too, exchanged for a token at the token service
              (the docker daemon sends its stored credentials there, never a token)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from starlette.requests import Request

from services.common.config import AuthSettings, ConfigError
from services.gateway.access import requirements
from services.gateway.access.model import ANONYMOUS, UNRESTRICTED, Access, Challenge, Grant, Identity, Reach

__all__ = [
    "ANONYMOUS",
    "UNRESTRICTED",
    "Access",
    "AccessController",
    "Challenge",
    "Grant",
    "Identity",
    "Reach",
    "create",
    "dependency",
    "identity_of",
]


class AccessController(Protocol):
    async def authorized(self, request: Request, needed: Sequence[Access], *, basic: bool = False) -> Identity:
        """The identity if the request may have ``needed`` (empty: any valid credentials);
        raises ``Challenge`` otherwise. ``basic``: Basic credentials are accepted whatever the
        scheme (the routes whose rule is IF_SENT: /v1/search)."""

    def reach(self, identity: Identity) -> Reach:
        """Whether the identity may pull every repository, none, or some (``pullable`` says which)."""

    async def pullable(self, identity: Identity, names: Sequence[str]) -> set[str]:
        """Those of ``names`` the identity may pull (search results show only these)."""

    async def aclose(self) -> None:
        """Releases what the controller holds (HTTP clients)."""


class OpenAccess:
    """``auth.type: none``."""

    async def authorized(self, request: Request, needed: Sequence[Access], *, basic: bool = False) -> Identity:
        return UNRESTRICTED

    def reach(self, identity: Identity) -> Reach:
        return "all"

    async def pullable(self, identity: Identity, names: Sequence[str]) -> set[str]:
        return set(names)

    async def aclose(self) -> None:
        return None


def create(settings: AuthSettings) -> AccessController:
    """The controller ``auth.type`` names; ConfigError for a configuration it cannot work with."""
    if settings.type == "htpasswd":
        from services.gateway.access.htpasswd import HtpasswdAccessController

        return HtpasswdAccessController(settings.htpasswd)
    if settings.type == "token":
        from services.gateway.access.token import TokenAccessController

        try:
            return TokenAccessController(settings.token)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return OpenAccess()


def dependency(controller: AccessController, prefix: str) -> Callable[[Request], Awaitable[None]]:
    """The router-level dependency: the matched route's needs, checked once per request."""
    if isinstance(controller, OpenAccess):

        async def open_access(request: Request) -> None:
            request.state.identity = UNRESTRICTED

        return open_access

    async def check_access(request: Request) -> None:
        needed = requirements.needed(request, prefix)
        if needed is None or (needed == requirements.IF_SENT and "authorization" not in request.headers):
            request.state.identity = ANONYMOUS
            return
        if needed == requirements.IF_SENT:
            request.state.identity = await controller.authorized(request, (), basic=True)
            return
        request.state.identity = await controller.authorized(request, needed)

    return check_access


def identity_of(request: Request) -> Identity:
    """The request's identity (anonymous, granted nothing, when no check ran)."""
    return getattr(request.state, "identity", ANONYMOUS)
