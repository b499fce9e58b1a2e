"""``REGISTRY_<SECTION>_<KEY>`` environment overrides, registry:2's way, onto Berth's keys and registry:2's.

A variable names a key of Berth's schema (``REGISTRY_BLOBSTORE_CHUNK_SIZE``: the longest key wins
where names hold underscores) or of registry:2's configuration (``REGISTRY_LOG_LEVEL``,
``REGISTRY_HTTP_DEBUG_ADDR``), which ``registry2.normalize`` then converts like a key of a file.
``REGISTRY_STORAGE=s3`` and ``REGISTRY_AUTH=htpasswd`` choose the driver and the auth scheme.

A variable under a known section that names no key stops the start (a mistyped
``REGISTRY_AUTH_HTPASSWD_PATH`` must never leave a registry open); variables under no known section
(``REGISTRY_PORT`` from a Kubernetes service named registry) get one warning line together.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, get_origin

import yaml
from pydantic import BaseModel

from services.common.config import registry2
from services.common.config.errors import ConfigError
from services.common.config.schema import Settings
from services.common.config.translation import Translation

PREFIX = "REGISTRY_"
ANY = "*"


def apply(t: Translation, env: Mapping[str, str]) -> None:
    unknown: list[str] = []
    for var in sorted(env):  # REGISTRY_AUTH before REGISTRY_AUTH_HTPASSWD_PATH
        if not var.startswith(PREFIX) or var == PREFIX:
            continue
        rest = var[len(PREFIX) :].lower()
        raw = env[var]
        if rest in registry2.SELECTORS:
            t.put(f"{rest}.{registry2.SELECTORS[rest]}", raw.strip().lower(), f"environment {var}")
            continue
        path = _schema_path(Settings, rest)
        if path is not None:
            t.put(".".join(path), _schema_value(path, raw), f"environment {var}")
            continue
        path = _registry2_path(_registry2_tree(), rest)
        if path is not None:
            t.put(".".join(path), _yaml_value(raw), f"environment {var}")
            continue
        section = _known_section(rest)
        if section:
            raise ConfigError(f"environment {var}: names no key of the {section!r} section (check the spelling)")
        unknown.append(var)
    if unknown:
        t.warn(f"environment: ignoring {', '.join(unknown)}: no configuration section of that name")


def _schema_path(model: type[BaseModel], rest: str) -> list[str] | None:
    """``storage_filesystem_rootdirectory`` -> [storage, filesystem, rootdirectory], longest key first."""
    for name in sorted(model.model_fields, key=len, reverse=True):
        annotation = model.model_fields[name].annotation
        if rest == name:
            return [name]
        if not rest.startswith(name + "_"):
            continue
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            tail = _schema_path(annotation, rest[len(name) + 1 :])
            if tail is not None:
                return [name, *tail]
        elif get_origin(annotation) is dict:  # REGISTRY_LOG_FIELDS_ENVIRONMENT=production: one entry
            return [name, rest[len(name) + 1 :]]
    return None


def _schema_value(path: list[str], raw: str) -> Any:
    model: Any = Settings
    for key in path[:-1]:
        annotation = model.model_fields[key].annotation
        if get_origin(annotation) is dict:
            return raw if annotation.__args__[1] is str else _yaml_value(raw)  # an entry of a map
        model = annotation
    annotation = model.model_fields[path[-1]].annotation
    if get_origin(annotation) is list:
        stripped = raw.strip()
        if stripped.startswith("["):
            return _yaml_value(stripped)
        return [item.strip() for item in raw.split(",") if item.strip()]  # 10.0.0.0/8,127.0.0.1
    if get_origin(annotation) is dict:
        return _yaml_value(raw)
    return raw


def _yaml_value(raw: str) -> Any:
    """registry:2 reads a variable's value as YAML (``true``, ``[a, b]``, ``{k: v}``)."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


@lru_cache(maxsize=1)
def _registry2_tree() -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key in registry2.KEYS:
        node = tree
        for part in key.path[:-1]:
            node = node.setdefault(part, {})
        node[key.path[-1]] = ANY if key.is_section else None
    return tree


def _registry2_path(tree: dict[str, Any], rest: str) -> list[str] | None:
    for name in sorted(tree, key=len, reverse=True):
        sub = tree[name]
        if rest == name:
            return [name]
        if rest.startswith(name + "_"):
            tail_text = rest[len(name) + 1 :]
            if sub == ANY:
                return [name, *tail_text.split("_")]
            if isinstance(sub, dict):
                tail = _registry2_path(sub, tail_text)
                if tail is not None:
                    return [name, *tail]
    return None


def _known_section(rest: str) -> str:
    sections = set(Settings.model_fields) | set(_registry2_tree())
    for name in sorted(sections, key=len, reverse=True):
        if rest == name or rest.startswith(name + "_"):
            return name
    return ""
