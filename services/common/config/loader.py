"""Reading a configuration: file (or the built-in classic flavors), flavor, ``_env:`` values,
dialect translation, ``REGISTRY_*`` overrides, then validation against the schema.

1. The file is ``--config`` or ``DOCKER_REGISTRY_CONFIG`` (a relative path not found from the
   working directory is looked up under ``config/``, as the classic registry did). Without one,
   ``defaults.yml`` (the classic sample's flavors) is read.
2. A flavored document (``common`` and flavor sections, YAML merge keys allowed) is reduced to the
   flavor ``SETTINGS_FLAVOR`` names (default ``dev``) merged over ``common``.
3. ``_env:VAR:default`` values are resolved; ``_env:VAR`` with VAR unset, like an empty key, means
   "not set" (the default applies). A default may itself be ``_env:OTHER[:default]``.
4. Classic keys, then ``REGISTRY_*`` variables, then registry:2 shapes become Berth's keys.
5. Internal listeners move off ports the document uses for other things; then the schema validates,
   and errors name the key and where its value came from.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from services.common.config import classic, environment, ports, registry2
from services.common.config.errors import ConfigError
from services.common.config.schema import Settings
from services.common.config.translation import Translation

DEFAULT_FLAVOR = "dev"
BUILT_IN = Path(__file__).with_name("defaults.yml")
_ENV = "_env:"
_UNSET = object()
_NAMED_KEY = re.compile(r"([a-z0-9_]+(?:\.[a-z0-9_]+)+)[ :]")
# Environment variables read only through defaults.yml's _env: values (a warning when a file that
# does not read them is used while they are set); AWS_REGION and DEBUG mean too much elsewhere.
_GENERIC = {"AWS_REGION", "DEBUG"}


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    flavor: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Reads, translates and validates the configuration every service uses."""
    env = os.environ if environ is None else environ
    source = _locate(path or env.get("DOCKER_REGISTRY_CONFIG") or None)
    warnings: list[str] = []
    document = _read(source, warnings) if source else _read(BUILT_IN, warnings)
    explicit = flavor or env.get("SETTINGS_FLAVOR") or ""
    chosen = explicit or DEFAULT_FLAVOR
    if not source and not explicit and env.get("AWS_BUCKET"):
        chosen = "s3"  # the classic quick start without SETTINGS_FLAVOR: AWS_BUCKET means S3
        warnings.append("AWS_BUCKET is set and SETTINGS_FLAVOR is not: using the s3 flavor")
    tree = pick_flavor(document, chosen, explicit=bool(explicit) or not source)
    variables: dict[str, str] = {}
    tree = _resolve_env_values(tree, env, "", variables)
    dialect = "registry2" if "version" in tree else "classic" if classic.is_classic(tree) else "berth"
    t = Translation(tree, dialect, warnings, variables=variables)
    classic.translate(t)
    registry2.expand_selectors(t.tree)
    environment.apply(t, env)
    named = [str(t.get(k)) for k in ("http.debug.addr",) if t.has(k)]
    registry2.normalize(t, own_defaults=dialect == "registry2")
    ports.place(t, named)
    _unread_classic_variables(t, env, {v for chain in variables.values() for v in chain.split(" or ")})
    try:
        settings = Settings.model_validate(_drop_nones(t.tree))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, t)) from None
    settings._warnings = t.warnings
    settings._dialect = dialect
    return settings


def _locate(path: str | os.PathLike[str] | None) -> Path | None:
    if path is None:
        return None
    candidate = Path(path)
    if not candidate.is_absolute() and not candidate.exists() and (Path("config") / candidate).exists():
        return Path("config") / candidate  # the classic registry's DOCKER_REGISTRY_CONFIG=config.yml
    return candidate


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last silently);
    keys that a ``<<`` merge brings in may be overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"config key {key!r} appears twice in one section (lines {seen[key].start_mark.line + 1} and {line})")
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _read(path: Path, warnings: list[str]) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"DOCKER_REGISTRY_CONFIG: no such file {str(path)!r}") from None
    except OSError as exc:
        raise ConfigError(f"DOCKER_REGISTRY_CONFIG: cannot read {str(path)!r}: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        if "\t" not in text:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        # registry:2's documentation indents with tabs, which YAML forbids; Go's parser was lenient.
        try:
            data = yaml.load(text.expandtabs(8), Loader=_StrictLoader)
        except yaml.YAMLError:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        warnings.append(f"{path}: indented with tabs, which YAML forbids; read with tab stops every 8 columns")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def _known_top_level() -> set[str]:
    return set(Settings.model_fields) | {k.path[0] for k in (*classic.KEYS, *registry2.KEYS)}


def pick_flavor(raw: dict[str, Any], flavor: str, *, explicit: bool) -> dict[str, Any]:
    """``common`` merged under the flavor; a flat document as it is. A document whose top level
    holds only sections of unknown names is taken as flavors too (``local:`` alone)."""
    flavored = (
        "common" in raw
        or flavor in raw
        or (bool(raw) and all(isinstance(v, dict) for v in raw.values()) and not set(raw) & _known_top_level())
    )
    if not flavored:
        return raw
    # The default flavor may be absent when common is there (the README's snippets are common: only).
    if flavor not in raw and ("common" not in raw or (explicit and flavor != DEFAULT_FLAVOR)):
        have = ", ".join(sorted(k for k in raw if k != "common")) or "none"
        raise ConfigError(f"SETTINGS_FLAVOR: no flavor {flavor!r} in the configuration (flavors: {have})")
    base = raw.get("common") or {}
    over = raw.get(flavor) or {}
    for name, section in (("common", base), (flavor, over)):
        if not isinstance(section, dict):
            raise ConfigError(f"{name}: a flavor must be a mapping")
    return _merge(base, over)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _resolve_env_values(value: Any, env: Mapping[str, str], where: str, variables: dict[str, str]) -> Any:
    """Resolves ``_env:`` values, noting key -> variable; ``_env:VAR`` with VAR unset drops the key."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            resolved = _resolve_env_values(v, env, f"{where}.{k}" if where else str(k), variables)
            if resolved is not _UNSET:
                out[k] = resolved
        return out
    if isinstance(value, list):
        return [_resolve_env_values(v, env, f"{where}[{i}]", variables) for i, v in enumerate(value)]
    if isinstance(value, str) and value.startswith(_ENV):
        var, colon, default = value[len(_ENV) :].partition(":")
        if not var:
            raise ConfigError(f"config key {where!r}: '_env:' needs a variable name")
        variables[where] = var
        if var in env:
            return env[var]
        if default.startswith(_ENV):  # _env:AWS_KEY:_env:AWS_S3_ACCESS_KEY: either name
            resolved = _resolve_env_values(default, env, where, variables)
            variables[where] = f"{var} or {variables[where]}"
            return resolved
        return default if colon else _UNSET
    return value


def _drop_nones(value: Any) -> Any:
    """A key written without a value means "not set" (the default applies), as in both registries;
    kept until translation, where ``inmemory:`` alone still names a driver."""
    if isinstance(value, dict):
        return {k: _drop_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nones(v) for v in value]
    return value


def _unread_classic_variables(t: Translation, env: Mapping[str, str], read: set[str]) -> None:
    unread = sorted(v for v in _classic_variables() - read - _GENERIC if v in env)
    if unread:
        t.warn(
            f"environment: {', '.join(unread)} set, but this configuration does not read "
            f"{'it' if len(unread) == 1 else 'them'} (only _env: values do, as in the classic registry)"
        )


@functools.cache
def _classic_variables() -> frozenset[str]:
    return frozenset(re.findall(r"_env:([A-Z0-9_]+)", BUILT_IN.read_text()))


def _describe(exc: ValidationError, t: Translation) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        # A section's check names the key it is about ("storage.s3.bucket is required ..."): its origin tells more.
        named = _NAMED_KEY.match(err["msg"].removeprefix("Value error, "))
        origin = (named and t.origin_of(named.group(1))) or t.origin_of(key)
        came = f" (from {origin})" if origin else ""
        if err["type"] == "extra_forbidden":
            lines.append(f"config key {key!r}{came}: unknown option")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"config key {key!r}{came}: {message}{shown}")
    return "; ".join(lines)
