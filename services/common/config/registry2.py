"""registry:2's configuration (``version: 0.1``, nested sections) translated onto Berth's keys.

Berth's own keys are registry:2's where both have one (``http.addr``, ``storage.s3.bucket``,
``auth.htpasswd.path``), so most keys pass through. What differs is converted here: the storage
driver and the auth scheme chosen by which section is present (or by ``REGISTRY_STORAGE=s3``,
``REGISTRY_AUTH=htpasswd``), ``log.level``, ``redis`` behind ``storage.cache.blobdescriptor``,
``storage.redirect.disable``, mail log hooks. The table below lists every key of registry:2's
configuration reference and what Berth does with it.

``normalize`` runs on every configuration, whatever its dialect (a Berth file may use registry:2's
shapes); registry:2's own defaults where they differ from Berth's (deletes off, redirects on,
``/var/lib/registry``) apply only to files that say ``version:``.
"""

from __future__ import annotations

from typing import Any

from services.common.config.translation import MISSING, Key, Translation, truthy

LABEL = "registry:2"

SUPPORTED_DRIVERS = ("filesystem", "s3", "inmemory")
OTHER_DRIVERS = ("azure", "gcs", "swift", "oss")
AUTH_SCHEMES = ("htpasswd", "token", "silly")
# Section -> the Berth key that names the section's choice (REGISTRY_STORAGE=s3, REGISTRY_AUTH=token).
SELECTORS = {"storage": "driver", "auth": "type"}

_DRIVERS_NOTE = "Berth's drivers are filesystem, s3 (AWS and S3-compatible stores) and inmemory"
_METRICS_NOTE = "Berth opens no debug listener: /metrics is on every service's own HTTP port"

# One key per row, as the tables of docs/migrating.md read:
# fmt: off
KEYS: tuple[Key, ...] = (
    Key("version", "converted", "", "must be 0.1; marks the file as registry:2's", "0.1"),
    Key("loglevel", "same", "loglevel", "deprecated in registry:2; log.level wins", "warn"),
    Key("log.level", "renamed", "loglevel", "error, warn, info, debug", "warn"),
    Key("log.formatter", "converted", "log.formatter", "text and json; logstash is written as json (with a warning)", "json"),
    Key("log.fields", "same", "log.fields", "added to every line, in both formats", {"service": "registry"}),
    Key("log.accesslog.disabled", "warned", "", "Berth writes access lines only at loglevel debug", True),
    Key("log.hooks", "converted", "email_exceptions", "a mail hook becomes email_exceptions (unhandled exceptions are mailed)",
        [{"type": "mail", "levels": ["panic"], "options": {"smtp": {"addr": "mail.example.com:25", "username": "u", "password": "p"}, "from": "r@example.com", "to": ["ops@example.com"]}}]),
    Key("http.addr", "same", "http.addr", ":5000 means every interface (0.0.0.0:5000)", ":5000"),
    Key("http.net", "converted", "", "tcp; unix sockets are refused", "tcp"),
    Key("http.prefix", "same", "http.prefix", "", "/registry"),
    Key("http.host", "same", "http.host", "", "https://registry.example.com"),
    Key("http.secret", "same", "http.secret", "signs upload state; share it between replicas", "asecretforlocaldevelopment"),
    Key("http.relativeurls", "same", "http.relativeurls", "", True),
    Key("http.draintimeout", "warned", "", "Berth drains connections for up to 10 s on stop", "60s"),
    Key("http.headers", "same", "http.headers", "added to every gateway response", {"X-Content-Type-Options": ["nosniff"]}),
    Key("http.http2.*", "warned", "", "Berth's gateway speaks HTTP/1.1", {"disabled": True}),
    Key("http.h2c.*", "warned", "", "Berth's gateway speaks HTTP/1.1 (no h2c)", {"enabled": False}),
    Key("http.tls.certificate", "same", "http.tls.certificate", "", "/certs/domain.crt"),
    Key("http.tls.key", "same", "http.tls.key", "", "/certs/domain.key"),
    Key("http.tls.clientcas", "same", "http.tls.clientcas", "", ["/certs/ca.pem"]),
    Key("http.tls.minimumtls", "converted", "http.tls.minimumtls", "tls1.2 or tls1.3; tls1.0 and tls1.1 are raised to tls1.2 (with a warning)", "tls1.3"),
    Key("http.tls.ciphersuites", "warned", "", "Berth uses OpenSSL's suites for the TLS version", ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]),
    Key("http.tls.letsencrypt.*", "refused", "", "Berth does not fetch certificates itself: get them with certbot (or a proxy) and set http.tls.certificate and http.tls.key",
        {"email": "me@example.com"}),
    Key("http.debug.addr", "warned", "", _METRICS_NOTE, "localhost:5001"),
    Key("http.debug.prometheus.*", "warned", "", _METRICS_NOTE + " (metrics.enabled)", {"enabled": True, "path": "/metrics"}),
    Key("storage.filesystem.rootdirectory", "same", "storage.filesystem.rootdirectory", "default /var/lib/registry, as in registry:2", "/srv/registry"),
    Key("storage.filesystem.maxthreads", "warned", "", "Berth bounds its own file threads", 100),
    *(Key(f"storage.s3.{k}", "same", f"storage.s3.{k}", "", v) for k, v in (
        ("accesskey", "AKIA..."), ("secretkey", "secret"), ("region", "us-west-1"), ("regionendpoint", "http://minio:9000"),
        ("bucket", "registry"), ("encrypt", True), ("keyid", "kms-key"), ("secure", False), ("skipverify", True),
        ("chunksize", 10 << 20), ("rootdirectory", "/registry"), ("forcepathstyle", True),
        ("multipartcopychunksize", 32 << 20), ("multipartcopymaxconcurrency", 4), ("multipartcopythresholdsize", 64 << 20),
    )),
    Key("storage.s3.v4auth", "warned", "", "boto3 always signs with Signature Version 4", True),
    Key("storage.s3.storageclass", "warned", "", "objects go to the bucket's default storage class", "REDUCED_REDUNDANCY"),
    Key("storage.s3.objectacl", "converted", "", "private is what Berth does; any other ACL is refused", "private"),
    *(Key(f"storage.s3.{k}", "warned", "", "not used by Berth's S3 driver", v) for k, v in (
        ("useragent", "berth"), ("usedualstack", True), ("accelerate", True), ("loglevel", "debug"), ("checksumdisabled", True),
    )),
    Key("storage.inmemory", "converted", "storage.driver", "the in-memory driver (for tests)", {}),
    *(Key(f"storage.{d}.*", "refused", "", _DRIVERS_NOTE, {"accountname": "x"}) for d in OTHER_DRIVERS),
    Key("storage.delete.enabled", "same", "storage.delete.enabled", "off unless set, as in registry:2", True),
    Key("storage.redirect.disable", "converted", "storage_redirect", "storage_redirect is its opposite; redirects are on unless disabled, as in registry:2", True),
    Key("storage.cache.blobdescriptor", "converted", "cache_lru", "redis: the gateways' Redis cache, at the redis section's address; inmemory: Berth's in-process cache, always on", "inmemory"),
    Key("storage.cache.layerinfo", "converted", "cache_lru", "older name of blobdescriptor", "inmemory"),
    Key("storage.cache.blobdescriptorsize", "warned", "", "Berth sizes its in-process cache itself", 10000),
    Key("storage.maintenance.uploadpurging.enabled", "same", "storage.maintenance.uploadpurging.enabled", "each blobstore purges stale uploads (on unless set false, as in registry:2)", False),
    Key("storage.maintenance.uploadpurging.age", "same", "storage.maintenance.uploadpurging.age", "Go duration; uploads (and temporary files a crash left) older than it are removed", "72h"),
    Key("storage.maintenance.uploadpurging.interval", "same", "storage.maintenance.uploadpurging.interval", "Go duration; the first run comes soon after start, with jitter", "12h"),
    Key("storage.maintenance.uploadpurging.dryrun", "same", "storage.maintenance.uploadpurging.dryrun", "only logs what would be removed", True),
    Key("storage.maintenance.readonly.enabled", "same", "storage.maintenance.readonly.enabled", "every write answers 405 UNSUPPORTED", True),
    Key("storage.tag.concurrencylimit", "warned", "", "Berth bounds concurrent storage calls itself", 8),
    Key("auth.htpasswd.realm", "same", "auth.htpasswd.realm", "the section's presence (or REGISTRY_AUTH=htpasswd) sets auth.type", "Registry Realm"),
    Key("auth.htpasswd.path", "same", "auth.htpasswd.path", "bcrypt entries (htpasswd -B)", "/auth/htpasswd"),
    Key("auth.token.realm", "same", "auth.token.realm", "the section's presence (or REGISTRY_AUTH=token) sets auth.type", "https://auth.example.com/token"),
    Key("auth.token.service", "same", "auth.token.service", "", "registry.example.com"),
    Key("auth.token.issuer", "same", "auth.token.issuer", "", "auth.example.com"),
    Key("auth.token.rootcertbundle", "same", "auth.token.rootcertbundle", "", "/certs/token.crt"),
    Key("auth.token.jwks", "same", "auth.token.jwks", "empty unless set (Berth's own default points at its token service)", "https://auth.example.com/jwks"),
    Key("auth.token.autoredirect", "converted", "", "false is what Berth does; true is refused", False),
    Key("auth.token.autoredirectpath", "warned", "", "used only with autoredirect, which Berth does not do", "/auth/token"),
    Key("auth.token.signingalgorithms", "warned", "", "Berth accepts every asymmetric algorithm its keys fit", ["ES256"]),
    Key("auth.silly.*", "refused", "", "silly auth lets in anyone who sends any Authorization header; use htpasswd or token", {"realm": "x", "service": "y"}),
    Key("middleware.*", "refused", "", "registry, repository and storage middleware (CloudFront, redirect, rewrite) is not supported", {"storage": [{"name": "cloudfront"}]}),
    Key("reporting.*", "warned", "", "bugsnag and newrelic reporting is not built in; use email_exceptions or the logs", {"bugsnag": {"apikey": "x"}}),
    Key("notifications.endpoints", "same", "notifications.endpoints", "timeout and backoff take Go durations", [{"name": "a", "url": "http://listener.example.com/events", "timeout": "1s", "backoff": "1s", "threshold": 10}]),
    Key("notifications.events.includereferences", "warned", "", "Berth's events carry no references list", True),
    Key("redis.addr", "converted", "cache_lru.host", "with storage.cache.blobdescriptor: redis; not used otherwise (as in registry:2)", "localhost:6379"),
    Key("redis.password", "converted", "cache_lru.password", "", "pw"),
    Key("redis.db", "converted", "cache_lru.db", "", 1),
    Key("redis.dialtimeout", "converted", "cache_lru.timeout", "the largest of the three timeouts", "10ms"),
    Key("redis.readtimeout", "converted", "cache_lru.timeout", "", "10ms"),
    Key("redis.writetimeout", "converted", "cache_lru.timeout", "", "10ms"),
    Key("redis.pool.*", "converted", "", "Berth sizes its own bounded pool (a warning when used)", {"maxidle": 16}),
    Key("redis.tls.*", "converted", "", "enabled: true is refused (Berth connects to Redis without TLS)", {"enabled": False}),
    Key("health.*", "warned", "", "Berth's /_ready reports its own checks (blobstore, storage); they are not configurable", {"storagedriver": {"enabled": True}}),
    Key("proxy.remoteurl", "same", "proxy.remoteurl", "the upstream registry: Berth becomes its pull-through cache (docs/mirror.md); every repository is mirrored, pushes are refused", "https://registry-1.docker.io"),
    Key("proxy.username", "same", "proxy.username", "", "me"),
    Key("proxy.password", "same", "proxy.password", "", "pw"),
    Key("proxy.ttl", "same", "proxy.ttl", "Go duration; cached content not pulled again within it is removed", "168h"),
    Key("validation.enabled", "warned", "", "Berth always validates manifests", True),
    Key("validation.disabled", "warned", "", "Berth always validates manifests", True),
    Key("validation.manifests.urls.*", "warned", "", "Berth accepts foreign-layer URLs and never fetches them", {"allow": ["^https?://"]}),
    Key("validation.manifests.indexes.platforms", "same", "validation.manifests.indexes.platforms", "all (every child of an index must exist), none, or list", "none"),
    Key("validation.manifests.indexes.platformlist", "same", "validation.manifests.indexes.platformlist", "the platforms whose children must exist with platforms: list",
        [{"os": "linux", "architecture": "amd64", "variant": ""}]),
    Key("compatibility.schema1.enabled", "converted", "", "false is what Berth does; true is refused (schema1 manifests are not accepted)", False),
    Key("compatibility.schema1.signingkeyfile", "warned", "", "Berth signs no schema1 manifests", "/etc/registry/key.json"),
    Key("catalog.maxentries", "warned", "", "Berth's catalog pages hold up to 1000 entries", 1000),
)
# fmt: on


def normalize(t: Translation, *, own_defaults: bool) -> None:
    """Turns registry:2's shapes in ``t.tree`` into Berth's; ``own_defaults`` for a registry:2 file."""
    expand_selectors(t.tree)
    _version(t)
    _log(t)
    _http(t)
    _storage(t, own_defaults)
    _auth(t, own_defaults)
    _redis(t)
    _validation_and_compatibility(t)
    t.apply_table(KEYS, LABEL)


def expand_selectors(tree: dict[str, Any]) -> None:
    """``storage: s3`` / ``auth: htpasswd`` (registry:2's string form, and REGISTRY_STORAGE=s3)."""
    for section, key in SELECTORS.items():
        if isinstance(tree.get(section), str):
            tree[section] = {key: tree[section]}


def _version(t: Translation) -> None:
    version = t.pop("version")
    if version is not MISSING and str(version) != "0.1":
        t.refuse("version", f"Berth reads version 0.1 of registry:2's configuration, not {version!r}")


def _log(t: Translation) -> None:
    if t.get("log.formatter", None) == "logstash":
        t.put("log.formatter", "json", "registry:2 key 'log.formatter' (logstash)")
        t.warn("log.formatter (registry:2): logstash is written as Berth's json lines")
    level = t.pop("log.level")
    if level is not MISSING:
        t.put("loglevel", level, "registry:2 key 'log.level'")
    hooks = t.pop("log.hooks")
    if hooks is MISSING:
        return
    for hook in hooks if isinstance(hooks, list) else [hooks]:
        if not isinstance(hook, dict) or hook.get("type") != "mail":
            t.refuse("log.hooks", "only mail hooks are supported (they become email_exceptions)")
        if hook.get("disabled"):
            continue
        options = hook.get("options") or {}
        smtp = options.get("smtp") or {}
        host, _, port = str(smtp.get("addr", "")).rpartition(":")
        origin = "registry:2 key 'log.hooks'"
        t.put("email_exceptions.smtp_host", host or smtp.get("addr", ""), origin)
        if port:
            t.put("email_exceptions.smtp_port", port, origin)
        for source, target in (("username", "smtp_login"), ("password", "smtp_password")):
            if smtp.get(source):
                t.put(f"email_exceptions.{target}", smtp[source], origin)
        if options.get("from"):
            t.put("email_exceptions.from_addr", options["from"], origin)
        t.put("email_exceptions.to_addr", options.get("to") or [], origin)
        if set(hook.get("levels") or []) - {"panic", "fatal", "error"}:
            t.warn("log.hooks (registry:2): Berth mails unhandled exceptions, not every line of the levels listed")


def _http(t: Translation) -> None:
    net = t.pop("http.net")
    if net is not MISSING and net not in ("tcp", "", None):
        t.refuse("http.net", f"Berth listens on TCP only, not {net!r}")
    minimum = t.get("http.tls.minimumtls", None)
    if minimum in ("tls1.0", "tls1.1"):
        t.put("http.tls.minimumtls", "tls1.2", "registry:2 key 'http.tls.minimumtls'")
        t.warn(f"http.tls.minimumtls (registry:2): {minimum} raised to tls1.2, Berth's lowest")


def _storage(t: Translation, own_defaults: bool) -> None:
    storage = t.get("storage", {})
    if not isinstance(storage, dict):
        t.refuse("storage", "expected a driver name or a section")
    for driver in OTHER_DRIVERS:
        if driver in storage or storage.get("driver") == driver:
            t.refuse(f"storage.{driver}", _DRIVERS_NOTE)
    if "driver" not in storage and own_defaults:  # Berth's files name it (default filesystem)
        present = [d for d in SUPPORTED_DRIVERS if d in storage]
        if len(present) > 1:
            t.refuse("storage", f"one driver section, not several ({', '.join(present)}); or name it with storage.driver")
        if present:
            t.put("storage.driver", present[0], f"registry:2 section 'storage.{present[0]}'")
    inmemory = t.pop("storage.inmemory")
    if inmemory not in (MISSING, None, {}):
        t.refuse("storage.inmemory", "takes no parameters")
    acl = t.pop("storage.s3.objectacl")
    if acl not in (MISSING, "private"):
        t.refuse("storage.s3.objectacl", f"Berth keeps objects private; {acl!r} is not supported")
    disable = t.pop("storage.redirect.disable")
    if disable is not MISSING:
        t.put("storage_redirect", not truthy(disable), "registry:2 key 'storage.redirect.disable'")
    if own_defaults:
        t.set_default("storage.delete.enabled", False, "registry:2's default (deletes off)")
        t.set_default("storage_redirect", True, "registry:2's default (redirects on)")
        if t.get("storage.driver", "filesystem") == "filesystem":
            t.set_default("storage.filesystem.rootdirectory", "/var/lib/registry", "registry:2's default")


def _auth(t: Translation, own_defaults: bool) -> None:
    auth = t.get("auth", {})
    if not isinstance(auth, dict):
        t.refuse("auth", "expected a scheme name or a section")
    scheme = auth.get("type")
    if scheme == "silly" or "silly" in auth:
        t.refuse("auth.silly", "silly auth lets in anyone who sends any Authorization header; use htpasswd or token")
    if scheme is None:
        present = [s for s in ("htpasswd", "token") if s in auth]
        if len(present) > 1:
            t.refuse("auth", f"one scheme, not several ({', '.join(present)}); or name it with auth.type")
        if present:
            t.put("auth.type", present[0], f"registry:2 section 'auth.{present[0]}'")
    if truthy(t.pop("auth.token.autoredirect")):
        t.refuse("auth.token.autoredirect", "Berth sends the configured realm; set auth.token.realm to the URL clients reach")
    if own_defaults and t.get("auth.type", None) == "token":
        t.set_default("auth.token.jwks", "", "registry:2's default (no JWKS)")


def _redis(t: Translation) -> None:
    kinds = {k: t.pop(f"storage.cache.{k}") for k in ("blobdescriptor", "layerinfo")}
    kind = kinds["blobdescriptor"] if kinds["blobdescriptor"] is not MISSING else kinds["layerinfo"]
    if kind not in (MISSING, "inmemory", "redis", "", None):
        t.refuse("storage.cache.blobdescriptor", f"inmemory or redis, not {kind!r}")
    redis = t.pop("redis")
    if kind != "redis":
        if redis is not MISSING:
            t.warn("redis (registry:2): not used, since storage.cache.blobdescriptor is not redis (as in registry:2)")
        return
    if not isinstance(redis, dict) or not (redis.get("addr") or redis.get("addrs")):
        t.refuse("storage.cache.blobdescriptor", "redis needs the redis section's addr")
    if (redis.get("tls") or {}).get("enabled"):
        t.refuse("redis.tls.enabled", "Berth connects to Redis without TLS")
    addr = redis.get("addr") or (redis["addrs"][0] if isinstance(redis["addrs"], list) else redis["addrs"])
    host, _, port = str(addr).rpartition(":")
    origin = "registry:2 key 'redis.addr' (storage.cache.blobdescriptor: redis)"
    t.put("cache_lru.host", host or "localhost", origin)
    if port:
        t.put("cache_lru.port", port, origin)
    for key in ("password", "db"):
        if redis.get(key) not in (None, ""):
            t.put(f"cache_lru.{key}", redis[key], f"registry:2 key 'redis.{key}'")
    timeouts = [redis[k] for k in ("dialtimeout", "readtimeout", "writetimeout") if redis.get(k) not in (None, "")]
    if timeouts:
        from services.common.config.durations import to_seconds

        t.put("cache_lru.timeout", max(float(to_seconds(v)) for v in timeouts), "registry:2 keys 'redis.*timeout'")
    if redis.get("pool"):
        t.warn("redis.pool (registry:2): Berth sizes its own bounded connection pool")


def _validation_and_compatibility(t: Translation) -> None:
    if truthy(t.pop("compatibility.schema1.enabled")):
        t.refuse("compatibility.schema1.enabled", "Berth does not accept schema1 manifests")
