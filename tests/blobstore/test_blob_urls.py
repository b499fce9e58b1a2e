"""Signed blob URLs: what a URL is valid for, for how long, and which replicas accept it."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from services.blobstore.blob_urls import BlobURLSigner, signing_key
from services.common.config import Settings

DIGEST = "sha256:" + "ab" * 32


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_a_url_is_valid_until_it_expires_and_only_for_its_blob() -> None:
    signer = BlobURLSigner("http://blobs.example:5004/", b"k" * 32, expiry=300)
    url = signer.url("library/app", DIGEST, now=1000)
    assert url.startswith(f"http://blobs.example:5004/blobs/library/app/{DIGEST}?")
    q = _query(url)
    assert q["expires"] == "1300"
    assert signer.valid("library/app", DIGEST, q["expires"], q["signature"], now=1299)
    assert not signer.valid("library/app", DIGEST, q["expires"], q["signature"], now=1301)
    assert not signer.valid("library/other", DIGEST, q["expires"], q["signature"], now=1000)
    assert not signer.valid("library/app", "sha256:" + "cd" * 32, q["expires"], q["signature"], now=1000)
    assert not signer.valid("library/app", DIGEST, "1301", q["signature"], now=1000)
    for bad in ("", "-1", "1e9", "9" * 40):
        assert not signer.valid("library/app", DIGEST, bad, q["signature"], now=1000)
    assert not signer.valid("library/app", DIGEST, q["expires"], "é" + q["signature"], now=1000)


def test_replicas_sharing_a_secret_accept_each_others_urls() -> None:
    shared = Settings.model_validate({"http": {"secret": "one secret for every replica"}})
    a = BlobURLSigner("http://lb:5004", signing_key(shared), 60)
    b = BlobURLSigner("http://lb:5004", signing_key(shared), 60)
    q = _query(a.url("r", DIGEST, now=0))
    assert b.valid("r", DIGEST, q["expires"], q["signature"], now=1)
    # The key is derived from the secret, not the secret itself (which signs upload state too).
    assert signing_key(shared) != b"one secret for every replica"

    alone = Settings()
    assert signing_key(alone) != signing_key(alone)  # per process without a shared secret
