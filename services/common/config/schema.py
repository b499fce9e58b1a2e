"""Berth's configuration schema: the one truth about which keys exist, their types and defaults.

Every dialect (Berth's own, the classic registry's flat keys, registry:2's nested ones) is
translated onto these models before validation (``loader``); services read only ``Settings``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from services.common.config.durations import to_seconds

# Seconds; a number, or a Go duration as registry:2 writes them ("1s", "500ms", "1m30s", "168h").
Seconds = Annotated[float, BeforeValidator(to_seconds)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _check_addr(value: str) -> str:
    """host:port; registry:2's ``:5000`` (every interface) is read as ``0.0.0.0:5000``."""
    host, sep, port = value.rpartition(":")
    if sep and not host:
        host = "0.0.0.0"
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return f"{host}:{port}"


def _is_loopback(addr: str) -> bool:
    """Whether a listening ``host:port`` is reachable from this machine only."""
    return addr.rpartition(":")[0].strip("[]") in ("127.0.0.1", "localhost", "::1")


class TLSSettings(_Section):
    """HTTPS for an HTTP service (registry:2's ``http.tls``); empty certificate: plain HTTP."""

    certificate: str = ""
    key: str = ""
    # PEM bundle of CAs whose client certificates are required (mutual TLS); empty: none asked.
    clientcas: list[str] = Field(default_factory=list)
    minimumtls: Literal["tls1.2", "tls1.3"] = "tls1.2"

    @model_validator(mode="after")
    def _pair(self) -> TLSSettings:
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
    # Location headers as paths (/v2/...) rather than absolute URLs (registry:2's relativeurls).
    relativeurls: bool = False
    # Added to every response of the gateway (registry:2's http.headers).
    headers: dict[str, list[str]] = Field(default_factory=dict)

    _addr = field_validator("addr")(_check_addr)

    @field_validator("headers", mode="before")
    @classmethod
    def _header_values(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value

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
    # Do not verify the store's TLS certificate (a test store with a self-signed certificate).
    skipverify: bool = False
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

    @model_validator(mode="after")
    def _credentials(self) -> S3Settings:
        if bool(self.accesskey) != bool(self.secretkey):
            missing = "accesskey" if self.secretkey else "secretkey"
            raise ValueError(f"storage.s3.{missing}: accesskey and secretkey go together (or leave both empty for the AWS chain)")
        return self


class ReadOnlySettings(_Section):
    # Every write answers 405 UNSUPPORTED; pulls, listings and search keep working.
    enabled: bool = False


class UploadPurgingSettings(_Section):
    """registry:2's ``storage.maintenance.uploadpurging``: each blobstore removes upload sessions
    (and temporary files a crash left) older than ``age``, every ``interval``."""

    enabled: bool = True
    age: Seconds = Field(default=168 * 3600, gt=0)
    interval: Seconds = Field(default=24 * 3600, gt=0)
    # Only log what would be removed.
    dryrun: bool = False


class GCSettings(_Section):
    """Online garbage collection run by the blobstore on a schedule (``berth garbage-collect`` runs it once)."""

    enabled: bool = False
    interval: Seconds = Field(default=24 * 3600, gt=0)
    # Blobs (and repository links) younger than this are never collected: a push in flight
    # uploads its blobs before the manifest that references them.
    delay: Seconds = Field(default=3600, ge=0)


class MaintenanceSettings(_Section):
    readonly: ReadOnlySettings = Field(default_factory=ReadOnlySettings)
    uploadpurging: UploadPurgingSettings = Field(default_factory=UploadPurgingSettings)
    gc: GCSettings = Field(default_factory=GCSettings)


class StorageSettings(_Section):
    driver: Literal["filesystem", "inmemory", "s3"] = "filesystem"
    filesystem: FilesystemSettings = Field(default_factory=FilesystemSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    delete: DeleteSettings = Field(default_factory=DeleteSettings)
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)

    @model_validator(mode="after")
    def _driver_complete(self) -> StorageSettings:
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
    # The shared secret of security "token" (at least 16 characters); also what the search service
    # asks POST /events for when search.security is token.
    token: str = ""
    tls: BlobstoreTLSSettings = Field(default_factory=BlobstoreTLSSettings)
    # HTTP listener for /metrics, /_ping and /_ready (probes), and for blob reads by signed URL
    # (public_url); empty: none.
    http_addr: str = "127.0.0.1:5004"
    # Where clients reach http_addr (http://blobstore.example:5004). With storage_redirect, the
    # gateway answers GETs of blobs of 1 MiB and more on local storage (filesystem) with a signed
    # redirect valid for url_expiry seconds; the blobstore sends the file with sendfile. Replicas
    # behind one URL need the same http.secret or blobstore.token (the signing key). Empty: blob
    # bytes always pass through the gateway.
    public_url: str = ""
    url_expiry: int = Field(default=300, ge=10, le=86400)

    _addr = field_validator("addr")(_check_addr)

    @field_validator("http_addr")
    @classmethod
    def _http_addr(cls, value: str) -> str:
        return _check_addr(value) if value else value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", value):
            raise ValueError("expected an http:// or https:// URL (http://blobstore.example:5004)")
        return value.rstrip("/")

    @property
    def connect_to(self) -> str:
        return self.target or self.addr

    @property
    def effective_security(self) -> str:
        """The security mode in force: ``auto`` resolved from the listening address."""
        if self.security != "auto":
            return self.security
        return "none" if _is_loopback(self.addr) else "token"

    @model_validator(mode="after")
    def _security_complete(self) -> BlobstoreSettings:
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
        if self.public_url and not self.http_addr:
            raise ValueError("blobstore.public_url: the blobstore serves signed blob reads on http_addr, which is empty")
        return self


class Platform(_Section):
    os: str
    architecture: str
    variant: str = ""


class IndexValidationSettings(_Section):
    """Which children of a pushed index must exist (registry:2 3.x): all of them, none, or those
    whose platform is in ``platformlist``."""

    platforms: Literal["all", "none", "list"] = "all"
    platformlist: list[Platform] = Field(default_factory=list)

    @model_validator(mode="after")
    def _listed(self) -> IndexValidationSettings:
        if self.platforms == "list" and not self.platformlist:
            raise ValueError("validation.manifests.indexes.platformlist: required when platforms is list")
        return self


class ManifestValidationSettings(_Section):
    # Accept image manifests whose config and layers, and indexes whose children, were never
    # pushed (the spec allows it); they are served byte for byte, and missing content is 404.
    sparse: bool = False
    indexes: IndexValidationSettings = Field(default_factory=IndexValidationSettings)


class ValidationSettings(_Section):
    manifests: ManifestValidationSettings = Field(default_factory=ManifestValidationSettings)


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
    # the realm (http://host/token -> http://host/authorize). The gateway also asks the /token next
    # to it for a token when /v1/search comes with Basic credentials (docker search), so set it to
    # the token service as the gateways reach it when the realm is a public URL.
    authorize: str = ""
    # A PEM public key (the classic registry's privileged_key) trusted like rootcertbundle's keys:
    # whoever holds its private key signs their own tokens, with any access they write into them.
    privileged_key: str = ""

    @property
    def authorize_url(self) -> str:
        return self.authorize or self.realm.rsplit("/", 1)[0] + "/authorize"

    @property
    def token_url(self) -> str:
        """The token service's /token as the gateway reaches it: next to ``authorize_url``."""
        return self.authorize_url.rsplit("/", 1)[0] + "/token"


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
    timeout: Seconds = Field(default=5.0, gt=0)
    # Failures in a row before the endpoint counts as down (and backs off).
    threshold: int = Field(default=5, ge=1)
    # Seconds to wait between retries while down (doubles up to 60 s).
    backoff: Seconds = Field(default=1.0, gt=0)
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
    # Who may POST /events (registry notifications). auto: "token" when the search service listens
    # on anything but loopback (addr), "none" on loopback. token: senders must present
    # blobstore.token as "Authorization: Bearer <token>" (gateways do; registry:2 through its
    # endpoint's headers). none: anyone who reaches the port.
    security: Literal["auto", "none", "token"] = "auto"

    _addr = field_validator("addr")(_check_addr)

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/") or f"http://{self.addr}"

    @property
    def effective_security(self) -> str:
        """The mode in force: ``auto`` resolved from the listening address, as for the blobstore."""
        if self.security != "auto":
            return self.security
        return "none" if _is_loopback(self.addr) else "token"


class RedisSettings(_Section):
    """A Redis server. Empty host: not used."""

    host: str = ""
    port: int = Field(default=6379, ge=1, le=65535)
    password: str = ""
    db: int = Field(default=0, ge=0)
    # Seconds to wait on one Redis call before treating Redis as down (and serving without it).
    timeout: Seconds = Field(default=0.25, gt=0, le=30)

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
    # Added to every line (registry:2's log.fields), e.g. {environment: production}.
    fields: dict[str, str] = Field(default_factory=dict)


_PREFIX = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*/")


def _check_remoteurl(value: str) -> str:
    value = value.strip().rstrip("/")
    if value and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
        raise ValueError(f"expected an http(s):// URL of a registry, got {value!r}")
    return value


class UpstreamSettings(_Section):
    """One mirrored registry, serving the repositories under ``prefix`` (``dockerhub/``:
    ``dockerhub/library/alpine`` is the upstream's ``library/alpine``)."""

    prefix: str
    remoteurl: str
    username: str = ""
    password: str = ""
    # Cached content expires after this long unless pulled again.
    ttl: Seconds = Field(default=168 * 3600, ge=0)
    # How long a tag's digest is trusted without asking the upstream; 0: ask on every pull by tag.
    tag_ttl: Seconds = Field(default=0, ge=0)

    _url = field_validator("remoteurl")(_check_remoteurl)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip().strip("/") + "/"
        if not _PREFIX.fullmatch(value):
            raise ValueError(f"expected repository name components ending in '/' (dockerhub/), got {value!r}")
        return value

    @model_validator(mode="after")
    def _url_required(self) -> UpstreamSettings:
        if not self.remoteurl:
            raise ValueError("remoteurl: required for every upstream")
        return self


class ProxySettings(_Section):
    """A pull-through cache of other registries (registry:2's ``proxy``, the classic ``mirroring``).

    ``remoteurl`` mirrors one registry for every repository (registry:2's behaviour: no pushes at
    all); ``upstreams`` mirror several, each under its repository prefix, next to local
    repositories that take pushes as usual."""

    remoteurl: str = ""
    username: str = ""
    password: str = ""
    # Cached content expires after this long unless pulled again.
    ttl: Seconds = Field(default=168 * 3600, ge=0)
    # How long a tag's digest is trusted without asking the upstream (classic tags_cache_ttl).
    tag_ttl: Seconds = Field(default=0, ge=0)
    upstreams: list[UpstreamSettings] = Field(default_factory=list)
    # Seconds an upstream may take to connect or to send the next bytes before it counts as down
    # (a cached tag is then served stale; an uncached image is 503).
    timeout: Seconds = Field(default=10, gt=0, le=600)
    # Seconds between two purges of expired mirrored content (run by the blobstore).
    purge_interval: Seconds = Field(default=600, gt=0)

    _url = field_validator("remoteurl")(_check_remoteurl)

    @model_validator(mode="after")
    def _distinct(self) -> ProxySettings:
        prefixes = [u.prefix for u in self.upstreams]
        for prefix in prefixes:
            if prefixes.count(prefix) > 1:
                raise ValueError(f"upstreams: the prefix {prefix!r} is listed twice")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.remoteurl or self.upstreams)

    def all_upstreams(self) -> list[UpstreamSettings]:
        """Every mirrored registry, longest prefix first; ``remoteurl`` is the catch-all (prefix '')."""
        found = sorted(self.upstreams, key=lambda u: len(u.prefix), reverse=True)
        if self.remoteurl:
            found.append(
                UpstreamSettings.model_construct(
                    prefix="",
                    remoteurl=self.remoteurl,
                    username=self.username,
                    password=self.password,
                    ttl=self.ttl,
                    tag_ttl=self.tag_ttl,
                )
            )
        return found


_LOG_LEVELS = {"warn": "warning", "fatal": "critical", "panic": "critical", "trace": "debug"}
_MODULE_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _log_level(value: Any) -> Any:
    """Python's names, and the classic registry's and registry:2's (``warn``, ``fatal``, ``panic``)."""
    if isinstance(value, str):
        value = value.strip().lower()
        return _LOG_LEVELS.get(value, value)
    return value


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
    def _recipients(self) -> EmailExceptionsSettings:
        if self.smtp_host and not self.to_addr:
            raise ValueError("email_exceptions.to_addr: required when smtp_host is set")
        return self


class Settings(_Section):
    loglevel: Annotated[Literal["debug", "info", "warning", "error", "critical"], BeforeValidator(_log_level)] = "info"
    log: LogSettings = Field(default_factory=LogSettings)
    # Adds versions and host details to /_ping, as the classic registry did.
    debug: bool = False
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    email_exceptions: EmailExceptionsSettings = Field(default_factory=EmailExceptionsSettings)
    http: HTTPSettings = Field(default_factory=HTTPSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    blobstore: BlobstoreSettings = Field(default_factory=BlobstoreSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    token_service: TokenServiceSettings = Field(default_factory=TokenServiceSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    # Empty: no index, /v1/search answers no results. "sqlalchemy": the search service's SQL index.
    # A dotted module path (my.search.module): the search service serves that module's Index class.
    search_backend: str = "sqlalchemy"
    search: SearchSettings = Field(default_factory=SearchSettings)
    # Blob GETs answer 307 to a presigned URL of the store, when its driver has one (s3).
    storage_redirect: bool = False
    # Shared state of replicas (the token service's failed-login counters).
    cache: RedisSettings = Field(default_factory=RedisSettings)
    # The gateways' metadata cache.
    cache_lru: LRUCacheSettings = Field(default_factory=LRUCacheSettings)
    proxy: ProxySettings = Field(default_factory=ProxySettings)

    # Said about the configuration while loading it (keys accepted but without effect); printed
    # once at start by the command line.
    _warnings: list[str] = PrivateAttr(default_factory=list)
    # Which form the file was read as: berth, classic or registry2.
    _dialect: str = PrivateAttr(default="berth")

    @field_validator("search_backend")
    @classmethod
    def _search_backend(cls, value: str) -> str:
        if value not in ("", "sqlalchemy") and not _MODULE_PATH.fullmatch(value):
            raise ValueError("expected '', 'sqlalchemy' or a dotted module path with an Index class (my.search.index)")
        return value

    @property
    def warnings(self) -> list[str]:
        return self._warnings

    @property
    def dialect(self) -> str:
        return self._dialect

    @property
    def search_service(self) -> bool:
        """Whether the search service runs (any backend but none)."""
        return bool(self.search_backend)
