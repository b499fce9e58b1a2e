"""``auth.token.privileged_key`` (the classic registry's): a public key trusted on its own, without
rootcertbundle or a JWKS, so whoever holds its private key signs tokens that push and pull; tokens
of any other key are refused, and an unusable file is reported under its own setting's name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.common.config import AuthSettings, ConfigError, TokenAuthSettings
from services.gateway import access
from tests.gateway.test_auth_token import token_env
from tests.support.auth import SigningKey, bearer, repo_access
from tests.support.processes import Berth
from tests.support.registry import assert_error, checked_client, push_image

# The key pair of the test: PKCS#1 ("BEGIN RSA PUBLIC KEY") and SubjectPublicKeyInfo ("BEGIN
# PUBLIC KEY") are both written as privileged keys.
PRIVILEGED = SigningKey("RS256", private=rsa.generate_private_key(65537, 2048))
STRANGER = SigningKey("RS256")
FORMATS = {"pkcs1": serialization.PublicFormat.PKCS1, "spki": serialization.PublicFormat.SubjectPublicKeyInfo}


@pytest.fixture(scope="module", params=list(FORMATS))
def registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Berth]:
    workdir = tmp_path_factory.mktemp(f"berth-privileged-{request.param}")
    key = workdir / "privileged.pem"
    key.write_bytes(PRIVILEGED.private.public_key().public_bytes(serialization.Encoding.PEM, FORMATS[request.param]))
    instance = Berth(workdir, env=token_env(REGISTRY_AUTH_TOKEN_PRIVILEGED_KEY=str(key), REGISTRY_AUTH_TOKEN_JWKS=""))
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture()
def client(registry: Berth) -> Iterator[httpx.Client]:
    with checked_client(registry.url) as c:
        yield c


@pytest.mark.parametrize("kid", [False, True], ids=["no kid", "libtrust kid"])
def test_tokens_signed_with_the_privileged_key_push_and_pull(client: httpx.Client, repo: str, kid: bool) -> None:
    client.headers.update(bearer(PRIVILEGED.mint([repo_access(repo, "pull", "push")], kid=kid)))
    digest, payload = push_image(client, repo, "v1")
    r = client.get(f"/v2/{repo}/manifests/v1")
    assert r.status_code == 200 and r.content == payload
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]

    client.headers.update(bearer(PRIVILEGED.mint([repo_access(repo, "pull")], kid=kid)))
    assert client.get(f"/v2/{repo}/manifests/{digest}").status_code == 200


@pytest.mark.parametrize("kid", [False, True], ids=["no kid", "own kid"])
def test_tokens_of_another_key_are_refused(client: httpx.Client, repo: str, kid: bool) -> None:
    token = bearer(STRANGER.mint([repo_access(repo, "pull", "push")], kid=kid))
    for r in (client.get(f"/v2/{repo}/tags/list", headers=token), client.post(f"/v2/{repo}/blobs/uploads/", headers=token)):
        assert_error(r, 401, "UNAUTHORIZED")
        assert 'error="invalid_token"' in r.headers["www-authenticate"]


def token_settings(**token: str) -> AuthSettings:
    return AuthSettings(type="token", token=TokenAuthSettings(jwks="", **token))


@pytest.mark.parametrize("content", [None, "no keys here\n"], ids=["missing", "no key in it"])
def test_an_unusable_privileged_key_is_named_in_the_error(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "privileged.pem"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        access.create(token_settings(privileged_key=str(path)))
    assert "auth.token.privileged_key" in str(caught.value) and "rootcertbundle" not in str(caught.value)


def test_without_any_key_token_auth_says_which_settings_to_set() -> None:
    with pytest.raises(ConfigError, match="privileged_key"):
        access.create(token_settings())
