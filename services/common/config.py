"""Berth's configuration: one YAML file with flavors, environment values and overrides.

Loading follows the classic registry and registry:2 together:

1. The file is ``DOCKER_REGISTRY_CONFIG`` (or ``--config``); without one, embedded defaults apply.
2. A file whose top level has ``common`` or flavor sections is flavored: ``common`` is the base and
   the flavor named by ``SETTINGS_FLAVOR`` (default ``dev``) is merged over it. A flat file is used
   as it is.
3. A string value ``_env:VAR:default`` becomes the value of ``VAR`` (or ``default``).
4. ``REGISTRY_<SECTION>_<KEY>`` environment variables override single keys
   (``REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY``, ``REGISTRY_HTTP_SECRET``).
5. The result is validated; an error names the offending key.

Every service reads the same file and uses the sections it needs.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_FLAVOR = "dev"
ENV_PREFIX = "REGISTRY_"


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _check_addr(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return value


class HTTPSettings(_Section):
    addr: str = "127.0.0.1:5000"
    # Externally visible base URL (scheme://host[:port][/prefix]); empty means "from the request".
    host: str = ""
    # Path prefix the registry is served under, e.g. "/registry".
    prefix: str = ""
    # HMAC key that signs upload state in Location URLs; every gateway replica needs the same one.
    # Empty: a random key per process (fine for one gateway).
    secret: str = ""
    # Honour X-Forwarded-Proto/Host from these client addresses ("*" trusts all).
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])

    _addr = field_validator("addr")(_check_addr)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        return f"/{value}" if value else ""


class FilesystemSettings(_Section):
    rootdirectory: str = "./data/registry"


class DeleteSettings(_Section):
    enabled: bool = True


class StorageSettings(_Section):
    driver: Literal["filesystem", "inmemory"] = "filesystem"
    filesystem: FilesystemSettings = Field(default_factory=FilesystemSettings)
    delete: DeleteSettings = Field(default_factory=DeleteSettings)

    @property
    def driver_parameters(self) -> dict[str, Any]:
        """The parameters of the chosen driver's own section (none for inmemory)."""
        section = getattr(self, self.driver, None)
        return section.model_dump() if isinstance(section, BaseModel) else {}


class BlobstoreSettings(_Section):
    # Where the blobstore listens.
    addr: str = "127.0.0.1:5001"
    # Where gateways reach it (a load balancer in front of replicas); empty means ``addr``.
    target: str = ""
    workers: int = Field(default=32, ge=1, le=1024)
    # Size of the data messages on the wire.
    chunk_size: int = Field(default=1 << 20, ge=4096, le=3 << 20)

    _addr = field_validator("addr")(_check_addr)

    @property
    def connect_to(self) -> str:
        return self.target or self.addr


class LimitsSettings(_Section):
    manifest_size: int = Field(default=4 << 20, ge=1024)


class AuthSettings(_Section):
    type: Literal["none"] = "none"


class Settings(_Section):
    loglevel: Literal["debug", "info", "warning", "error", "critical"] = "info"
    debug: bool = False
    http: HTTPSettings = Field(default_factory=HTTPSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    blobstore: BlobstoreSettings = Field(default_factory=BlobstoreSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    flavor: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Reads, merges, resolves and validates the configuration."""
    env = os.environ if environ is None else environ
    path = path or env.get("DOCKER_REGISTRY_CONFIG") or None
    flavor = flavor or env.get("SETTINGS_FLAVOR") or DEFAULT_FLAVOR
    raw: dict[str, Any] = _read(Path(path)) if path else {}
    merged = _pick_flavor(raw, flavor, explicit=bool(env.get("SETTINGS_FLAVOR")))
    merged = _resolve_env_values(merged, env, "")
    _apply_overrides(merged, env)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"DOCKER_REGISTRY_CONFIG: no such file {str(path)!r}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def _pick_flavor(raw: dict[str, Any], flavor: str, *, explicit: bool) -> dict[str, Any]:
    flavored = "common" in raw or flavor in raw
    if not flavored:
        return raw
    base = raw.get("common") or {}
    if flavor not in raw and explicit:
        raise ConfigError(f"SETTINGS_FLAVOR: no flavor {flavor!r} in the file (have: {', '.join(sorted(raw))})")
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


def _resolve_env_values(value: Any, env: Mapping[str, str], where: str) -> Any:
    if isinstance(value, dict):
        return {k: _resolve_env_values(v, env, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env_values(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str) and value.startswith("_env:"):
        var, _, default = value[len("_env:") :].partition(":")
        if not var:
            raise ConfigError(f"{where}: '_env:' needs a variable name")
        return env.get(var, default)
    return value


def _apply_overrides(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX):
            continue
        path = _override_path(Settings, var[len(ENV_PREFIX) :].lower())
        if path is None:
            continue
        node = data
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = env[var]


def _override_path(model: type[BaseModel], rest: str) -> list[str] | None:
    """Maps ``storage_filesystem_rootdirectory`` onto the schema's keys, longest key first."""
    for name in sorted(model.model_fields, key=len, reverse=True):
        annotation = model.model_fields[name].annotation
        if rest == name:
            return [name]
        if rest.startswith(name + "_") and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            tail = _override_path(annotation, rest[len(name) + 1 :])
            if tail is not None:
                return [name, *tail]
    return None


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"config key {key!r}: unknown option")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
            lines.append(f"config key {key!r}: {err['msg']}{shown}")
    return "; ".join(lines)

