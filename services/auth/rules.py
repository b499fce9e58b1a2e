"""Access rules: who may do what to which repository. Ordered; the first matching rule decides.

A rules file (``token_service.rules``) is YAML, a list of rules (or a mapping with ``rules:``):

    - account: group:admins          # everything for the admins group
      name: "*"
      actions: ["*"]
    - account: "*"                   # every signed-in account owns its namespace
      name: "${account}/*"
      actions: [pull, push, delete]
    - account: [anonymous, "*"]      # everyone, signed in or not, may pull public/*
      name: "public/*"
      actions: [pull]
    - account: "*"
      type: registry                 # the catalog (GET /v2/_catalog)
      name: catalog
      actions: ["*"]

- ``account``: one pattern or a list. ``anonymous`` matches requests without credentials only; a
  glob (``alice``, ``team-*``, ``*``) matches signed-in account names; ``group:<glob>`` matches
  accounts in a matching group. ``*`` does not match anonymous requests.
- ``name``: a glob over the resource name; ``*`` also crosses ``/``. ``${account}`` is the account
  name (escaped, so it matches literally); rules using it never match anonymous requests.
- ``type``: ``repository`` (default) or ``registry``.
- ``actions``: ``pull``, ``push``, ``delete`` or ``*`` (any action).

A request gets, per scope, the intersection of what it asked for and what the first rule matching
the account and the resource allows; asking for too much is never an error (the token spec). No
file means the built-in default: everything for group ``admins``, nothing for anyone else. The
file is re-read when it changes; a broken edit is logged and the previous rules stay in force.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.auth.scopes import Scope

log = logging.getLogger("berth.auth.rules")

ACTIONS = frozenset({"pull", "push", "delete", "*"})
TYPES = frozenset({"repository", "registry"})
ANONYMOUS = "anonymous"
_GROUP_PREFIX = "group:"
_KEYS = {"account", "name", "type", "actions"}


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the rule and the key."""


@dataclass(frozen=True)
class Rule:
    accounts: tuple[str, ...]
    name: str
    type: str
    actions: frozenset[str]

    def applies_to(self, account: str, groups: Sequence[str]) -> bool:
        return any(_account_matches(pattern, account, groups) for pattern in self.accounts)

    def covers(self, type_: str, name: str, account: str) -> bool:
        if type_ != self.type:
            return False
        pattern = self.name
        if "${account}" in pattern:
            if not account:
                return False
            pattern = pattern.replace("${account}", _glob_escape(account))
        return fnmatch.fnmatchcase(name, pattern)

    def allows(self, requested: Iterable[str]) -> tuple[str, ...]:
        return tuple(a for a in requested if "*" in self.actions or a in self.actions)


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...]

    def grant(self, account: str, groups: Sequence[str], scopes: Iterable[Scope]) -> list[Scope]:
        """Each requested scope with the actions it gets (possibly none). ``account`` "" is anonymous."""
        applicable = [rule for rule in self.rules if rule.applies_to(account, groups)]
        granted = []
        for scope in scopes:
            rule = next((r for r in applicable if r.covers(scope.type, scope.name, account)), None)
            granted.append(Scope(scope.type, scope.name, rule.allows(scope.actions) if rule else ()))
        return granted


DEFAULT = Rules(
    (
        Rule((f"{_GROUP_PREFIX}admins",), "*", "repository", frozenset({"*"})),
        Rule((f"{_GROUP_PREFIX}admins",), "catalog", "registry", frozenset({"*"})),
    )
)


def parse(data: Any, source: str = "rules") -> Rules:
    """Rules from parsed YAML; RulesError names the offending rule and key."""
    if isinstance(data, dict) and set(data) == {"rules"}:
        data = data["rules"]
    if data is None:
        data = []
    if not isinstance(data, list):
        raise RulesError(f"{source}: expected a list of rules (or a mapping with 'rules:')")
    return Rules(tuple(_rule(entry, f"{source}[{index}]") for index, entry in enumerate(data)))


def _rule(entry: Any, where: str) -> Rule:
    if not isinstance(entry, dict):
        raise RulesError(f"{where}: a rule is a mapping with account, name and actions")
    unknown = set(entry) - _KEYS
    if unknown:
        raise RulesError(f"{where}: unknown key {sorted(map(str, unknown))[0]!r} (allowed: {', '.join(sorted(_KEYS))})")
    for key in ("account", "name", "actions"):
        if key not in entry:
            raise RulesError(f"{where}: {key!r} is required")
    accounts = _strings(entry["account"], f"{where}.account")
    for pattern in accounts:
        if pattern.startswith(_GROUP_PREFIX) and not pattern[len(_GROUP_PREFIX) :]:
            raise RulesError(f"{where}.account: 'group:' needs a group name")
    name = entry["name"]
    if not isinstance(name, str) or not name:
        raise RulesError(f"{where}.name: expected a non-empty string")
    if "${" in name.replace("${account}", ""):
        raise RulesError(f"{where}.name: only ${{account}} can be expanded")
    type_ = entry.get("type", "repository")
    if type_ not in TYPES:
        raise RulesError(f"{where}.type: expected one of {', '.join(sorted(TYPES))}, got {type_!r}")
    actions = _strings(entry["actions"], f"{where}.actions")
    bad = [a for a in actions if a not in ACTIONS]
    if bad:
        raise RulesError(f"{where}.actions: unknown action {bad[0]!r} (allowed: {', '.join(sorted(ACTIONS))})")
    return Rule(accounts, name, type_, frozenset(actions))


def _strings(value: Any, where: str) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
        raise RulesError(f"{where}: expected a string or a non-empty list of strings")
    return tuple(values)


def _account_matches(pattern: str, account: str, groups: Sequence[str]) -> bool:
    if pattern == ANONYMOUS:
        return account == ""
    if not account:
        return False
    if pattern.startswith(_GROUP_PREFIX):
        group_glob = pattern[len(_GROUP_PREFIX) :]
        return any(fnmatch.fnmatchcase(group, group_glob) for group in groups)
    return fnmatch.fnmatchcase(account, pattern)


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


class RuleFile:
    """The rules in force: the file's, re-read when it changes, or the default without a file."""

    def __init__(self, path: str) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._rules = DEFAULT
        if self.path is not None:
            self._stamp = self._stat()
            self._rules = self._load()  # errors at startup stop the service

    def current(self) -> Rules:
        if self.path is None:
            return self._rules
        stamp = self._stat()
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._rules = self._load()
                    log.info("rules %s reloaded: %d rules", self.path, len(self._rules.rules))
                except RulesError as exc:
                    log.error("rules %s: %s; keeping the previous rules", self.path, exc)
            return self._rules

    def _stat(self) -> tuple[int, int, int] | None:
        assert self.path is not None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> Rules:
        assert self.path is not None
        try:
            data = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise RulesError(f"{self.path}: cannot read it: {exc.strerror or exc}") from None
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise RulesError(f"{self.path}: not valid YAML: {exc}") from None
        return parse(data, str(self.path))
