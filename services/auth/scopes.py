"""The resource scope grammar of the token spec (docs/spec/auth/scope.md).

    scope          := resourcescope [ ' ' resourcescope ]*
    resourcescope  := resourcetype ":" resourcename ":" action [ ',' action ]*
    resourcetype   := /[a-z0-9]+/ [ '(' /[a-z0-9]+/ ')' ]
    resourcename   := [ hostname '/' ] component [ '/' component ]*      (hostname may carry :port)
    action         := /[a-z*]*/

The name may hold one ``:`` (a port), so the type is split off from the left and the actions from
the right. Anything off the grammar is refused as a whole (400 SCOPE_INVALID) rather than silently
dropped: a client that sends garbage should learn so, and a token never silently covers less than a
well-formed request asked for. The resource class (``repository(plugin)``) is deprecated and
ignored by the spec, so it is parsed and dropped: the token says ``repository``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from services.common.errors import SCOPE_INVALID, RegistryError

# Bounds on what one request may ask for; real clients send one to a handful of scopes.
MAX_SCOPES = 64
MAX_SCOPE_LENGTH = 512

_TYPE_RE = re.compile(r"([a-z0-9]+)(?:\(([a-z0-9]+)\))?")
_HOST_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOSTNAME = rf"{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})*(?::[0-9]+)?"
_COMPONENT = r"[a-z0-9]+(?:(?:[_.]|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"(?:{_HOSTNAME}/)?{_COMPONENT}(?:/{_COMPONENT})*")
_ACTION_RE = re.compile(r"[a-z*]+")


@dataclass(frozen=True)
class Scope:
    """One resource and the actions asked for (or granted) on it."""

    type: str
    name: str
    actions: tuple[str, ...]

    def as_claim(self) -> dict[str, object]:
        """The entry of a token's ``access`` claim (docs/spec/auth/jwt.md)."""
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def parse_one(text: str) -> Scope:
    """One ``resourcescope``; RegistryError(SCOPE_INVALID) naming the problem otherwise."""
    if len(text) > MAX_SCOPE_LENGTH:
        raise _invalid(text, f"longer than {MAX_SCOPE_LENGTH} characters")
    type_part, sep, rest = text.partition(":")
    name, sep2, action_part = rest.rpartition(":")
    if not sep or not sep2:
        raise _invalid(text, "expected type:name:actions")
    type_match = _TYPE_RE.fullmatch(type_part)
    if type_match is None:
        raise _invalid(text, "bad resource type")
    if not _NAME_RE.fullmatch(name):
        raise _invalid(text, "bad resource name")
    actions: list[str] = []
    for action in action_part.split(","):
        if action == "":
            continue  # the grammar allows empty actions; they ask for nothing
        if not _ACTION_RE.fullmatch(action):
            raise _invalid(text, "bad action")
        if action not in actions:
            actions.append(action)
    return Scope(type_match.group(1), name, tuple(actions))


def parse(values: Iterable[str]) -> list[Scope]:
    """Every scope of a request: several ``scope`` parameters, each space-separated, merged.

    The same resource asked for twice becomes one entry with the union of its actions, in the
    order they were first asked for.
    """
    merged: dict[tuple[str, str], list[str]] = {}
    count = 0
    for value in values:
        for text in value.split(" "):
            if not text:
                continue
            count += 1
            if count > MAX_SCOPES:
                raise RegistryError(SCOPE_INVALID, f"more than {MAX_SCOPES} scopes in one request")
            scope = parse_one(text)
            actions = merged.setdefault((scope.type, scope.name), [])
            actions.extend(a for a in scope.actions if a not in actions)
    return [Scope(type_, name, tuple(actions)) for (type_, name), actions in merged.items()]


def scope_string(scopes: Iterable[Scope]) -> str:
    """The OAuth2 ``scope`` answer: granted scopes, space-separated, those granting nothing left out."""
    return " ".join(str(s) for s in scopes if s.actions)


def _invalid(text: str, why: str) -> RegistryError:
    shown = text if len(text) <= 100 else text[:100] + "..."
    return RegistryError(SCOPE_INVALID, f"scope {shown!r}: {why}")
