"""The classic Python registry's configuration (0.6-0.9: flat keys in flavors) onto Berth's keys.

Flavors, ``_env:`` values and YAML merge keys are handled by the loader for every dialect; this
module moves the classic flat keys (``storage: s3``, ``storage_path``, ``s3_bucket``,
``boto_host``, top-level ``smtp_host`` ...) onto Berth's nested ones. Keys the classic registry
shares with Berth (``loglevel``, ``debug``, ``cache``, ``cache_lru``, ``email_exceptions``,
``storage_redirect``, ``search_backend``) pass through. ``defaults.yml`` beside this module is the
document Berth reads when no file is given: the classic ``config_sample.yml`` flavors, so its
environment variables (``SETTINGS_FLAVOR=s3 AWS_BUCKET=...``) work without a file.
"""

from __future__ import annotations

from typing import Any

from services.common.config.translation import MISSING, Key, Translation, truthy

LABEL = "classic"

# storage: names of the classic registry (and its community drivers) -> Berth's driver.
DRIVERS = {"local": "filesystem", "file": "filesystem", "filesystem": "filesystem", "s3": "s3", "inmemory": "inmemory"}
_CALLING_FORMATS = {
    "boto.s3.connection.OrdinaryCallingFormat": True,  # http://host/bucket/key
    "boto.s3.connection.SubdomainCallingFormat": False,  # http://bucket.host/key
}
_EMAIL_KEYS = ("smtp_host", "smtp_port", "smtp_login", "smtp_password", "smtp_secure", "from_addr", "to_addr")

# One key per row, as the tables of docs/migrating.md read:
# fmt: off
KEYS: tuple[Key, ...] = (
    Key("loglevel", "same", "loglevel", "debug, info, warn (read as warning), error, critical", "warn"),
    Key("debug", "same", "debug", "versions and host details in /_ping", True),
    Key("storage", "converted", "storage.driver", "local and file are filesystem; s3; inmemory. Other drivers are refused", "local"),
    Key("storage_path", "converted", "storage.filesystem.rootdirectory", "with storage s3: storage.s3.rootdirectory (the key prefix)", "/srv/docker"),
    Key("storage_redirect", "same", "storage_redirect", "blob GETs answer 307 to a presigned S3 URL", True),
    Key("s3_access_key", "renamed", "storage.s3.accesskey", "", "AKIA..."),
    Key("s3_secret_key", "renamed", "storage.s3.secretkey", "", "secret"),
    Key("s3_bucket", "renamed", "storage.s3.bucket", "", "acme-docker"),
    Key("boto_bucket", "converted", "storage.s3.bucket", "must agree with s3_bucket when both are set", "acme-docker"),
    Key("s3_region", "renamed", "storage.s3.region", "", "us-west-1"),
    Key("s3_encrypt", "renamed", "storage.s3.encrypt", "SSE-S3", True),
    Key("s3_secure", "renamed", "storage.s3.secure", "HTTPS to the store", False),
    Key("s3_use_sigv4", "warned", "", "boto3 always signs with Signature Version 4", True),
    Key("boto_host", "converted", "storage.s3.regionendpoint", "with boto_port and s3_secure: http(s)://host:port, path-style addressing", "127.0.0.1"),
    Key("boto_port", "converted", "storage.s3.regionendpoint", "", 9000),
    Key("boto_calling_format", "converted", "storage.s3.forcepathstyle", "OrdinaryCallingFormat: path style; SubdomainCallingFormat: virtual-host style", "boto.s3.connection.OrdinaryCallingFormat"),
    Key("boto_debug", "warned", "", "use loglevel debug", 1),
    Key("standalone", "converted", "", "true is what Berth is (no Docker index); false without disable_token_auth is refused", True),
    Key("disable_token_auth", "converted", "", "Berth never asks the Docker index; choose auth.type (htpasswd or token) for access control", True),
    Key("index_endpoint", "converted", "", "not used by a standalone registry (a warning when standalone is false)", "https://index.docker.io"),
    Key("privileged_key", "renamed", "auth.token.privileged_key", "trusted for token auth: its holder signs tokens with any access (docs/auth.md)", "/etc/registry/privileged.pem"),
    Key("search_backend", "same", "search_backend", "empty: no search; sqlalchemy; or a module path whose Index class is served", "sqlalchemy"),
    Key("sqlalchemy_index_database", "renamed", "search.database", "any SQLAlchemy URL", "sqlite:////tmp/docker-registry.db"),
    Key("mirroring.source", "converted", "proxy.remoteurl", "the upstream registry: Berth becomes its pull-through cache (docs/mirror.md). Empty: mirroring is off", "https://registry-1.docker.io"),
    Key("mirroring.source_index", "converted", "", "the v1 index is not used (a warning when mirroring is on)", "https://index.docker.io"),
    Key("mirroring.tags_cache_ttl", "converted", "proxy.tag_ttl", "seconds a tag's digest is trusted (when mirroring is on)", 172800),
    *(Key(f"{section}.{k}", "same", f"{section}.{k}", "", v) for section in ("cache", "cache_lru")
      for k, v in (("host", "localhost"), ("port", 6379), ("db", 0), ("password", "pw"))),
    *(Key(f"email_exceptions.{k}", "same", f"email_exceptions.{k}", "", v) for k, v in (
        ("smtp_host", "localhost"), ("smtp_port", 25), ("smtp_login", "me"), ("smtp_password", "pw"),
        ("smtp_secure", False), ("from_addr", "docker@myself.com"), ("to_addr", "my@myself.com"))),
    *(Key(k, "renamed", f"email_exceptions.{k}", "top-level form of the README's example", v) for k, v in (
        ("smtp_host", "localhost"), ("smtp_port", 25), ("smtp_login", "me"), ("smtp_password", "pw"),
        ("smtp_secure", False), ("from_addr", "docker@myself.com"), ("to_addr", "my@myself.com"))),
    Key("secret_key", "renamed", "http.secret", "", "a-long-random-secret"),
    Key("bugsnag", "warned", "", "bugsnag reporting is not built in; use email_exceptions or the logs", "apikey"),
    Key("issue", "warned", "", "Berth reports its own version in /_ping (debug: true)", '"docker-registry server"'),
    Key("cors.origins", "converted", "", "origins are refused: Berth sends no CORS headers (add them at a proxy); without origins CORS is off, as in the classic registry",
        ""),
    Key("cors.*", "converted", "", "the other CORS keys mean nothing without origins", {"headers": "[Content-Type]"}),
    Key("debug_versions", "warned", "", "debug: true puts versions in /_ping", True),
)
# fmt: on

# Keys only the classic registry has: their presence makes a file classic.
MARKERS = frozenset(k.path[0] for k in KEYS if k.treatment != "same") - {"storage"}


def is_classic(tree: dict[str, Any]) -> bool:
    return any(k in tree for k in MARKERS) or isinstance(tree.get("storage"), str)


def translate(t: Translation) -> None:
    """Moves the classic keys of ``t.tree`` onto Berth's."""
    _auth(t)
    _storage(t)
    _mirroring(t)
    cors = t.pop("cors")
    if isinstance(cors, dict) and cors.get("origins"):
        t.refuse("cors.origins", "Berth sends no CORS headers; add them at a proxy in front of it")
    # Top-level mail keys (the 0.9 README's example) into email_exceptions, which then validates them.
    for key in _EMAIL_KEYS:
        value = t.pop(key)
        if value is not MISSING:
            t.put(f"email_exceptions.{key}", value, t.label(LABEL, key))
    t.apply_table(KEYS, LABEL)


def _auth(t: Translation) -> None:
    standalone = t.pop("standalone")
    no_token_auth = t.pop("disable_token_auth")
    index = t.pop("index_endpoint")
    if standalone is not MISSING and not truthy(standalone):
        if not truthy(no_token_auth):
            t.refuse(
                "standalone",
                "false asks the Docker index to check every login, which Berth cannot do: "
                "set standalone: true and protect the registry with auth.type htpasswd or token",
            )
        if index is not MISSING:
            t.warn("index_endpoint (classic): Berth never asks a Docker index")


def _storage(t: Translation) -> None:
    kind = t.get("storage", MISSING)
    if isinstance(kind, str):
        driver = DRIVERS.get(kind.strip().lower())
        if driver is None:
            t.refuse("storage", f"driver {kind!r} is not supported: Berth's are local (file), s3 and inmemory")
        t.put("storage", {"driver": driver}, t.label(LABEL, "storage"))
    driver = t.get("storage.driver", "filesystem")
    path = t.pop("storage_path")
    if path is not MISSING:
        target = "storage.s3.rootdirectory" if driver == "s3" else "storage.filesystem.rootdirectory"
        t.put(target, path, t.label(LABEL, "storage_path"))
    bucket, boto_bucket = t.get("s3_bucket", None), t.pop("boto_bucket")
    if boto_bucket not in (MISSING, None, ""):
        if bucket not in (None, "") and bucket != boto_bucket:
            t.refuse("boto_bucket", f"names another bucket ({boto_bucket!r}) than s3_bucket ({bucket!r})")
        t.put("storage.s3.bucket", boto_bucket, t.label(LABEL, "boto_bucket"))
    host, port, fmt = t.pop("boto_host"), t.pop("boto_port"), t.pop("boto_calling_format")
    if host not in (MISSING, None, ""):
        secure = truthy(t.get("s3_secure", True))
        scheme = "https" if secure else "http"
        endpoint = f"{scheme}://{host}" + (f":{port}" if port not in (MISSING, None, "") else "")
        t.put("storage.s3.regionendpoint", endpoint, "classic keys 'boto_host', 'boto_port', 's3_secure'")
        t.set_default("storage.s3.forcepathstyle", True, "classic key 'boto_host' (S3-compatible stores use path style)")
    if fmt not in (MISSING, None, ""):
        if fmt not in _CALLING_FORMATS:
            t.refuse("boto_calling_format", f"one of {', '.join(_CALLING_FORMATS)}")
        t.put("storage.s3.forcepathstyle", _CALLING_FORMATS[fmt], "classic key 'boto_calling_format'")


def _mirroring(t: Translation) -> None:
    mirroring = t.pop("mirroring")
    if not isinstance(mirroring, dict) or not mirroring.get("source"):
        return  # no source: mirroring is off, whatever else the section says
    t.put("proxy.remoteurl", mirroring["source"], t.label(LABEL, "mirroring.source"))
    if mirroring.get("tags_cache_ttl") is not None:
        t.put("proxy.tag_ttl", mirroring["tags_cache_ttl"], t.label(LABEL, "mirroring.tags_cache_ttl"))
    if mirroring.get("source_index"):
        t.warn("mirroring.source_index (classic): the v1 index is not used")
