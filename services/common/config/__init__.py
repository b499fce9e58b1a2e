"""Berth's configuration: one YAML file (Berth's own keys, the classic registry's or registry:2's),
flavors, ``_env:`` values and ``REGISTRY_*`` overrides, validated into ``Settings``.

    schema       the keys, types and defaults (the one truth)
    loader       file, flavor, _env: values, then translation and validation
    classic      the classic registry's flat keys (and defaults.yml, used without a file)
    registry2    registry:2's nested keys and section selectors
    environment  REGISTRY_<SECTION>_<KEY> overrides
    ports        internal listeners off the ports a file uses for other things
"""

from services.common.config.errors import ConfigError
from services.common.config.loader import DEFAULT_FLAVOR, load
from services.common.config.schema import (
    AuthSettings,
    BlobstoreSettings,
    BlobstoreTLSSettings,
    DeleteSettings,
    EmailExceptionsSettings,
    EndpointIgnoreSettings,
    FilesystemSettings,
    HtpasswdAuthSettings,
    HTTPSettings,
    IndexValidationSettings,
    LimitsSettings,
    LogSettings,
    LRUCacheSettings,
    MaintenanceSettings,
    ManifestValidationSettings,
    MetricsSettings,
    NotificationEndpoint,
    NotificationSettings,
    Platform,
    ProxySettings,
    RateLimitSettings,
    ReadOnlySettings,
    RedisSettings,
    S3Settings,
    SearchSettings,
    Settings,
    StorageSettings,
    TLSSettings,
    TokenAuthSettings,
    TokenServiceSettings,
    ValidationSettings,
)

__all__ = [
    "DEFAULT_FLAVOR",
    "ConfigError",
    "load",
    "TLSSettings",
    "HTTPSettings",
    "FilesystemSettings",
    "DeleteSettings",
    "S3Settings",
    "ReadOnlySettings",
    "MaintenanceSettings",
    "StorageSettings",
    "BlobstoreTLSSettings",
    "BlobstoreSettings",
    "LimitsSettings",
    "ValidationSettings",
    "ManifestValidationSettings",
    "IndexValidationSettings",
    "Platform",
    "HtpasswdAuthSettings",
    "TokenAuthSettings",
    "AuthSettings",
    "RateLimitSettings",
    "TokenServiceSettings",
    "EndpointIgnoreSettings",
    "NotificationEndpoint",
    "NotificationSettings",
    "SearchSettings",
    "RedisSettings",
    "LRUCacheSettings",
    "LogSettings",
    "ProxySettings",
    "MetricsSettings",
    "EmailExceptionsSettings",
    "Settings",
]
