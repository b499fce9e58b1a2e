"""What an access check talks about: the access a request needs, who asked, and the refusal.

``Access`` is one (resource type, resource name, action) triple, as in the Docker token spec's
``scope`` (``repository:library/ubuntu:pull``). A controller answers a list of them with an
``Identity`` (the grant) or raises a ``Challenge`` (the refusal that tells the client how to log in).
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from services.common.errors import ErrorCode, RegistryError


@dataclass(frozen=True)
class Access:
    type: str
    name: str
    action: str

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{self.action}"

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "name": self.name, "action": self.action}


@dataclass(frozen=True)
class Grant:
    """One entry of a token's ``access`` claim: actions on one resource (``*`` is every action)."""

    type: str
    name: str
    actions: frozenset[str]

    def allows(self, action: str) -> bool:
        return action in self.actions or "*" in self.actions


@dataclass(frozen=True)
class Identity:
    """Who made the request, stored on ``request.state.identity`` for later code (search filtering).

    ``account`` is the user name (htpasswd) or the token's ``sub``; None for anonymous requests.
    ``token`` is the raw bearer token, and ``grants`` its ``access`` claim; ``grants`` is None when
    the identity is not limited by scopes (auth ``none``, or valid htpasswd credentials) and empty
    for a request that brought no credentials to a route that asks none while auth is on.
    """

    account: str | None = None
    token: str | None = None
    grants: tuple[Grant, ...] | None = None
    _index: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        merged: dict[tuple[str, str], set[str]] = {}
        for grant in self.grants or ():
            merged.setdefault((grant.type, grant.name), set()).update(grant.actions)
        self._index.update({key: frozenset(actions) for key, actions in merged.items()})

    def allows(self, access: Access) -> bool:
        if self.grants is None:
            return True
        actions = self._index.get((access.type, access.name), frozenset())
        return access.action in actions or "*" in actions

    def can(self, type_: str, name: str, action: str) -> bool:
        return self.allows(Access(type_, name, action))


# What an identity may pull, as far as a controller knows without asking anyone: every repository
# (auth none, a signed-in htpasswd user), none (an anonymous htpasswd caller), or some, which
# ``pullable`` tells name by name (token auth: the token service's rules decide).
Reach = Literal["all", "none", "some"]

# auth "none": nobody is asked, everybody may do everything.
UNRESTRICTED = Identity()
# Auth is on but the route asked for no credentials (/_ping): nothing is granted.
ANONYMOUS = Identity(grants=())


def scope_param(needed: Iterable[Access]) -> str:
    """``repository:a:pull,push repository:b:pull``: one scope per resource, in first-seen order."""
    resources: dict[tuple[str, str], list[str]] = {}
    for access in needed:
        actions = resources.setdefault((access.type, access.name), [])
        if access.action not in actions:
            actions.append(access.action)
    return " ".join(f"{type_}:{name}:{','.join(actions)}" for (type_, name), actions in resources.items())


def quote(value: str) -> str:
    """An RFC 9110 quoted-string (as Go's %q writes one for the reference registry's challenges)."""
    cleaned = "".join(c for c in value if c >= " " and c != "\x7f")
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Challenge(RegistryError):
    """A refusal that knows how to ask for credentials: renders as the error envelope plus
    ``WWW-Authenticate`` (the registry's one error handler sends ``headers``)."""

    def __init__(self, code: ErrorCode, www_authenticate: str, needed: Sequence[Access] = (), *, status: int = 401) -> None:
        detail: Any = [a.to_json() for a in needed] or None
        super().__init__(code, detail, status=status, headers={"WWW-Authenticate": www_authenticate})
        self.www_authenticate = www_authenticate

    def set_headers(self, headers: MutableMapping[str, str]) -> None:
        headers["WWW-Authenticate"] = self.www_authenticate
