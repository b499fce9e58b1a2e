"""The operator commands as scripts use them: ``berth config check``, ``berth users ...`` and
``berth search reindex`` in a subprocess, their exit codes (0 ok, 1 runtime failure, 2 usage or
configuration error), what --help promises, and secrets kept out of ``config check``'s output."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.search import reindex as reindex_module
from services.search.index import Index
from tests.support.fake_registry import FakeRegistry
from tests.support.processes import ROOT

SECRETS = {
    "REGISTRY_HTTP_SECRET": "http-secret-value",
    "REGISTRY_BLOBSTORE_TOKEN": "blobstore-token-value",
    "REGISTRY_STORAGE_S3_ACCESSKEY": "AKIAEXAMPLEACCESSKEY",
    "REGISTRY_STORAGE_S3_SECRETKEY": "s3-secret-key-value",
    "REGISTRY_EMAIL_EXCEPTIONS_SMTP_PASSWORD": "smtp-password-value",
    "REGISTRY_CACHE_PASSWORD": "redis-password-value",
    "REGISTRY_CACHE_LRU_PASSWORD": "lru-password-value",
    "REGISTRY_TOKEN_SERVICE_DATABASE": "postgresql+psycopg://berth:auth-db-password@db/auth",
    "REGISTRY_SEARCH_DATABASE": "postgresql://search:search-db-password@db/search",
}


def berth(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_") and k != "DOCKER_REGISTRY_CONFIG"}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        check=False,
        cwd=cwd or ROOT,
        env=environ,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "command",
    [
        ["config", "check"],
        ["users"],
        ["users", "add"],
        ["users", "list"],
        ["users", "passwd"],
        ["users", "remove"],
        ["search", "reindex"],
    ],
)
def test_help_describes_examples_and_exit_codes(command: list[str]) -> None:
    result = berth(*command, "--help")
    assert result.returncode == 0
    text = result.stdout
    assert "examples:\n  berth " in text
    assert "exit status:\n  0  " in text and "\n  2  usage or configuration error" in text
    if command != ["config", "check"]:
        assert "\n  1  runtime failure" in text


def test_config_check_prints_the_effective_configuration_with_secrets_masked(tmp_path: Path) -> None:
    config = {
        "notifications": {
            "endpoints": [
                {
                    "name": "hook",
                    "url": "https://user:hook-url-password@hooks.example/in",
                    "headers": {"Authorization": ["Bearer header-token-value"]},
                }
            ]
        },
        "http": {"addr": "0.0.0.0:5000"},
    }
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config))
    result = berth("--config", str(tmp_path / "config.yml"), "config", "check", env=SECRETS)
    assert result.returncode == 0, result.stderr
    plain_values = [v for v in SECRETS.values() if "://" not in v]
    for secret in [*plain_values, "auth-db-password", "search-db-password", "hook-url-password", "header-token-value"]:
        assert secret not in result.stdout, secret
    shown: dict[str, Any] = json.loads(result.stdout)
    assert shown["http"]["addr"] == "0.0.0.0:5000"  # the file's value
    assert shown["http"]["secret"] == shown["blobstore"]["token"] == "***"
    assert shown["storage"]["s3"]["accesskey"] == shown["storage"]["s3"]["secretkey"] == "***"
    assert shown["email_exceptions"]["smtp_password"] == shown["cache"]["password"] == shown["cache_lru"]["password"] == "***"
    assert shown["token_service"]["database"] == "postgresql+psycopg://berth:***@db/auth"
    assert shown["search"]["database"] == "postgresql://search:***@db/search"
    endpoint = shown["notifications"]["endpoints"][0]
    assert endpoint["url"] == "https://user:***@hooks.example/in" and endpoint["headers"] == {"Authorization": ["***"]}
    # Unset secrets show as unset, and non-secrets as they are.
    plain = json.loads(berth("config", "check").stdout)
    assert plain["http"]["secret"] == "" and plain["storage"]["driver"] == "filesystem"


@pytest.mark.parametrize(
    ("document", "key"),
    [
        ({"http": {"addr": "no-port"}}, "http.addr"),
        ({"storage": {"filesytem": {"rootdirectory": "/x"}}}, "storage.filesytem"),
        ({"http": {"tls": {"certificate": "/nonexistent/cert.pem", "key": "/nonexistent/key.pem"}}}, "http.tls.certificate"),
        ({"http": {"trusted_proxies": ["10.0.0.0/8", "proxy.internal"]}}, "http.trusted_proxies[1]"),
    ],
)
def test_config_check_of_an_invalid_file_is_exit_2_naming_the_key(tmp_path: Path, document: dict[str, Any], key: str) -> None:
    (tmp_path / "config.yml").write_text(yaml.safe_dump(document))
    result = berth("--config", str(tmp_path / "config.yml"), "config", "check")
    assert result.returncode == 2
    assert key in result.stderr and result.stdout == ""


def test_config_check_of_a_missing_or_broken_file(tmp_path: Path) -> None:
    assert berth("--config", str(tmp_path / "nope.yml"), "config", "check").returncode == 2
    (tmp_path / "broken.yml").write_text("http: [unclosed\n")
    assert berth("--config", str(tmp_path / "broken.yml"), "config", "check").returncode == 2


@pytest.fixture()
def users_env(tmp_path: Path) -> dict[str, str]:
    return {"REGISTRY_TOKEN_SERVICE_DATABASE": f"sqlite:///{tmp_path / 'users.db'}"}


def test_users_exit_codes(users_env: dict[str, str]) -> None:
    added = berth("users", "add", "alice", "--password-stdin", "--group", "ops", env=users_env, stdin="a-password\n")
    assert added.returncode == 0 and "added user alice" in added.stdout
    listed = berth("users", "list", env=users_env)
    assert listed.returncode == 0 and listed.stdout.splitlines() == ["alice\tops"]

    unknown = berth("users", "remove", "nobody", env=users_env)
    assert unknown.returncode == 1 and "nobody" in unknown.stderr
    assert berth("users", "passwd", "nobody", "--password", "x", env=users_env).returncode == 1
    duplicate = berth("users", "add", "alice", "--password", "other", env=users_env)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr

    assert berth("users", "add", "bad name", "--password", "pw", env=users_env).returncode == 2
    assert berth("users", "add", "carol", env=users_env).returncode == 2  # no password given
    assert berth("users", "frobnicate", env=users_env).returncode == 2
    unusable = berth("users", "list", env={"REGISTRY_TOKEN_SERVICE_DATABASE": "nosuchdialect://x"})
    assert unusable.returncode == 2 and "token_service.database" in unusable.stderr

    removed = berth("users", "remove", "alice", env=users_env)
    assert removed.returncode == 0 and berth("users", "list", env=users_env).stdout == ""


@pytest.fixture()
def registry() -> Iterator[FakeRegistry]:
    fake = FakeRegistry().start()
    yield fake
    fake.stop()


def three_repositories(registry: FakeRegistry) -> None:
    registry.add("/v2/_catalog?n=1000", body={"repositories": ["r/one", "r/two", "r/three"]})
    for name in ("r/one", "r/two", "r/three"):
        registry.add(f"/v2/{name}/tags/list?n=1000", body={"name": name, "tags": ["v1"]})
        registry.image(name, "v1")


def test_reindex_exit_codes(registry: FakeRegistry, tmp_path: Path) -> None:
    env = {"REGISTRY_SEARCH_DATABASE": f"sqlite:///{tmp_path / 'index.db'}"}
    three_repositories(registry)
    done = berth("search", "reindex", "--registry", registry.url, env=env)
    assert done.returncode == 0, done.stderr
    assert "reindex: 3 repositories at" in done.stderr and "reindex: 3 repositories indexed, 0 failed" in done.stderr

    registry.add("/v2/r/two/tags/list?n=1000", status=500)
    partial = berth("search", "reindex", "--registry", registry.url, env=env)
    assert partial.returncode == 1 and "failed: r/two" in partial.stderr

    down = berth("search", "reindex", "--registry", "http://127.0.0.1:9", env=env)
    assert down.returncode == 1 and "_catalog" in down.stderr
    bad_database = berth("search", "reindex", "--registry", registry.url, env={"REGISTRY_SEARCH_DATABASE": "nosuchdialect://x"})
    assert bad_database.returncode == 2 and "search.database" in bad_database.stderr
    assert berth("search", "reindex", "--no-such-option", env=env).returncode == 2
    no_index = berth("search", "reindex", "--registry", registry.url, env={**env, "REGISTRY_SEARCH_BACKEND": ""})
    assert no_index.returncode == 2 and "search_backend" in no_index.stderr


def test_reindex_reports_progress_and_a_summary(registry: FakeRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    three_repositories(registry)
    monkeypatch.setattr(reindex_module, "PROGRESS_EVERY", 0.0)  # a line per repository, as a long run gets once a second
    out = io.StringIO()
    index = Index.open(f"sqlite:///{tmp_path / 'index.db'}")
    try:
        assert asyncio.run(reindex_module.reindex(index, registry.url, out)).exit_code == 0
    finally:
        index.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == f"reindex: 3 repositories at {registry.url}"
    assert [line for line in lines if line.startswith("reindex: ") and line.endswith("/3 repositories")] == [
        "reindex: 1/3 repositories",
        "reindex: 2/3 repositories",
        "reindex: 3/3 repositories",
    ]
    assert lines[-1] == "reindex: 3 repositories indexed, 0 failed, 0 no longer in the registry"
