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
from typing import Any, Literal, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


class TLSSettings(_Section):
    """HTTPS for an HTTP service (registry:2's ``http.tls``); empty certificate: plain HTTP."""

    certificate: str = ""
    key: str = ""
    # PEM bundle of CAs whose client certificates are required (mutual TLS); empty: none asked.
    clientcas: list[str] = Field(default_factory=list)
    minimumtls: Literal["tls1.2", "tls1.3"] = "tls1.2"

    @model_validator(mode="after")
    def _pair(self) -> "TLSSettings":
        if bool(self.certificate) != bool(self.key):
            raise ValueError("certificate and key go together: set both or neither")
        return self


class HTTPSettings(_Section):
    addr: str = "127.0.0.1:5000"
    # Externally visible base URL (scheme://host[:port][/prefix]); empty means "from the request".
    host: str = ""
    # Path prefix the registry is served under, e.g. "/registry".
    prefix: str = ""
    # HMAC key that signs upload state in Location URLs; every gateway replica needs the same one.
    # Empty: a random key per process (fine for one gateway).
    secret: str = ""
    # Honour X-Forwarded-For/Proto/Host from these client addresses or CIDR networks ("*" trusts all).
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    # Which header those proxies set: x-forwarded-for (with X-Forwarded-Proto/Host: nginx, most
    # ingress controllers, load balancers) or forwarded (RFC 7239). Only that one is read: a proxy
    # passes the other through from the client unchanged, so believing it would let clients forge
    # their address.
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    tls: TLSSettings = Field(default_factory=TLSSettings)

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


class S3Settings(_Section):
    """S3 and S3-compatible stores (registry:2's parameter names where it has one)."""

    bucket: str = ""
    region: str = "us-east-1"
    # Endpoint URL of an S3-compatible store (MinIO, Ceph, moto); empty: AWS.
    regionendpoint: str = ""
    # Empty: the standard AWS chain (environment, shared files, instance role).
    accesskey: str = ""
    secretkey: str = ""
    # Key prefix every object of the registry lives under.
    rootdirectory: str = ""
    # Server-side encryption (SSE-S3, or SSE-KMS with keyid).
    encrypt: bool = False
    keyid: str = ""
    # Path-style addressing (http://endpoint/bucket/key) rather than virtual-host style.
    forcepathstyle: bool = False
    secure: bool = True
    # Part size of multipart uploads (S3's minimum is 5 MiB) and parts sent at once per writer.
    chunksize: int = Field(default=10 << 20, ge=5 << 20, le=5 << 30)
    uploadconcurrency: int = Field(default=4, ge=1, le=64)
    # Server-side copies above this size go part by part (a single copy stops at 5 GiB).
    multipartcopythresholdsize: int = Field(default=32 << 20, ge=5 << 20, le=5 << 30)
    multipartcopychunksize: int = Field(default=32 << 20, ge=5 << 20, le=5 << 30)
    multipartcopymaxconcurrency: int = Field(default=8, ge=1, le=100)
    # Seconds a presigned redirect URL stays valid.
    redirectexpiry: int = Field(default=300, ge=10, le=7 * 86400)
    # Connection pool size towards the store.
    maxconnections: int = Field(default=64, ge=1, le=1024)


class StorageSettings(_Section):
    driver: Literal["filesystem", "inmemory", "s3"] = "filesystem"
    filesystem: FilesystemSettings = Field(default_factory=FilesystemSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    delete: DeleteSettings = Field(default_factory=DeleteSettings)

    @model_validator(mode="after")
    def _driver_complete(self) -> "StorageSettings":
        if self.driver == "s3" and not self.s3.bucket:
            raise ValueError("storage.s3.bucket is required when storage.driver is s3")
        return self

    @property
    def driver_parameters(self) -> dict[str, Any]:
        """The parameters of the chosen driver's own section (none for inmemory)."""
        section = getattr(self, self.driver, None)
        return section.model_dump() if isinstance(section, BaseModel) else {}


class BlobstoreTLSSettings(_Section):
    """Mutual TLS between gateways and blobstores. Every file is PEM."""

    # The blobstore's server certificate and key, and the CA that signs the gateways' client
    # certificates.
    certificate: str = ""
    key: str = ""
    clientca: str = ""
    # A gateway's client certificate and key, and the CA that signed the blobstore's certificate.
    client_certificate: str = ""
    client_key: str = ""
    ca: str = ""
    # Name expected in the blobstore's certificate when it differs from the target's host.
    servername: str = ""


class BlobstoreSettings(_Section):
    # Where the blobstore listens.
    addr: str = "127.0.0.1:5001"
    # Where gateways reach it (a load balancer in front of replicas); empty means ``addr``.
    target: str = ""
    workers: int = Field(default=32, ge=1, le=1024)
    # Size of the data messages on the wire.
    chunk_size: int = Field(default=1 << 20, ge=4096, le=3 << 20)
    # Seconds a gateway waits on one short blobstore call, including waiting for a blobstore that
    # is (re)starting; past it the client gets 503 UNAVAILABLE.
    call_timeout: float = Field(default=30.0, gt=0, le=600)
    # How gateways prove themselves to the blobstore. auto: "token" when the blobstore listens on
    # anything but loopback, "none" on loopback. token: a shared secret in every call's metadata.
    # mtls: client certificates (see tls).
    security: Literal["auto", "none", "token", "mtls"] = "auto"
    # The shared secret of security "token" (at least 16 characters).
    token: str = ""
    tls: BlobstoreTLSSettings = Field(default_factory=BlobstoreTLSSettings)
    # HTTP listener for /metrics, /_ping and /_ready (probes); empty: none.
    http_addr: str = "127.0.0.1:5004"

    _addr = field_validator("addr")(_check_addr)

    @field_validator("http_addr")
    @classmethod
    def _http_addr(cls, value: str) -> str:
        return _check_addr(value) if value else value

    @property
    def connect_to(self) -> str:
        return self.target or self.addr

    @property
    def effective_security(self) -> str:
        """The security mode in force: ``auto`` resolved from the listening address."""
        if self.security != "auto":
            return self.security
        host = self.addr.rpartition(":")[0].strip("[]")
        return "none" if host in ("127.0.0.1", "localhost", "::1") else "token"

    @model_validator(mode="after")
    def _security_complete(self) -> "BlobstoreSettings":
        mode = self.effective_security
        if mode == "token" and len(self.token) < 16:
            raise ValueError(
                "blobstore.token: a shared secret of at least 16 characters is required when blobstore.security "
                f"is token{' (auto: the blobstore listens on ' + self.addr + ')' if self.security == 'auto' else ''}"
            )
        if mode == "mtls":
            missing = [k for k in ("certificate", "key", "clientca", "client_certificate", "client_key", "ca") if not getattr(self.tls, k)]
            if missing:
                raise ValueError(f"blobstore.tls.{missing[0]}: required when blobstore.security is mtls")
        return self


class LimitsSettings(_Section):
    manifest_size: int = Field(default=4 << 20, ge=1024)


class HtpasswdAuthSettings(_Section):
    realm: str = "berth"
    # An htpasswd file with bcrypt hashes (``htpasswd -B``).
    path: str = "./data/auth/htpasswd"


class TokenAuthSettings(_Section):
    # Where clients get tokens (the token service's /token, as clients can reach it).
    realm: str = "http://127.0.0.1:5002/token"
    # The audience: tokens must name this service in ``aud``.
    service: str = "berth"
    # Tokens must name this issuer in ``iss``.
    issuer: str = "berth-auth"
    # Public keys: a JWKS URL (cached; refetched when an unknown ``kid`` shows up) ...
    jwks: str = "http://127.0.0.1:5002/.well-known/jwks.json"
    # ... and/or a PEM bundle of certificates or public keys (registry:2's ``rootcertbundle``).
    rootcertbundle: str = ""
    # Seconds a fetched JWKS is trusted before it is fetched again.
    jwks_ttl: int = Field(default=300, ge=1)
    # Least seconds between two JWKS fetches, also when tokens name a kid the cached set lacks (a
    # rotated key): bounds what a flood of made-up kids can cost the JWKS server.
    jwks_refresh_interval: float = Field(default=5.0, ge=0, le=3600)
    # Tolerated clock difference for exp/nbf/iat, in seconds.
    leeway: int = Field(default=30, ge=0, le=600)
    # The token service's /authorize, asked which search results a caller may see; empty: next to
    # the realm (http://host/token -> http://host/authorize).
    authorize: str = ""

    @property
    def authorize_url(self) -> str:
        return self.authorize or self.realm.rsplit("/", 1)[0] + "/authorize"


class AuthSettings(_Section):
    # none: anyone may push and pull. htpasswd: Basic auth at the gateway. token: Docker token auth.
    type: Literal["none", "htpasswd", "token"] = "none"
    htpasswd: HtpasswdAuthSettings = Field(default_factory=HtpasswdAuthSettings)
    token: TokenAuthSettings = Field(default_factory=TokenAuthSettings)


class RateLimitSettings(_Section):
    # Failed logins allowed per account and per source address within ``window`` seconds.
    attempts: int = Field(default=10, ge=1)
    window: int = Field(default=60, ge=1)


class TokenServiceSettings(_Section):
    """The token service (``berth auth``)."""

    addr: str = "127.0.0.1:5002"
    issuer: str = "berth-auth"
    # Audiences this service issues tokens for (``service=`` of a token request).
    services: list[str] = Field(default_factory=lambda: ["berth"])
    # The signing key (PEM, private); generated on first start when absent.
    key: str = "./data/auth/signing-key.pem"
    algorithm: Literal["RS256", "ES256"] = "ES256"
    # Older public keys still published in the JWKS, so tokens they signed stay valid while keys
    # rotate (PEM files).
    previous_keys: list[str] = Field(default_factory=list)
    # Seconds an access token lives.
    token_ttl: int = Field(default=300, ge=10, le=86400)
    # Seconds a refresh token lives.
    refresh_ttl: int = Field(default=30 * 86400, ge=60)
    # Users: an htpasswd file (bcrypt) and/or the SQL user table.
    htpasswd: str = ""
    database: str = "sqlite:///./data/auth/users.db"
    # Access rules (YAML, ordered, first match wins).
    rules: str = ""
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)

    _addr = field_validator("addr")(_check_addr)


class EndpointIgnoreSettings(_Section):
    mediatypes: list[str] = Field(default_factory=list)
    actions: list[str] = Field(default_factory=list)


class NotificationEndpoint(_Section):
    """A webhook that receives events in the reference registry's envelope."""

    name: str
    url: str
    headers: dict[str, list[str]] = Field(default_factory=dict)
    # Seconds per delivery attempt.
    timeout: float = Field(default=5.0, gt=0)
    # Failures in a row before the endpoint counts as down (and backs off).
    threshold: int = Field(default=5, ge=1)
    # Seconds to wait between retries while down (doubles up to 60 s).
    backoff: float = Field(default=1.0, gt=0)
    # Events kept while the endpoint is slow or down; beyond it the oldest are dropped (counted).
    queue_size: int = Field(default=10_000, ge=1)
    ignoredmediatypes: list[str] = Field(default_factory=list)
    ignore: EndpointIgnoreSettings = Field(default_factory=EndpointIgnoreSettings)
    disabled: bool = False


class NotificationSettings(_Section):
    endpoints: list[NotificationEndpoint] = Field(default_factory=list)


class SearchSettings(_Section):
    """The search service (``berth search``) and the gateway's /v1/search."""

    addr: str = "127.0.0.1:5003"
    # Where the gateway forwards /v1/search; empty: http://<addr>.
    url: str = ""
    database: str = "sqlite:///./data/search/index.db"
    # Registry base URL (scheme://host[:port][/prefix]) the search service reads manifests and
    # configs from for descriptions, and `berth search reindex` walks. Empty: the URL each event
    # carries (target.url), and http://<http.addr><http.prefix> for reindex. Set it when the URL
    # clients use is not reachable from the search service, or to read from one registry only.
    registry: str = ""

    _addr = field_validator("addr")(_check_addr)

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/") or f"http://{self.addr}"


class RedisSettings(_Section):
    """A Redis server. Empty host: not used."""

    host: str = ""
    port: int = Field(default=6379, ge=1, le=65535)
    password: str = ""
    db: int = Field(default=0, ge=0)
    # Seconds to wait on one Redis call before treating Redis as down (and serving without it).
    timeout: float = Field(default=0.25, gt=0, le=30)

    @property
    def enabled(self) -> bool:
        return bool(self.host)


class LRUCacheSettings(RedisSettings):
    """The gateways' shared metadata cache (the classic registry's ``cache_lru``)."""

    # Seconds content-addressed entries live (manifests and blob descriptors by digest).
    ttl: int = Field(default=3600, ge=1)
    # Seconds mutable entries live (tag -> digest, repository links). Writes through any gateway
    # invalidate them at once; the TTL bounds what a gateway cut off from Redis can leave behind.
    mutable_ttl: int = Field(default=300, ge=1)
    # Largest manifest kept in the cache, in bytes.
    max_item_size: int = Field(default=256 << 10, ge=1024, le=16 << 20)


class LogSettings(_Section):
    # text: one readable line per event. json: one JSON object per line (for log shippers).
    formatter: Literal["text", "json"] = "text"


class MetricsSettings(_Section):
    # Prometheus /metrics on every service's HTTP port.
    enabled: bool = True


class EmailExceptionsSettings(_Section):
    """Mail unhandled exceptions (the classic registry's ``email_exceptions``). Empty smtp_host: off."""

    smtp_host: str = ""
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_login: str = ""
    smtp_password: str = ""
    # STARTTLS after connecting.
    smtp_secure: bool = False
    from_addr: str = "berth@localhost"
    to_addr: list[str] = Field(default_factory=list)
    # Least seconds between two mails from one process; what happens in between is counted and
    # reported in the next mail.
    interval: int = Field(default=300, ge=0)

    @field_validator("to_addr", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [a.strip() for a in value.split(",") if a.strip()] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _recipients(self) -> "EmailExceptionsSettings":
        if self.smtp_host and not self.to_addr:
            raise ValueError("email_exceptions.to_addr: required when smtp_host is set")
        return self


class Settings(_Section):
    loglevel: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log: LogSettings = Field(default_factory=LogSettings)
    # Adds versions and host details to /_ping, as the classic registry did.
    debug: bool = False
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    email_exceptions: EmailExceptionsSettings = Field(default_factory=EmailExceptionsSettings)
    http: HTTPSettings = Field(default_factory=HTTPSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    blobstore: BlobstoreSettings = Field(default_factory=BlobstoreSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    token_service: TokenServiceSettings = Field(default_factory=TokenServiceSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    # Empty: no index, /v1/search answers no results. "sqlalchemy": the search service.
    search_backend: Literal["", "sqlalchemy"] = "sqlalchemy"
    search: SearchSettings = Field(default_factory=SearchSettings)
    # Blob GETs answer 307 to a presigned URL of the store, when its driver has one (s3).
    storage_redirect: bool = False
    # Shared state of replicas (the token service's failed-login counters).
    cache: RedisSettings = Field(default_factory=RedisSettings)
    # The gateways' metadata cache.
    cache_lru: LRUCacheSettings = Field(default_factory=LRUCacheSettings)


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
        value: Any = env[var]
        if _is_list(path):  # REGISTRY_HTTP_TRUSTED_PROXIES=10.0.0.0/8,127.0.0.1
            value = [item.strip() for item in value.split(",") if item.strip()]
        node[path[-1]] = value


def _is_list(path: list[str]) -> bool:
    model: Any = Settings
    for key in path[:-1]:
        model = model.model_fields[key].annotation
    return get_origin(model.model_fields[path[-1]].annotation) is list


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

