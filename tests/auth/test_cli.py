"""`berth users ...` on the SQL store (also while the service runs), `berth auth` refusing unusable
settings, and `berth run` starting the token service only for auth.type token."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.auth.support import SERVICE, berth_cli, error_code, token_service
from tests.support.processes import ROOT, Berth, free_port


@pytest.fixture()
def running(tmp_path: Path) -> Iterator[Berth]:
    berth = token_service(tmp_path)
    berth.start("auth")
    yield berth
    berth.stop()


def login_status(berth: Berth, user: str, password: str) -> int:
    with berth.auth_client() as client:
        return client.get("/token", params={"service": SERVICE}, auth=(user, password)).status_code


def test_users_commands_take_effect_while_the_service_runs(running: Berth) -> None:
    assert login_status(running, "erin", "first-password") == 401
    added = berth_cli(running, "users", "add", "erin", "--password", "first-password", "--group", "admins", "--group", "ops")
    assert added.returncode == 0, added.stderr
    assert login_status(running, "erin", "first-password") == 200
    listed = berth_cli(running, "users", "list")
    assert listed.returncode == 0 and "erin\tadmins,ops" in listed.stdout.splitlines()
    # Groups count at once: admins get the catalog under the test rules.
    with running.auth_client() as client:
        r = client.get("/token", params={"service": SERVICE, "scope": "registry:catalog:*"}, auth=("erin", "first-password"))
        assert r.status_code == 200

    assert berth_cli(running, "users", "passwd", "erin", "--password-stdin", stdin="second-password\n").returncode == 0
    assert login_status(running, "erin", "first-password") == 401
    assert login_status(running, "erin", "second-password") == 200

    assert berth_cli(running, "users", "remove", "erin").returncode == 0
    assert login_status(running, "erin", "second-password") == 401
    assert "erin" not in berth_cli(running, "users", "list").stdout


def test_exit_codes(running: Berth) -> None:
    assert berth_cli(running, "users", "add", "frank", "--password", "pw").returncode == 0
    duplicate = berth_cli(running, "users", "add", "frank", "--password", "other")
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    assert berth_cli(running, "users", "remove", "nobody").returncode == 1
    assert berth_cli(running, "users", "passwd", "nobody", "--password", "x").returncode == 1
    for args in (
        ["users", "add", "bad name", "--password", "pw"],  # invalid name
        ["users", "add", "gina", "--password", "x" * 100],  # password too long for bcrypt
        ["users", "add", "gina"],  # no password
        ["users", "add", "gina", "--password", "a", "--password-stdin"],
        ["users", "frobnicate"],
    ):
        result = berth_cli(running, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
    assert "gina" not in berth_cli(running, "users", "list").stdout
    assert login_status(running, "frank", "pw") == 200


def test_users_with_an_unusable_database(tmp_path: Path) -> None:
    berth = Berth(tmp_path, env={"REGISTRY_TOKEN_SERVICE_DATABASE": "nosuchdialect://x"})
    result = berth_cli(berth, "users", "list")
    assert result.returncode == 2 and "token_service.database" in result.stderr


def test_auth_refuses_a_broken_rules_file(tmp_path: Path) -> None:
    berth = token_service(tmp_path, rules='- {account: "*", name: x, actions: [fly]}\n')
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "auth"], cwd=ROOT, env=berth.environment(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "token_service.rules" in result.stderr and "unknown action 'fly'" in result.stderr


def test_config_check_hides_a_database_password(tmp_path: Path) -> None:
    berth = Berth(tmp_path, env={"REGISTRY_TOKEN_SERVICE_DATABASE": "postgresql+psycopg://berth:s3cret-pw@db/berth"})
    result = berth_cli(berth, "config", "check")
    assert result.returncode == 0, result.stderr
    assert "s3cret-pw" not in result.stdout and "postgresql+psycopg://berth:***@db/berth" in result.stdout


def run_berth(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[str], int, int]:
    http_port, grpc_port, auth_port = free_port(), free_port(), free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    environ.update(
        REGISTRY_HTTP_ADDR=f"127.0.0.1:{http_port}",
        REGISTRY_BLOBSTORE_ADDR=f"127.0.0.1:{grpc_port}",
        REGISTRY_BLOBSTORE_HTTP_ADDR="",
        REGISTRY_TOKEN_SERVICE_ADDR=f"127.0.0.1:{auth_port}",
        REGISTRY_SEARCH_ADDR=f"127.0.0.1:{free_port()}",
        REGISTRY_AUTH_TOKEN_REALM=f"http://127.0.0.1:{auth_port}/token",
        REGISTRY_AUTH_TOKEN_JWKS=f"http://127.0.0.1:{auth_port}/.well-known/jwks.json",
        **env,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run"],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{http_port}/v2/", timeout=1)
            return proc, http_port, auth_port
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise AssertionError(f"berth run did not come up: {proc.communicate()[0]}") from None
            time.sleep(0.2)


def stop_berth(proc: subprocess.Popen[str]) -> str:
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    return output


def test_run_starts_the_token_service_for_token_auth(tmp_path: Path) -> None:
    proc, _, auth_port = run_berth(tmp_path, REGISTRY_AUTH_TYPE="token")
    try:
        base = f"http://127.0.0.1:{auth_port}"
        assert httpx.get(f"{base}/_ping", timeout=5).status_code == 200
        assert len(httpx.get(f"{base}/.well-known/jwks.json", timeout=5).json()["keys"]) == 1
        r = httpx.get(f"{base}/token", params={"service": "other"}, timeout=5)
        assert r.status_code == 400 and error_code(r) == "UNSUPPORTED_VALUE"
        assert (tmp_path / "data" / "auth" / "signing-key.pem").is_file()  # under the working directory
        assert (tmp_path / "data" / "auth" / "signing-key.crt").is_file()
        assert len(psutil.Process(proc.pid).children(recursive=True)) >= 3
    finally:
        if proc.poll() is None:
            output = stop_berth(proc)
            assert "token service at" in output


def test_run_without_token_auth_leaves_it_out(tmp_path: Path) -> None:
    proc, _, auth_port = run_berth(tmp_path, REGISTRY_AUTH_TYPE="none")  # the token section alone would turn it on
    try:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", auth_port), timeout=1).close()
        assert not (tmp_path / "data" / "auth").exists()
    finally:
        if proc.poll() is None:
            stop_berth(proc)
