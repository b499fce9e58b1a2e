"""The configurations in ../shared/seeds (copied into seeds/ here, as written) load as they describe.

Each case is what a user of the classic registry or registry:2 has in hand: a file from the
README, or the environment variables of a `docker run` line. tests/e2e/test_seed_setups.py starts
the runnable ones and pushes and pulls through them with skopeo.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common import config

SEEDS = Path(__file__).with_name("seeds")


def seed(name: str, **environ: str) -> config.Settings:
    return config.load(SEEDS / name, environ=environ)


def test_registry2_image_config() -> None:
    settings = seed("registry2-image-config.yml")
    assert settings.dialect == "registry2"
    assert settings.loglevel == "debug"
    assert settings.log.fields == {"service": "registry", "environment": "development"}
    assert settings.storage.driver == "filesystem" and settings.storage.filesystem.rootdirectory == "/tmp/registry-dev"
    assert settings.http.addr == "0.0.0.0:5000" and settings.http.secret == "asecretforlocaldevelopment"
    assert [e.name for e in settings.notifications.endpoints] == ["local-8082", "local-8083"]
    endpoint = settings.notifications.endpoints[0]
    assert (endpoint.timeout, endpoint.backoff, endpoint.threshold, endpoint.disabled) == (1.0, 1.0, 10, True)
    assert endpoint.headers == {"Authorization": ["Bearer <an example token>"]}
    assert settings.storage.delete.enabled is False  # registry:2's default
    assert settings.cache_lru.host == ""  # redis is configured but layerinfo is inmemory: unused, as in registry:2
    # localhost:5001 (debug) and localhost:5003 (a webhook) are the file's: Berth's listeners avoid them.
    internal = [settings.blobstore.addr, settings.token_service.addr, settings.search.addr, settings.blobstore.http_addr]
    assert not {a.rpartition(":")[2] for a in internal} & {"5000", "5001", "5003"}
    said = "\n".join(settings.warnings)
    for subject in ("tabs", "http.debug.addr", "redis", "blobstore.addr", "search.addr"):
        assert subject in said


def test_registry2_config_with_the_tls_block_names_unreadable_certificates(tmp_path: Path) -> None:
    settings = seed("registry2-image-config-tls.yml")
    assert settings.http.tls.certificate == "/go/src/github.com/docker/distribution/certs/domain.crt"
    from services.common import https

    with pytest.raises(config.ConfigError, match=r"http\.tls\.certificate"):
        https.server_context(settings.http.tls, "http.tls")


@pytest.mark.parametrize(
    ("flavor", "driver", "root"), [("dev", "filesystem", "/home/myself/docker"), ("test", "filesystem", "/tmp/tmpdockertmp")]
)
def test_classic_example_config_local_flavors(flavor: str, driver: str, root: str) -> None:
    settings = seed("classic-0.9.1-example.yml", SETTINGS_FLAVOR=flavor)
    assert settings.dialect == "classic"
    assert settings.storage.driver == driver and settings.storage.filesystem.rootdirectory == root
    assert settings.loglevel == ("debug" if flavor == "dev" else "info")
    assert settings.search_backend == "" and settings.search.database == "sqlite:////tmp/docker-registry.db"


def test_classic_example_config_prod_flavor_with_its_variables() -> None:
    settings = seed(
        "classic-0.9.1-example.yml",
        SETTINGS_FLAVOR="prod",
        AWS_S3_ACCESS_KEY="AKIA",
        AWS_S3_SECRET_KEY="secret",
        AWS_S3_BUCKET="acme",
        SEARCH_BACKEND="sqlalchemy",
    )
    s3 = settings.storage.s3
    assert settings.storage.driver == "s3" and (s3.bucket, s3.accesskey, s3.secretkey, s3.rootdirectory) == (
        "acme",
        "AKIA",
        "secret",
        "/srv/docker",
    )
    assert settings.loglevel == "warning"
    mail = settings.email_exceptions
    assert (mail.smtp_host, mail.from_addr, mail.to_addr) == ("localhost", "docker@myself.com", ["my@myself.com"])
    assert settings.search_backend == "sqlalchemy"
    with pytest.raises(config.ConfigError, match=r"storage.*_env:AWS_S3_BUCKET"):
        seed("classic-0.9.1-example.yml", SETTINGS_FLAVOR="prod")  # the bucket's variable unset: named


def test_classic_readme_snippets() -> None:
    local = seed("classic-0.9.1-local.yml", SETTINGS_FLAVOR="local")
    assert local.storage.driver == "filesystem" and local.storage.filesystem.rootdirectory == "/mnt/registry"
    s3 = seed("classic-0.9.1-s3.yml", SETTINGS_FLAVOR="prod").storage
    assert s3.driver == "s3" and (s3.s3.region, s3.s3.bucket, s3.s3.rootdirectory) == ("us-west-1", "acme-docker", "/registry")
    search = seed("classic-0.9.1-search-sqlalchemy.yml")
    assert search.search_backend == "sqlalchemy" and search.search.database == "sqlite:////tmp/docker-registry.db"
    assert seed("classic-0.9.1-search-module.yml").search_backend == "foo.registry.index.xapian"
    mirror = seed("classic-0.9.1-mirroring.yml").proxy
    assert (mirror.remoteurl, mirror.tag_ttl, mirror.enabled) == ("https://registry-1.docker.io", 172800, True)


def test_classic_quick_start_environment() -> None:
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
    assert settings.storage.driver == "s3" and settings.storage.s3.bucket == "mybucket" and settings.search_backend == "sqlalchemy"


def test_registry2_documented_environment_forms(tmp_path: Path) -> None:
    tls = {"REGISTRY_HTTP_TLS_CERTIFICATE": "/certs/domain.crt", "REGISTRY_HTTP_TLS_KEY": "/certs/domain.key"}
    assert config.load(None, environ=tls).http.tls.certificate == "/certs/domain.crt"
    htpasswd = config.load(
        None,
        environ={
            "REGISTRY_AUTH": "htpasswd",
            "REGISTRY_AUTH_HTPASSWD_REALM": "Registry Realm",
            "REGISTRY_AUTH_HTPASSWD_PATH": "/auth/htpasswd",
            **tls,
        },
    )
    assert htpasswd.auth.type == "htpasswd" and htpasswd.auth.htpasswd.realm == "Registry Realm"


@pytest.mark.parametrize(
    ("name", "environ", "status", "said"),
    [
        ("registry2-image-config.yml", {}, 0, "registry:2's form"),
        ("registry2-image-config-tls.yml", {}, 2, "http.tls.certificate"),
        ("classic-0.9.1-example.yml", {}, 0, "classic registry's form"),
        (
            "classic-0.9.1-example.yml",
            {"SETTINGS_FLAVOR": "prod", "AWS_S3_BUCKET": "b", "AWS_S3_ACCESS_KEY": "k", "AWS_S3_SECRET_KEY": "s"},
            0,
            "classic",
        ),
        ("classic-0.9.1-local.yml", {"SETTINGS_FLAVOR": "local"}, 0, "classic"),
        ("classic-0.9.1-s3.yml", {"SETTINGS_FLAVOR": "prod"}, 0, "classic"),
        ("classic-0.9.1-search-sqlalchemy.yml", {}, 0, "classic"),
        ("classic-0.9.1-mirroring.yml", {}, 0, "mirroring.source_index"),
    ],
)
def test_config_check_of_each_seed(name: str, environ: dict[str, str], status: int, said: str) -> None:
    import os
    import subprocess
    import sys

    from tests.support.processes import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "AWS_", "SETTINGS_FLAVOR", "DOCKER_REGISTRY_CONFIG"))}
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "--config", str(SEEDS / name), "config", "check"],
        check=False,
        cwd=ROOT,
        env={**env, **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == status, result.stderr
    assert said in result.stderr
    if status == 0:
        import json

        assert json.loads(result.stdout)["storage"]["driver"] in ("filesystem", "s3")


@pytest.mark.parametrize(
    ("flavor", "environ", "driver"),
    [
        ("dev", {}, "filesystem"),
        ("local", {}, "filesystem"),
        ("test", {}, "filesystem"),
        ("s3", {"AWS_BUCKET": "b", "AWS_KEY": "k", "AWS_SECRET": "s"}, "s3"),
        ("prod", {"AWS_BUCKET": "b"}, "s3"),
        ("ceph-s3", {"AWS_BUCKET": "b", "AWS_HOST": "ceph.local", "AWS_PORT": "7480", "AWS_KEY": "k", "AWS_SECRET": "s"}, "s3"),
    ],
)
def test_classic_config_sample_copied_as_the_readme_says(flavor: str, environ: dict[str, str], driver: str) -> None:
    settings = seed("classic-0.9-config_sample.yml", SETTINGS_FLAVOR=flavor, **environ)
    assert settings.storage.driver == driver
    if flavor == "ceph-s3":
        assert settings.storage.s3.regionendpoint == "http://ceph.local:7480" and settings.storage.s3.encrypt is False
    if flavor == "dev":
        assert settings.loglevel == "debug" and settings.search_backend == "sqlalchemy"
    # Only the bugsnag-like cosmetic "issue" is worth a word; switched-off keys say nothing.
    assert [w for w in settings.warnings if not w.startswith("issue")] == []


def test_classic_config_sample_flavors_berth_cannot_serve_are_refused() -> None:
    with pytest.raises(config.ConfigError, match=r"'storage'.*gcs"):
        seed("classic-0.9-config_sample.yml", SETTINGS_FLAVOR="gcs")
    with pytest.raises(config.ConfigError, match=r"cors\.origins"):
        seed("classic-0.9-config_sample.yml", SETTINGS_FLAVOR="dev", CORS_ORIGINS="*")
