"""Upload sessions hash their bytes as they arrive with the algorithm the client announced, so a
commit in that algorithm needs no second read; any other commit re-reads and still verifies."""
from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from services.blobstore.blobs import Blobs
from services.blobstore.drivers import create
from services.blobstore.uploads import Uploads
from services.common.errors import DIGEST_INVALID, RegistryError

DATA = b"0123456789abcdefghijklmnopqrstuvwxyz"
REPO = "uploads/unit"


def digest_of(algorithm: str, data: bytes = DATA) -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def counting_rehashes(uploads: Uploads, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The algorithms of the re-reads ``uploads`` makes at commit."""
    rehashed: list[str] = []
    original: Callable[[str, str], str] = uploads._rehash

    def rehash(path: str, algorithm: str) -> str:
        rehashed.append(algorithm)
        return original(path, algorithm)

    monkeypatch.setattr(uploads, "_rehash", rehash)
    return rehashed


@pytest.fixture()
def uploads() -> Uploads:
    driver = create("inmemory", {})
    return Uploads(driver, Blobs(driver))


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_the_announced_algorithm_hashes_while_bytes_arrive(uploads: Uploads, monkeypatch: pytest.MonkeyPatch, algorithm: str) -> None:
    rehashed = counting_rehashes(uploads, monkeypatch)
    upload_id = uploads.start(REPO, algorithm).upload_id
    uploads.write(REPO, upload_id, 0, [DATA[:10]], algorithm=algorithm)
    uploads.write(REPO, upload_id, 10, [DATA[10:]], algorithm=algorithm)
    assert uploads.commit(REPO, upload_id, digest_of(algorithm)).size == len(DATA)
    assert rehashed == []


def test_a_session_new_to_this_process_hashes_with_the_algorithm_its_first_write_names(
    uploads: Uploads, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another replica started the session: the first chunk's write carries the announcement."""
    upload_id = uploads.start(REPO).upload_id
    replica = Uploads(uploads.driver, uploads.blobs)
    rehashed = counting_rehashes(replica, monkeypatch)
    replica.write(REPO, upload_id, 0, [DATA], algorithm="sha512")
    replica.commit(REPO, upload_id, digest_of("sha512"))
    assert rehashed == []


def test_a_commit_in_another_algorithm_re_reads_and_verifies(uploads: Uploads, monkeypatch: pytest.MonkeyPatch) -> None:
    rehashed = counting_rehashes(uploads, monkeypatch)
    upload_id = uploads.start(REPO, "sha512").upload_id
    uploads.write(REPO, upload_id, 0, [DATA], algorithm="sha512")
    assert uploads.commit(REPO, upload_id, digest_of("sha256")).digest == digest_of("sha256")
    assert rehashed == ["sha256"]

    upload_id = uploads.start(REPO, "sha512").upload_id
    uploads.write(REPO, upload_id, 0, [DATA], algorithm="sha512")
    with pytest.raises(RegistryError) as caught:
        uploads.commit(REPO, upload_id, digest_of("sha256", DATA + b"!"))
    assert caught.value.code is DIGEST_INVALID


@pytest.mark.parametrize("algorithm", ["md5", "sha384", ""])
def test_an_unsupported_algorithm_starts_nothing(uploads: Uploads, algorithm: str) -> None:
    with pytest.raises(RegistryError) as caught:
        uploads.start(REPO, algorithm)
    assert caught.value.code is DIGEST_INVALID
