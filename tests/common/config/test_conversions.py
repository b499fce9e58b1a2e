"""What each dialect's conversions produce, key by key, and the refusals that keep a registry closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common import config


def load(tmp_path: Path, doc: dict[str, Any] | str, **environ: str) -> config.Settings:
    path = tmp_path / "config.yml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return config.load(path, environ=environ)


# --- classic ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("storage", "driver"), [("local", "filesystem"), ("file", "filesystem"), ("s3", "s3"), ("inmemory", "inmemory")])
def test_classic_storage_names_choose_the_driver_and_storage_path_follows_it(tmp_path: Path, storage: str, driver: str) -> None:
    settings = load(tmp_path, {"storage": storage, "storage_path": "/srv/docker", "s3_bucket": "b"})
    assert settings.dialect == "classic"
    assert settings.storage.driver == driver
    if driver == "s3":
        assert settings.storage.s3.rootdirectory == "/srv/docker"
        assert settings.storage.filesystem.rootdirectory == "./data/registry"
    elif driver == "filesystem":
        assert settings.storage.filesystem.rootdirectory == "/srv/docker"


def test_classic_s3_keys_and_an_s3_compatible_endpoint(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        {
            "storage": "s3",
            "s3_bucket": "acme",
            "boto_bucket": "acme",
            "s3_region": "eu-west-1",
            "s3_encrypt": "true",
            "s3_secure": "false",
            "s3_access_key": "AKIA",
            "s3_secret_key": "secret",
            "boto_host": "ceph.local",
            "boto_port": 7480,
        },
    )
    s3 = settings.storage.s3
    assert (s3.bucket, s3.region, s3.encrypt, s3.secure, s3.accesskey, s3.secretkey) == ("acme", "eu-west-1", True, False, "AKIA", "secret")
    assert s3.regionendpoint == "http://ceph.local:7480" and s3.forcepathstyle is True
    virtual = load(
        tmp_path,
        {
            "storage": "s3",
            "s3_bucket": "acme",
            "boto_host": "s3.example.com",
            "boto_calling_format": "boto.s3.connection.SubdomainCallingFormat",
        },
    )
    assert virtual.storage.s3.regionendpoint == "https://s3.example.com" and virtual.storage.s3.forcepathstyle is False


def test_classic_top_level_mail_keys_become_email_exceptions(tmp_path: Path) -> None:
    settings = load(tmp_path, {"smtp_host": "localhost", "from_addr": "docker@myself.com", "to_addr": "my@myself.com", "storage": "local"})
    mail = settings.email_exceptions
    assert (mail.smtp_host, mail.from_addr, mail.to_addr) == ("localhost", "docker@myself.com", ["my@myself.com"])


def test_classic_search_keys(tmp_path: Path) -> None:
    settings = load(
        tmp_path, {"common": {"search_backend": "sqlalchemy", "sqlalchemy_index_database": "sqlite:////tmp/docker-registry.db"}}
    )
    assert settings.search_backend == "sqlalchemy" and settings.search.database == "sqlite:////tmp/docker-registry.db"
    assert load(tmp_path, {"common": {"search_backend": "foo.registry.index.xapian"}}).search_backend == "foo.registry.index.xapian"
    off = load(tmp_path, {"common": {"standalone": True, "search_backend": "_env:SEARCH_BACKEND:"}})
    assert off.search_backend == "" and not off.search_service


def test_classic_loglevel_warn_and_privileged_key(tmp_path: Path) -> None:
    settings = load(tmp_path, {"loglevel": "warn", "privileged_key": "/etc/registry/privileged.pem", "standalone": True})
    assert settings.loglevel == "warning"
    assert settings.auth.token.privileged_key == "/etc/registry/privileged.pem"


def test_classic_mirroring_without_a_source_is_off_and_with_one_is_the_pull_through_cache(tmp_path: Path) -> None:
    off = load(tmp_path, {"common": {"mirroring": {"source": "_env:MIRROR_SOURCE", "tags_cache_ttl": 172800}}})
    assert off.proxy.remoteurl == "" and not off.proxy.enabled
    on = load(tmp_path, {"common": {"mirroring": {"source": "https://registry-1.docker.io/", "tags_cache_ttl": 600}}})
    assert (on.proxy.remoteurl, on.proxy.tag_ttl, on.proxy.enabled) == ("https://registry-1.docker.io", 600, True)
    [only] = on.proxy.all_upstreams()
    assert (only.prefix, only.remoteurl, only.tag_ttl) == ("", "https://registry-1.docker.io", 600)


def test_classic_mirror_source_environment_forms(tmp_path: Path) -> None:
    settings = config.load(None, environ={"MIRROR_SOURCE": "http://127.0.0.1:5999", "MIRROR_TAGS_CACHE_TTL": "30"})
    assert (settings.proxy.remoteurl, settings.proxy.tag_ttl) == ("http://127.0.0.1:5999", 30)


def test_proxy_upstreams_by_prefix(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        {
            "proxy": {
                "upstreams": [
                    {"prefix": "dockerhub", "remoteurl": "https://registry-1.docker.io", "ttl": "24h"},
                    {"prefix": "ghcr/org/team/", "remoteurl": "https://ghcr.io", "username": "u", "password": "p", "tag_ttl": "5m"},
                ]
            }
        },
    )
    first, second = settings.proxy.all_upstreams()
    assert (first.prefix, first.tag_ttl) == ("ghcr/org/team/", 300)
    assert (second.prefix, second.ttl) == ("dockerhub/", 86400)
    for bad, named in (
        ({"prefix": "Bad Prefix", "remoteurl": "https://x"}, "prefix"),
        ({"prefix": "a/", "remoteurl": "ftp://x"}, "remoteurl"),
        ({"prefix": "a/"}, "remoteurl"),
    ):
        with pytest.raises(config.ConfigError, match=named):
            load(tmp_path, {"proxy": {"upstreams": [bad]}})


@pytest.mark.parametrize(
    ("doc", "named"),
    [
        ({"storage": "gcs"}, "'storage'"),
        ({"storage": "swift", "storage_path": "/x"}, "'storage'"),
        ({"standalone": False}, "'standalone'"),
        ({"standalone": "false", "index_endpoint": "https://index.docker.io"}, "'standalone'"),
        ({"storage": "s3", "s3_bucket": "a", "boto_bucket": "b"}, "'boto_bucket'"),
        ({"storage": "local", "loglevel": "loud"}, "'loglevel'"),
        ({"storage": "s3", "s3_bucket": "a", "s3_encrypt": "maybe"}, "'storage.s3.encrypt' (from classic key 's3_encrypt')"),
        ({"storage": "local", "cors": {"origins": ["*"]}}, "'cors.origins'"),
        ({"storage": "local", "stroage_path": "/x"}, "'stroage_path'"),
    ],
)
def test_bad_classic_configurations_name_the_key(tmp_path: Path, doc: dict[str, Any], named: str) -> None:
    with pytest.raises(config.ConfigError) as refused:
        load(tmp_path, {"common": doc} if "standalone" not in doc else doc)
    assert named in str(refused.value)


# --- registry:2 -------------------------------------------------------------------------------


def test_registry2_defaults_differ_where_registry2_does(tmp_path: Path) -> None:
    settings = load(tmp_path, {"version": 0.1, "storage": {"filesystem": {}}})
    assert settings.dialect == "registry2"
    assert settings.storage.delete.enabled is False  # registry:2 refuses deletes unless enabled
    assert settings.storage_redirect is True
    assert settings.storage.filesystem.rootdirectory == "/var/lib/registry"
    # A Berth file keeps Berth's defaults.
    berth = load(tmp_path, {"storage": {"filesystem": {}}})
    assert (berth.storage.delete.enabled, berth.storage_redirect, berth.dialect) == (True, False, "berth")


def test_registry2_driver_and_auth_are_chosen_by_their_sections(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        {
            "version": "0.1",
            "storage": {"s3": {"bucket": "b", "region": "us-west-1"}, "delete": {"enabled": True}, "redirect": {"disable": True}},
            "auth": {"htpasswd": {"realm": "Registry Realm", "path": "/auth/htpasswd"}},
        },
    )
    assert settings.storage.driver == "s3" and settings.storage.s3.region == "us-west-1"
    assert settings.storage.delete.enabled is True and settings.storage_redirect is False
    assert settings.auth.type == "htpasswd" and settings.auth.htpasswd.realm == "Registry Realm"
    token = load(
        tmp_path,
        {
            "version": "0.1",
            "auth": {"token": {"realm": "https://auth/token", "service": "reg", "issuer": "iss", "rootcertbundle": "/certs/bundle.pem"}},
        },
    )
    assert token.auth.type == "token" and token.auth.token.jwks == ""  # registry:2 has no JWKS default
    assert load(tmp_path, {"version": "0.1", "storage": {"inmemory": None}}).storage.driver == "inmemory"


def test_registry2_log_http_notifications_and_durations(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        {
            "version": "0.1",
            "log": {"level": "warn", "formatter": "logstash", "fields": {"service": "registry"}},
            "http": {
                "addr": ":5000",
                "secret": "s",
                "relativeurls": True,
                "headers": {"X-Content-Type-Options": ["nosniff"]},
                "tls": {"certificate": "/c", "key": "/k", "minimumtls": "tls1.0"},
            },
            "notifications": {
                "endpoints": [{"name": "n", "url": "http://hook.example/x", "timeout": "1m30s", "backoff": "500ms", "threshold": 10}]
            },
        },
    )
    assert settings.loglevel == "warning" and settings.log.formatter == "json" and settings.log.fields == {"service": "registry"}
    assert (
        settings.http.addr == "0.0.0.0:5000"
        and settings.http.relativeurls
        and settings.http.headers == {"X-Content-Type-Options": ["nosniff"]}
    )
    assert settings.http.tls.minimumtls == "tls1.2"
    endpoint = settings.notifications.endpoints[0]
    assert (endpoint.timeout, endpoint.backoff, endpoint.threshold) == (90.0, 0.5, 10)
    assert any("logstash" in w for w in settings.warnings) and any("tls1.0" in w for w in settings.warnings)


def test_registry2_redis_feeds_the_cache_only_behind_blobdescriptor_redis(tmp_path: Path) -> None:
    redis = {
        "addr": "redis.local:6380",
        "password": "pw",
        "db": 2,
        "dialtimeout": "10ms",
        "readtimeout": "20ms",
        "writetimeout": "15ms",
        "pool": {"maxidle": 16},
    }
    used = load(tmp_path, {"version": "0.1", "storage": {"cache": {"blobdescriptor": "redis"}}, "redis": redis})
    lru = used.cache_lru
    assert (lru.host, lru.port, lru.password, lru.db, lru.timeout) == ("redis.local", 6380, "pw", 2, 0.02)
    unused = load(tmp_path, {"version": "0.1", "storage": {"cache": {"layerinfo": "inmemory"}}, "redis": redis})
    assert unused.cache_lru.host == "" and any(w.startswith("redis") for w in unused.warnings)


def test_registry2_mail_hook_becomes_email_exceptions(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        {
            "version": "0.1",
            "log": {
                "hooks": [
                    {
                        "type": "mail",
                        "levels": ["panic"],
                        "options": {
                            "smtp": {"addr": "mail.example.com:587", "username": "me", "password": "pw"},
                            "from": "reg@example.com",
                            "to": ["ops@example.com"],
                        },
                    }
                ]
            },
        },
    )
    mail = settings.email_exceptions
    assert (mail.smtp_host, mail.smtp_port, mail.smtp_login, mail.from_addr, mail.to_addr) == (
        "mail.example.com",
        587,
        "me",
        "reg@example.com",
        ["ops@example.com"],
    )


@pytest.mark.parametrize(
    ("doc", "named"),
    [
        ({"auth": {"silly": {"realm": "x", "service": "y"}}}, "'auth.silly'"),
        ({"auth": {"htpasswd": {"path": "/a"}, "token": {"realm": "r"}}}, "'auth'"),
        ({"storage": {"azure": {"accountname": "x"}}}, "'storage.azure'"),
        ({"storage": {"filesystem": {}, "s3": {"bucket": "b"}}}, "'storage'"),
        ({"http": {"tls": {"letsencrypt": {"email": "me@example.com"}}}}, "'http.tls.letsencrypt'"),
        ({"http": {"net": "unix"}}, "'http.net'"),
        ({"middleware": {"storage": [{"name": "cloudfront"}]}}, "'middleware'"),
        ({"proxy": {"remoteurl": "registry-1.docker.io"}}, "'proxy.remoteurl'"),
        ({"notifications": {"endpoints": [{"name": "n", "url": "http://x", "timeout": "fast"}]}}, "'notifications.endpoints.0.timeout'"),
        ({"compatibility": {"schema1": {"enabled": True}}}, "'compatibility.schema1.enabled'"),
        ({"validation": {"manifests": {"indexes": {"platforms": "list"}}}}, "validation.manifests.indexes.platformlist"),
        ({"storage": {"cache": {"blobdescriptor": "redis"}}}, "'storage.cache.blobdescriptor'"),
        ({"redis": {"addr": "r:6379", "tls": {"enabled": True}}, "storage": {"cache": {"blobdescriptor": "redis"}}}, "'redis.tls.enabled'"),
        ({"http": {"addr": "nowhere"}}, "'http.addr'"),
        ({"htpp": {"addr": ":5000"}}, "'htpp'"),
    ],
)
def test_bad_registry2_configurations_name_the_key(tmp_path: Path, doc: dict[str, Any], named: str) -> None:
    with pytest.raises(config.ConfigError) as refused:
        load(tmp_path, {"version": "0.1", **doc})
    assert named in str(refused.value)


def test_registry2_version_other_than_0_1_is_refused(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="'version'"):
        load(tmp_path, {"version": "0.2"})


# --- environment: selectors, registry:2 keys, and never an open registry by mistake -------------


def test_registry_auth_selector_turns_htpasswd_on_without_a_file() -> None:
    settings = config.load(
        None,
        environ={
            "REGISTRY_AUTH": "htpasswd",
            "REGISTRY_AUTH_HTPASSWD_REALM": "Registry Realm",
            "REGISTRY_AUTH_HTPASSWD_PATH": "/auth/htpasswd",
        },
    )
    assert settings.auth.type == "htpasswd"
    assert (settings.auth.htpasswd.realm, settings.auth.htpasswd.path) == ("Registry Realm", "/auth/htpasswd")


def test_htpasswd_variables_without_the_selector_still_turn_auth_on() -> None:
    settings = config.load(None, environ={"REGISTRY_AUTH_HTPASSWD_REALM": "R", "REGISTRY_AUTH_HTPASSWD_PATH": "/auth/htpasswd"})
    assert settings.auth.type == "htpasswd"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"REGISTRY_AUTH": "htpasswdd"}, "auth.type"),
        ({"REGISTRY_AUTH": "silly"}, "auth.silly"),
        ({"REGISTRY_AUTH": "htpasswd", "REGISTRY_AUTH_HTPASSWD_PATHH": "/auth/htpasswd"}, "REGISTRY_AUTH_HTPASSWD_PATHH"),
        ({"REGISTRY_STORAGE": "gcs"}, "storage.gcs"),
        ({"REGISTRY_STORAGE_DELETE_ENABLED": "perhaps"}, "storage.delete.enabled"),
    ],
)
def test_environment_that_cannot_be_honoured_stops_the_start(environ: dict[str, str], named: str) -> None:
    with pytest.raises(config.ConfigError) as refused:
        config.load(None, environ=environ)
    assert named in str(refused.value)


def test_environment_registry2_keys_and_selectors() -> None:
    settings = config.load(
        None,
        environ={
            "REGISTRY_STORAGE": "s3",
            "REGISTRY_STORAGE_S3_BUCKET": "b",
            "REGISTRY_STORAGE_S3_REGION": "eu-central-1",
            "REGISTRY_LOG_LEVEL": "debug",
            "REGISTRY_HTTP_ADDR": ":5000",
            "REGISTRY_STORAGE_REDIRECT_DISABLE": "true",
            "REGISTRY_HTTP_HEADERS": "{X-Content-Type-Options: [nosniff]}",
        },
    )
    assert settings.storage.driver == "s3" and settings.storage.s3.region == "eu-central-1"
    assert settings.loglevel == "debug" and settings.http.addr == "0.0.0.0:5000" and settings.storage_redirect is False
    assert settings.http.headers == {"X-Content-Type-Options": ["nosniff"]}


def test_unknown_sections_in_the_environment_are_one_warning() -> None:
    settings = config.load(None, environ={"REGISTRY_PORT": "tcp://10.0.0.1:5000", "REGISTRY_SERVICE_HOST": "10.0.0.1"})
    assert [w for w in settings.warnings if "REGISTRY_PORT" in w and "REGISTRY_SERVICE_HOST" in w]


# --- classic environment without a file -----------------------------------------------------------


def test_classic_quick_start_variables_without_a_file_choose_s3() -> None:
    settings = config.load(
        None,
        environ={
            "SETTINGS_FLAVOR": "s3",
            "AWS_BUCKET": "mybucket",
            "STORAGE_PATH": "/registry",
            "AWS_KEY": "myawskey",
            "AWS_SECRET": "myawssecret",
            "SEARCH_BACKEND": "sqlalchemy",
        },
    )
    s3 = settings.storage.s3
    assert settings.storage.driver == "s3"
    assert (s3.bucket, s3.rootdirectory, s3.accesskey, s3.secretkey, s3.encrypt, s3.secure) == (
        "mybucket",
        "/registry",
        "myawskey",
        "myawssecret",
        True,
        True,
    )
    assert settings.search_backend == "sqlalchemy"


def test_classic_flavors_without_a_file() -> None:
    assert config.load(None, environ={}).storage.filesystem.rootdirectory == "./data/registry"
    assert config.load(None, environ={"STORAGE_PATH": "/srv/r"}).storage.filesystem.rootdirectory == "/srv/r"
    assert config.load(None, environ={"SETTINGS_FLAVOR": "local"}).storage.driver == "filesystem"
    prod = config.load(None, environ={"SETTINGS_FLAVOR": "prod", "AWS_BUCKET": "b"})
    assert (prod.storage.driver, prod.storage.s3.rootdirectory) == ("s3", "/prod")
    env = {
        "LOGLEVEL": "warn",
        "CACHE_LRU_REDIS_HOST": "redis",
        "CACHE_LRU_REDIS_PORT": "6380",
        "SMTP_HOST": "mail",
        "SMTP_TO_ADDR": "a@b,c@d",
        "SQLALCHEMY_INDEX_DATABASE": "sqlite:////tmp/x.db",
        "STORAGE_REDIRECT": "true",
    }
    loaded = config.load(None, environ=env)
    assert loaded.loglevel == "warning" and (loaded.cache_lru.host, loaded.cache_lru.port) == ("redis", 6380)
    assert loaded.email_exceptions.to_addr == ["a@b", "c@d"] and loaded.search.database == "sqlite:////tmp/x.db"
    assert loaded.storage_redirect is True


def test_aws_bucket_without_a_flavor_means_s3_and_a_lone_secret_is_refused_naming_it() -> None:
    settings = config.load(None, environ={"AWS_BUCKET": "acme-docker", "STORAGE_PATH": "/registry", "AWS_KEY": "k", "AWS_SECRET": "s"})
    assert settings.storage.driver == "s3" and any("AWS_BUCKET" in w for w in settings.warnings)
    with pytest.raises(config.ConfigError, match=r"_env:AWS_KEY or AWS_S3_ACCESS_KEY, unset.*accesskey and secretkey go together"):
        config.load(None, environ={"AWS_BUCKET": "acme-docker", "STORAGE_PATH": "/registry", "AWS_SECRET": "s"})


def test_classic_variables_a_file_does_not_read_are_named(tmp_path: Path) -> None:
    settings = load(tmp_path, {"storage": {"driver": "filesystem"}}, STORAGE_PATH="/elsewhere")
    assert settings.storage.filesystem.rootdirectory == "./data/registry"
    assert any("STORAGE_PATH" in w for w in settings.warnings)


# --- reading files -----------------------------------------------------------------------------------


def test_duplicate_keys_are_refused_but_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="'loglevel' appears twice"):
        load(tmp_path, "loglevel: info\nloglevel: warn\n")
    settings = load(tmp_path, "common: &common\n  loglevel: info\ndev:\n  <<: *common\n  loglevel: debug\n")
    assert settings.loglevel == "debug"


def test_flavor_only_files_name_the_missing_flavor(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match=r"SETTINGS_FLAVOR.*'dev'.*local"):
        load(tmp_path, {"local": {"storage": "file", "storage_path": "/mnt/registry"}})
    assert (
        load(
            tmp_path, {"local": {"storage": "file", "storage_path": "/mnt/registry"}}, SETTINGS_FLAVOR="local"
        ).storage.filesystem.rootdirectory
        == "/mnt/registry"
    )


def test_relative_config_path_is_looked_up_under_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yml").write_text("common:\n  storage: local\n  storage_path: /from-config-dir\n")
    monkeypatch.chdir(tmp_path)
    assert config.load("config.yml", environ={}).storage.filesystem.rootdirectory == "/from-config-dir"


def test_internal_listeners_move_off_ports_the_file_names(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        {
            "version": "0.1",
            "http": {"addr": ":5000", "debug": {"addr": "localhost:5001"}},
            "notifications": {"endpoints": [{"name": "l", "url": "http://localhost:5003/callback", "disabled": True}]},
            "auth": {"token": {"realm": "https://auth.example.com/token", "service": "s", "issuer": "i", "rootcertbundle": "/b"}},
        },
    )
    ports = {settings.blobstore.addr, settings.token_service.addr, settings.search.addr, settings.blobstore.http_addr}
    assert len(ports) == 4 and not ports & {"127.0.0.1:5000", "127.0.0.1:5001", "127.0.0.1:5003"}
    assert settings.token_service.addr == "127.0.0.1:5002"  # not named: stays
    assert settings.auth.token.realm == "https://auth.example.com/token"
    moved = load(tmp_path, {"http": {"addr": "127.0.0.1:5002"}, "auth": {"type": "token"}})
    assert moved.token_service.addr != "127.0.0.1:5002"
    assert moved.auth.token.realm == f"http://{moved.token_service.addr}/token"  # follows the token service
    assert moved.auth.token.jwks == f"http://{moved.token_service.addr}/.well-known/jwks.json"
    kept = load(tmp_path, {"http": {"addr": "127.0.0.1:5002"}, "blobstore": {"addr": "127.0.0.1:6001"}})
    assert kept.blobstore.addr == "127.0.0.1:6001"


def test_the_readme_example_variable_names_work_without_a_file_too() -> None:
    settings = config.load(
        None, environ={"SETTINGS_FLAVOR": "prod", "AWS_S3_BUCKET": "b", "AWS_S3_ACCESS_KEY": "k", "AWS_S3_SECRET_KEY": "s"}
    )
    assert (settings.storage.s3.bucket, settings.storage.s3.accesskey, settings.storage.s3.secretkey) == ("b", "k", "s")
    both = config.load(None, environ={"SETTINGS_FLAVOR": "s3", "AWS_BUCKET": "a", "AWS_S3_BUCKET": "b"})
    assert both.storage.s3.bucket == "a" and any("AWS_S3_BUCKET" in w for w in both.warnings)  # the first name wins, the other is named


def test_environment_sets_single_entries_of_maps() -> None:
    settings = config.load(None, environ={"REGISTRY_LOG_FIELDS_ENVIRONMENT": "production", "REGISTRY_LOG_FIELDS_SERVICE": "registry"})
    assert settings.log.fields == {"environment": "production", "service": "registry"}
