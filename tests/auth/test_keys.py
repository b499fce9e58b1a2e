"""Signing keys: generated on first start (0600), reused, certified, named by their libtrust key ID,
published as a JWKS that verifies the tokens, rotated without breaking tokens already issued."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.auth.support import (
    add_users,
    get_token,
    jwks_of,
    key_path,
    libtrust_kid,
    token_of,
    token_service,
    verify_with_jwks,
)
from tests.support.processes import ROOT, Berth

KID_FORMAT = re.compile(r"[A-Z2-7]{4}(?::[A-Z2-7]{4}){11}")


def started(workdir: Path, algorithm: str = "ES256", **config: object) -> Berth:
    berth = token_service(
        workdir,
        config={"algorithm": algorithm, **config},
        env={"REGISTRY_TOKEN_SERVICE_KEY": str(workdir / "keys" / "nested" / "signing-key.pem")},
    )
    add_users(berth, {"admin": ("admin-password", ["admins"])})
    return berth.start("auth")


def admin_token(berth: Berth, *scopes: str) -> str:
    with berth.auth_client() as client:
        return token_of(get_token(client, *scopes, user="admin"))


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_key_generated_on_first_start_and_reused(tmp_path: Path, algorithm: str) -> None:
    berth = started(tmp_path, algorithm)
    try:
        path = key_path(berth)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        pem = path.read_bytes()
        private = serialization.load_pem_private_key(pem, password=None)
        if algorithm == "ES256":
            assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP256R1)
        else:
            assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
        first = admin_token(berth)
        kid = jwt.get_unverified_header(first)["kid"]
        berth.stop()
        berth.start("auth")
        assert path.read_bytes() == pem  # reused, not regenerated
        second = admin_token(berth)
        assert jwt.get_unverified_header(second) == {"alg": algorithm, "kid": kid, "typ": "JWT"}
        with berth.auth_client() as client:
            verify_with_jwks(first, jwks_of(client))  # a token of the previous run still verifies
    finally:
        berth.stop()


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_kid_is_the_libtrust_id_and_the_certificate_matches(tmp_path: Path, algorithm: str) -> None:
    berth = started(tmp_path, algorithm)
    try:
        token = admin_token(berth, "repository:a/b:pull")
        header = jwt.get_unverified_header(token)
        assert KID_FORMAT.fullmatch(header["kid"]), header["kid"]
        private = serialization.load_pem_private_key(key_path(berth).read_bytes(), password=None)
        assert header["kid"] == libtrust_kid(private.public_key())
        certificate = x509.load_pem_x509_certificate(key_path(berth).with_suffix(".crt").read_bytes())
        assert libtrust_kid(certificate.public_key()) == header["kid"]
        with berth.auth_client() as client:
            jwks = jwks_of(client)
        [entry] = jwks["keys"]
        assert entry["kid"] == header["kid"] and entry["alg"] == algorithm and entry["use"] == "sig"
        assert entry["kty"] == ("EC" if algorithm == "ES256" else "RSA")
        assert "d" not in entry  # public parameters only
        claims = verify_with_jwks(token, jwks)
        assert claims["access"] == [{"type": "repository", "name": "a/b", "actions": ["pull"]}]
        # The certificate's key verifies the token too (what registry:2's rootcertbundle does).
        jwt.decode(token, certificate.public_key(), algorithms=[algorithm], audience="berth")
    finally:
        berth.stop()


def test_certificate_is_rewritten_when_it_belongs_to_another_key(tmp_path: Path) -> None:
    berth = started(tmp_path)
    berth.stop()
    crt = key_path(berth).with_suffix(".crt")
    other = ec.generate_private_key(ec.SECP256R1())
    crt.write_bytes(other.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    berth.start("auth")
    try:
        certificate = x509.load_pem_x509_certificate(crt.read_bytes())
        private = serialization.load_pem_private_key(key_path(berth).read_bytes(), password=None)
        assert libtrust_kid(certificate.public_key()) == libtrust_kid(private.public_key())
    finally:
        berth.stop()


@pytest.mark.parametrize("previous_form", ["certificate", "public", "private"])
def test_rotation_keeps_previous_keys_in_the_jwks(tmp_path: Path, previous_form: str) -> None:
    berth = started(tmp_path, "RS256")
    old_token = admin_token(berth)
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    berth.stop()
    old_key = key_path(berth)
    previous = {
        "certificate": old_key.with_suffix(".crt"),
        "private": old_key,
        "public": tmp_path / "old-public.pem",
    }[previous_form]
    if previous_form == "public":
        private = serialization.load_pem_private_key(old_key.read_bytes(), password=None)
        previous.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    # The new key is ES256: rotation may change the algorithm too.
    rotated = token_service(
        tmp_path,
        config={"algorithm": "ES256", "previous_keys": [str(previous)]},
        env={"REGISTRY_TOKEN_SERVICE_KEY": str(tmp_path / "keys" / "next.pem")},
    )
    rotated.start("auth")
    try:
        with rotated.auth_client() as client:
            jwks = jwks_of(client)
            new_token = token_of(get_token(client, user="admin"))
            new_kid = jwt.get_unverified_header(new_token)["kid"]
            assert new_kid != old_kid
            assert [k["kid"] for k in jwks["keys"]] == [new_kid, old_kid]
            assert {k["alg"] for k in jwks["keys"]} == {"ES256", "RS256"}
            verify_with_jwks(old_token, jwks)
            verify_with_jwks(new_token, jwks)
            # The service itself still accepts the old token.
            r = client.post("/authorize", json={"scopes": ["repository:x/y:pull"]}, headers={"Authorization": f"Bearer {old_token}"})
            assert r.status_code == 200 and r.json()["account"] == "admin"
    finally:
        rotated.stop()


def run_auth(berth: Berth) -> subprocess.CompletedProcess[str]:
    """``berth auth`` expected to refuse its configuration (it would serve forever otherwise)."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "auth"], cwd=ROOT, env=berth.environment(), capture_output=True, text=True, timeout=60
    )


def test_key_of_the_wrong_algorithm_stops_the_service(tmp_path: Path) -> None:
    berth = started(tmp_path, "ES256")
    berth.stop()
    mismatched = token_service(tmp_path, config={"algorithm": "RS256"}, env=berth.env)
    result = run_auth(mismatched)
    assert result.returncode == 2
    assert "ES256 key but token_service.algorithm is RS256" in result.stderr


def test_unusable_key_files_stop_the_service(tmp_path: Path) -> None:
    bad_key = tmp_path / "bad.pem"
    bad_key.write_text("-----BEGIN EC PRIVATE KEY-----\nnot base64\n-----END EC PRIVATE KEY-----\n")
    result = run_auth(token_service(tmp_path, env={"REGISTRY_TOKEN_SERVICE_KEY": str(bad_key)}))
    assert result.returncode == 2 and "token_service.key" in result.stderr
    result = run_auth(token_service(tmp_path / "b", config={"previous_keys": [str(tmp_path / "missing.pem")]}))
    assert result.returncode == 2 and "token_service.previous_keys[0]" in result.stderr
    small = rsa.generate_private_key(65537, 1024)
    weak = tmp_path / "weak.pem"
    weak.write_bytes(small.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    result = run_auth(token_service(tmp_path / "c", config={"algorithm": "RS256"}, env={"REGISTRY_TOKEN_SERVICE_KEY": str(weak)}))
    assert result.returncode == 2 and "2048 bits" in result.stderr
