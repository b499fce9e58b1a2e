"""Configuration: flavors, _env values, REGISTRY_* overrides, and errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from services.common import config
from tests.support.processes import ROOT

SAMPLE = ROOT / "config" / "config_sample.yml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    settings = config.load(environ={})
    assert settings.storage.driver == "filesystem"
    assert settings.storage.filesystem.rootdirectory == "./data/registry"
    assert settings.http.addr == "127.0.0.1:5000"
    assert settings.auth.type == "none"


@pytest.mark.parametrize("flavor", ["dev", "test", "prod"])
def test_sample_config_loads_in_every_flavor(flavor: str) -> None:
    settings = config.load(SAMPLE, environ={"SETTINGS_FLAVOR": flavor})
    assert settings.limits.manifest_size == 4 << 20
    assert settings.storage.driver == ("inmemory" if flavor == "test" else "filesystem")


def test_flavor_is_merged_over_common(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
common:
  http: {addr: "127.0.0.1:6000", prefix: /reg}
  storage: {filesystem: {rootdirectory: /common}}
prod:
  storage: {filesystem: {rootdirectory: /prod}}
""",
    )
    prod = config.load(path, environ={"SETTINGS_FLAVOR": "prod"})
    assert prod.storage.filesystem.rootdirectory == "/prod"
    assert prod.http.addr == "127.0.0.1:6000"  # kept from common
    assert prod.http.prefix == "/reg"
    dev = config.load(path, environ={})
    assert dev.storage.filesystem.rootdirectory == "/common"


def test_unknown_flavor_named_in_the_error(tmp_path: Path) -> None:
    path = write(tmp_path, "common: {}\nprod: {}\n")
    with pytest.raises(config.ConfigError, match=r"SETTINGS_FLAVOR.*'staging'"):
        config.load(path, environ={"SETTINGS_FLAVOR": "staging"})


def test_flat_registry2_style_file(tmp_path: Path) -> None:
    path = write(tmp_path, "storage:\n  delete: {enabled: false}\n")
    assert config.load(path, environ={}).storage.delete.enabled is False


def test_env_values_with_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
common:
  storage: {filesystem: {rootdirectory: "_env:STORE:/default"}}
  blobstore: {workers: "_env:WORKERS:8"}
""",
    )
    assert config.load(path, environ={}).storage.filesystem.rootdirectory == "/default"
    loaded = config.load(path, environ={"STORE": "/from-env", "WORKERS": "3"})
    assert loaded.storage.filesystem.rootdirectory == "/from-env"
    assert loaded.blobstore.workers == 3


def test_registry_overrides_map_onto_nested_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "common:\n  storage: {filesystem: {rootdirectory: /file}}\n")
    loaded = config.load(
        path,
        environ={
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": "/override",
            "REGISTRY_HTTP_SECRET": "s3cret",
            "REGISTRY_BLOBSTORE_CHUNK_SIZE": "65536",
            "REGISTRY_STORAGE_DELETE_ENABLED": "false",
            "REGISTRY_NOT_A_KEY": "ignored",
        },
    )
    assert loaded.storage.filesystem.rootdirectory == "/override"
    assert loaded.http.secret == "s3cret"
    assert loaded.blobstore.chunk_size == 65536  # chunk_size has an underscore: longest key wins
    assert loaded.storage.delete.enabled is False


def test_list_overrides_are_comma_separated_and_keys_with_underscores_resolve() -> None:
    loaded = config.load(
        None,
        environ={
            "REGISTRY_HTTP_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
            "REGISTRY_CACHE_LRU_HOST": "redis-lru",
            "REGISTRY_CACHE_HOST": "redis-shared",
            "REGISTRY_STORAGE_S3_MULTIPARTCOPYCHUNKSIZE": str(64 << 20),
        },
    )
    assert loaded.http.trusted_proxies == ["10.0.0.0/8", "127.0.0.1"]
    assert (loaded.cache_lru.host, loaded.cache.host) == ("redis-lru", "redis-shared")
    assert loaded.storage.s3.multipartcopychunksize == 64 << 20


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"REGISTRY_STORAGE_DRIVER": "s3"}, "storage.s3.bucket"),
        ({"REGISTRY_BLOBSTORE_ADDR": "0.0.0.0:5001"}, "blobstore.token"),
        ({"REGISTRY_BLOBSTORE_SECURITY": "mtls", "REGISTRY_BLOBSTORE_TOKEN": "x" * 16}, "blobstore.tls.certificate"),
        ({"REGISTRY_HTTP_TLS_CERTIFICATE": "/c.pem"}, "certificate and key"),
        ({"REGISTRY_EMAIL_EXCEPTIONS_SMTP_HOST": "smtp"}, "email_exceptions.to_addr"),
    ],
)
def test_incomplete_sections_name_what_is_missing(environ: dict[str, str], key: str) -> None:
    with pytest.raises(config.ConfigError, match=key.replace(".", r"\.")):
        config.load(None, environ=environ)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("storage: {driver: nfs}", "storage.driver"),
        ("storage: {filesystem: {rootdir: /x}}", "storage.filesystem.rootdir"),
        ("http: {addr: nowhere}", "http.addr"),
        ("blobstore: {workers: 0}", "blobstore.workers"),
        ("limits: {manifest_size: lots}", "limits.manifest_size"),
        ("colour: blue", "colour"),
    ],
)
def test_errors_name_the_offending_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(config.ConfigError, match=f"'{key}'"):
        config.load(write(tmp_path, text), environ={})


def test_missing_file_and_bad_yaml_are_reported(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="DOCKER_REGISTRY_CONFIG"):
        config.load(tmp_path / "absent.yml", environ={})
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load(write(tmp_path, "storage: [unclosed"), environ={})


def test_config_check_command_masks_secrets_and_fails_on_errors(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "services.cli", "--config", str(SAMPLE), "config", "check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"REGISTRY_HTTP_SECRET": "hunter2", "PATH": "/usr/bin:/bin"},
    )
    assert ok.returncode == 0, ok.stderr
    assert "hunter2" not in ok.stdout and '"secret": "***"' in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "services.cli", "--config", str(write(tmp_path, "storage: {driver: nfs}")), "config", "check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 2
    assert "storage.driver" in bad.stderr


def test_make_run_config_has_dev_and_secure_flavors() -> None:
    run_config = ROOT / "config" / "berth.yml"
    dev = config.load(run_config, environ={})
    assert dev.auth.type == "none"
    secure = config.load(run_config, environ={"SETTINGS_FLAVOR": "secure"})
    assert secure.auth.type == "token"
    assert secure.auth.token.authorize_url == "http://127.0.0.1:5002/authorize"
    assert (ROOT / secure.token_service.rules).is_file()


def _keys(model: type, prefix: str = "") -> set[str]:
    out = set()
    for name, field in model.model_fields.items():
        out.add(prefix + name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out |= _keys(annotation, f"{prefix}{name}.")
    return out


def _present(data: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in data.items():
        out.add(prefix + key)
        if isinstance(value, dict):
            out |= _present(value, f"{prefix}{key}.")
    return out


def test_sample_config_documents_every_option() -> None:
    import yaml

    sample = yaml.safe_load((ROOT / "config" / "config_sample.yml").read_text())["common"]
    missing = sorted(_keys(config.Settings) - _present(sample))
    assert not missing, f"config_sample.yml lacks: {missing}"
