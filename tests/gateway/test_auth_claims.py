"""In process: which claims TokenVerifier accepts (pyjwt checks the registered claims, Berth the
access list), with a key from the bundle and no gateway to start."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from services.common.config import TokenAuthSettings
from services.gateway.access.keys import load_bundle
from services.gateway.access.token import InvalidToken, TokenVerifier
from tests.support.auth import ISSUER, REALM, SERVICE, SigningKey, libtrust_kid, payload, repo_access

KEY, OTHER = SigningKey("ES256"), SigningKey("RS256")
NAME = "team/app"
GRANT = [repo_access(NAME, "pull", "push")]
LEEWAY = 30
SETTINGS = TokenAuthSettings(realm=REALM, service=SERVICE, issuer=ISSUER, jwks="", leeway=LEEWAY)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "bundle.pem"
    path.write_bytes(KEY.public_pem() + OTHER.public_pem())
    return path


def verify(bundle: Path, token: str, now: float | None = None) -> Any:
    clock = (lambda: now) if now is not None else time.time
    return asyncio.run(TokenVerifier(SETTINGS, load_bundle(str(bundle)), None, clock=clock).verify(token))


def mint(**claims: Any) -> str:
    """Signed as given: pyjwt's encode would refuse some of the claims these tests need."""
    body = payload(claims.pop("access", GRANT), **claims)
    return jwt.api_jws.PyJWS().encode(
        json.dumps(body).encode(), KEY.private, algorithm=KEY.alg, headers={"kid": libtrust_kid(KEY.private.public_key())}
    )


def test_a_good_token_names_its_subject_and_grants(bundle: Path) -> None:
    claims = verify(bundle, mint(sub="carol"))
    assert claims.subject == "carol"
    assert [(g.type, g.name, sorted(g.actions)) for g in claims.grants] == [("repository", NAME, ["pull", "push"])]
    assert verify(bundle, mint(sub="")).subject is None  # anonymous
    assert verify(bundle, mint(sub=None)).subject is None


def test_cache_lifetime_is_exp_plus_leeway(bundle: Path) -> None:
    exp = int(time.time()) + 100
    assert verify(bundle, mint(exp=exp)).valid_until == exp + LEEWAY


class Now(int):
    """A time relative to when the test runs (collection may be minutes earlier)."""


REFUSED: dict[str, dict[str, Any]] = {
    "no exp": {"exp": None},
    "no iss": {"iss": None},
    "no aud": {"aud": None},
    "empty aud": {"aud": ""},
    "empty aud list": {"aud": []},
    "aud list with a non-string": {"aud": [SERVICE, 7]},
    "aud an object": {"aud": {"x": SERVICE}},
    "wrong iss": {"iss": ISSUER + "x"},
    "iss not a string": {"iss": 1},
    "exp not a number": {"exp": "soon"},
    "exp infinite (as a huge float)": {"exp": 1e400},
    "exp past leeway": {"exp": Now(-LEEWAY - 60)},
    "nbf past leeway": {"nbf": Now(LEEWAY + 60)},
    "nbf not a number": {"nbf": "now"},
    "iat in the future past leeway": {"iat": Now(LEEWAY + 60)},
    "iat not a number": {"iat": "then"},
    "sub not a string": {"sub": 42},
    "jti not a string": {"jti": 42},
    "access not a list": {"access": {"type": "repository"}},
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_claims(bundle: Path, case: str) -> None:
    now = int(time.time())
    token = mint(**{k: now + v if isinstance(v, Now) else v for k, v in REFUSED[case].items()})
    with pytest.raises(InvalidToken):
        verify(bundle, token)


@pytest.mark.parametrize(
    "entry",
    [
        "repository:team/app:pull",
        {"type": "repository", "name": NAME, "actions": "pull"},
        {"type": "repository", "actions": ["pull"]},
        {"type": "repository", "name": NAME, "actions": [1]},
    ],
)
def test_malformed_access_entries_are_refused(bundle: Path, entry: Any) -> None:
    token = mint(access=[entry])
    with pytest.raises(InvalidToken):
        verify(bundle, token)


def test_aud_list_naming_us_and_times_within_leeway_are_accepted(bundle: Path) -> None:
    now = int(time.time())
    assert verify(bundle, mint(aud=["other", SERVICE])).grants
    assert verify(bundle, mint(exp=now - LEEWAY + 10, nbf=now + LEEWAY - 10, iat=now + LEEWAY - 10)).grants


def test_the_verifiers_clock_bounds_a_token_pyjwt_still_takes(bundle: Path) -> None:
    exp = int(time.time()) + 60
    token = mint(exp=exp)
    assert verify(bundle, token, now=exp + LEEWAY - 1).subject == "alice"
    with pytest.raises(InvalidToken, match="expired"):
        verify(bundle, token, now=exp + LEEWAY + 1)


def test_without_kid_exactly_one_bundle_key_must_verify(bundle: Path, tmp_path: Path) -> None:
    token = KEY.mint(GRANT, kid=False)
    assert verify(bundle, token).subject == "alice"
    with pytest.raises(InvalidToken, match="0 trusted bundle keys"):
        verify(bundle, SigningKey("ES256").mint(GRANT, kid=False))
    with pytest.raises(InvalidToken, match="expired"):  # the signature holds; the claims do not
        verify(bundle, KEY.mint(GRANT, kid=False, exp=int(time.time()) - 600))
    twice = tmp_path / "twice.pem"
    twice.write_bytes(KEY.public_pem() + KEY.certificate_pem())  # one key listed twice is one key (by kid)
    assert asyncio.run(TokenVerifier(SETTINGS, load_bundle(str(twice)), None).verify(token)).subject == "alice"
