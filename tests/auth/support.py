"""Helpers of the token service tests: starting it with users and rules, reading what it answers.

Token checks here use pyjwt and the service's published JWKS only, never services.auth code, so a
bug in the service cannot hide by agreeing with itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jwt
import yaml
from cryptography.hazmat.primitives import serialization

from tests.support.processes import ROOT, Berth

ISSUER = "berth-auth"
SERVICE = "berth"

# name: (password, groups)
USERS: dict[str, tuple[str, list[str]]] = {
    "admin": ("admin-password", ["admins"]),
    "alice": ("alice-password", []),
    "bob": ("bob-password", ["readers"]),
    "team-one": ("team-password", ["builders"]),
}

RULES = """
- account: group:admins
  name: "*"
  actions: ["*"]
- account: group:admins
  type: registry
  name: catalog
  actions: ["*"]
- account: "*"
  name: "${account}/*"
  actions: [pull, push, delete]
- account: [anonymous, "*"]
  name: "public/*"
  actions: [pull]
- account: "team-*"
  name: "team/*"
  actions: [pull, push]
- account: "*"
  name: "team/*"
  actions: [pull]
- account: group:readers
  name: "shared/*"
  actions: [pull]
"""


def token_service(
    workdir: Path, *, config: dict[str, Any] | None = None, env: dict[str, str] | None = None, rules: str | None = RULES
) -> Berth:
    """A Berth whose token service (not started) uses ``rules`` and the ``token_service`` ``config``."""
    workdir.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {"token_service": {"rate_limit": {"attempts": 1000, "window": 60}, **(config or {})}}
    if rules is not None:
        (workdir / "rules.yml").write_text(rules)
        settings["token_service"]["rules"] = str(workdir / "rules.yml")
    (workdir / "config.yml").write_text(yaml.safe_dump(settings))
    return Berth(workdir, env={"DOCKER_REGISTRY_CONFIG": str(workdir / "config.yml"), **(env or {})})


def database_url(berth: Berth) -> str:
    return berth.environment()["REGISTRY_TOKEN_SERVICE_DATABASE"]


def key_path(berth: Berth) -> Path:
    return Path(berth.environment()["REGISTRY_TOKEN_SERVICE_KEY"])


def berth_cli(berth: Berth, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``berth <args>`` with the instance's configuration."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=ROOT,
        env=berth.environment(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def add_users(berth: Berth, users: dict[str, tuple[str, list[str]]] = USERS) -> None:
    for name, (password, groups) in users.items():
        args = ["users", "add", name, "--password", password]
        for group in groups:
            args += ["--group", group]
        result = berth_cli(berth, *args)
        assert result.returncode == 0, result.stderr


def login(user: str) -> httpx.BasicAuth:
    return httpx.BasicAuth(user, USERS[user][0])


def basic_header(raw: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def get_token(client: httpx.Client, *scopes: str, user: str | None = None, **params: str) -> httpx.Response:
    query: list[tuple[str, str]] = [("service", SERVICE), *(("scope", s) for s in scopes), *params.items()]
    return client.get("/token", params=query, auth=login(user) if user else None)


def token_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def unverified_claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def access(token: str) -> dict[tuple[str, str], set[str]]:
    """The token's access claim as {(type, name): actions}."""
    return {(a["type"], a["name"]): set(a["actions"]) for a in unverified_claims(token)["access"]}


def verify_with_jwks(token: str, jwks: dict[str, Any], audience: str = SERVICE) -> dict[str, Any]:
    """The claims, verified with the JWKS key the header's kid names (KeyError if none does)."""
    kid = jwt.get_unverified_header(token)["kid"]
    entry = next((k for k in jwks["keys"] if k["kid"] == kid), None)
    if entry is None:
        raise KeyError(kid)
    return jwt.decode(token, jwt.PyJWK(entry).key, algorithms=[entry["alg"]], audience=audience, issuer=ISSUER)


def error_code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["code"])


def libtrust_kid(public_key: Any) -> str:
    """registry 2.8's key ID, computed here independently of services.auth.keys."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, 48, 4))


def new_log(berth: Berth, service: str, since: int) -> str:
    with (berth.workdir / f"{service}.log").open("rb") as log:
        log.seek(since)
        return log.read().decode(errors="replace")


def log_size(berth: Berth, service: str) -> int:
    path = berth.workdir / f"{service}.log"
    return path.stat().st_size if path.exists() else 0


def jwks_of(client: httpx.Client) -> dict[str, Any]:
    r = client.get("/.well-known/jwks.json")
    assert r.status_code == 200, r.text
    return json.loads(r.content)
