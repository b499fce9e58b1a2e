"""What a dialect module does to a document: move its keys onto Berth's, and say what it did.

Each dialect (``classic``, ``registry2``) declares its keys in a table of ``Key`` entries. The
table drives the simple cases (a key Berth has under the same or another name, a key accepted with
a warning, a key refused) and documents the rest, which the dialect's code converts; the same
table generates ``docs/migrating.md`` and is checked against the code by the tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

from services.common.config.errors import ConfigError

# same: Berth has the key under the same name. renamed: moved to ``target`` as it is.
# converted: the dialect's code turns it into ``target`` (several keys, another shape or unit).
# warned: accepted with one warning line, without effect. refused: the start stops (exit 2).
Treatment = Literal["same", "renamed", "converted", "warned", "refused"]

MISSING = object()


@dataclass(frozen=True)
class Key:
    """One documented key of a dialect. ``source`` is dotted; a trailing ``.*`` covers a whole
    section. ``example`` is a value the tests feed through the translation."""

    source: str
    treatment: Treatment
    target: str = ""
    note: str = ""
    example: Any = None

    @property
    def path(self) -> list[str]:
        return self.source.removesuffix(".*").split(".")

    @property
    def is_section(self) -> bool:
        return self.source.endswith(".*")


def lookup(tree: dict[str, Any], path: Iterable[str]) -> Any:
    node: Any = tree
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return MISSING
        node = node[key]
    return node


def pop(tree: dict[str, Any], path: list[str]) -> Any:
    """Removes and returns the value at ``path`` (MISSING when absent); drops sections left empty."""
    parents = []
    node: Any = tree
    for key in path[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            return MISSING
        parents.append((node, key))
        node = node[key]
    if not isinstance(node, dict) or path[-1] not in node:
        return MISSING
    value = node.pop(path[-1])
    for parent, key in reversed(parents):
        if parent[key]:
            break
        del parent[key]
    return value


def put(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


@dataclass
class Translation:
    """The tree on its way to Berth's schema, with what was said about it and where values came from."""

    tree: dict[str, Any]
    dialect: str = "berth"
    warnings: list[str] = field(default_factory=list)
    # Berth key (dotted) -> where its value came from, for error messages.
    origins: dict[str, str] = field(default_factory=dict)
    # Document key (dotted, before translation) -> the variable its ``_env:`` value came from.
    variables: dict[str, str] = field(default_factory=dict)

    def label(self, dialect_label: str, source: str) -> str:
        """ "classic key 's3_bucket' (_env:AWS_BUCKET)": where a translated value came from."""
        var = self.variables.get(source)
        return f"{dialect_label} key {source!r}" + (f" (_env:{var})" if var else "")

    def get(self, dotted: str, default: Any = MISSING) -> Any:
        value = lookup(self.tree, dotted.split("."))
        return default if value is MISSING else value

    def has(self, dotted: str) -> bool:
        return lookup(self.tree, dotted.split(".")) is not MISSING

    def pop(self, dotted: str) -> Any:
        return pop(self.tree, dotted.split("."))

    def put(self, dotted: str, value: Any, origin: str = "") -> None:
        put(self.tree, dotted.split("."), value)
        if origin:
            self.origins[dotted] = origin

    def set_default(self, dotted: str, value: Any, origin: str) -> None:
        if not self.has(dotted):
            self.put(dotted, value, origin)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def refuse(self, key: str, message: str) -> NoReturn:
        raise ConfigError(f"config key {key!r} ({DIALECT_NAMES.get(self.dialect, self.dialect)}): {message}")

    def origin_of(self, dotted: str) -> str:
        """Where the value of a Berth key, and of the keys under it, came from ("" if the file)."""
        found = [self.origins[dotted]] if dotted in self.origins else []
        if dotted in self.variables:
            found.append(f"_env:{self.variables[dotted]}")
        found += [o for k, o in self.origins.items() if k.startswith(dotted + ".")]
        found += [f"_env:{v}" for k, v in self.variables.items() if k.startswith(dotted + ".") and self.has(k)]
        return ", ".join(list(dict.fromkeys(found))[:4])

    def apply_table(self, table: Iterable[Key], label: str) -> None:
        """The table's simple cases: renames, warnings and refusals of keys present in the tree."""
        for key in table:
            if key.treatment in ("same", "converted"):
                continue
            value = lookup(self.tree, key.path)
            if value is MISSING:
                if key.treatment == "renamed" and key.source in self.variables:
                    # An _env: value whose variable is unset: say so if the key turns out required.
                    self.origins.setdefault(key.target, f"{label} key {key.source!r} (_env:{self.variables[key.source]}, unset)")
                continue
            if key.treatment == "refused":
                self.refuse(key.source.removesuffix(".*"), key.note)
            pop(self.tree, key.path)
            if key.treatment == "renamed":
                self.put(key.target, value, self.label(label, key.source))
            elif value not in (None, "", 0, False, "0", "false", {}, []):  # switched off: nothing to say
                self.warn(f"{key.source.removesuffix('.*')} ({label}): {key.note}")


DIALECT_NAMES = {"berth": "Berth configuration", "classic": "classic registry configuration", "registry2": "registry:2 configuration"}


def walk(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf as (dotted key, value)."""
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            yield from walk(value, dotted)
        else:
            yield dotted, value


def truthy(value: Any) -> bool:
    """A YAML or environment boolean ("true", "1", true)."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return value is not MISSING and value is not None and bool(value)
