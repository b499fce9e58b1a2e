"""Upload sessions hash their bytes as they arrive with the algorithm the client announced, so a
commit in that algorithm needs no second read; any other commit re-reads and still verifies."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.blobstore import layout
from services.blobstore.blobs import BlobInfo, Blobs
from services.blobstore.drivers import PathNotFound, create
from services.blobstore.uploads import UploadInfo, Uploads
from services.common.errors import (
    BLOB_UNKNOWN,
    BLOB_UPLOAD_UNKNOWN,
    DIGEST_INVALID,
    RANGE_INVALID,
    SIZE_INVALID,
    RegistryError,
)

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


# The session's life: offsets, resumption, verification, cancellation, racing commits.


def code_of(call: Callable[[], object]) -> object:
    with pytest.raises(RegistryError) as caught:
        call()
    return caught.value.code


def blob_bytes(uploads: Uploads, digest: str) -> bytes:
    return uploads.driver.get_content(layout.blob_data(digest))


def upload_files(uploads: Uploads, upload_id: str) -> list[str]:
    """The session's files (its folder), not the marker an ended session leaves."""
    return [p for p in uploads.driver._files if f"/_uploads/{upload_id}/" in p]  # type: ignore[attr-defined]


def ended(uploads: Uploads, upload_id: str) -> bool:
    return uploads.driver.file_size(layout.upload_ended(REPO, upload_id)) is not None


def test_start_records_the_session(uploads: Uploads) -> None:
    info = uploads.start(REPO)
    assert uuid.UUID(info.upload_id).version == 4 and info.size == 0 and info.started_at > 0
    assert uploads.status(REPO, info.upload_id) == UploadInfo(info.upload_id, 0, info.started_at)
    assert uploads.start(REPO).upload_id != info.upload_id


def test_writes_must_continue_where_the_upload_ends(uploads: Uploads) -> None:
    upload_id = uploads.start(REPO).upload_id
    assert uploads.write(REPO, upload_id, 0, [DATA[:5], DATA[5:10]]).size == 10
    for offset in (0, 5, 11, 1000):
        with pytest.raises(RegistryError) as caught:
            uploads.write(REPO, upload_id, offset, [b"x"])
        assert caught.value.code is RANGE_INVALID and caught.value.detail == {"size": 10, "offset": offset}
    assert uploads.status(REPO, upload_id).size == 10  # a refused write adds nothing
    assert uploads.write(REPO, upload_id, -1, [DATA[10:20]]).size == 20  # negative: wherever it ends
    assert uploads.write(REPO, upload_id, 20, [DATA[20:], b""]).size == len(DATA)
    assert uploads.commit(REPO, upload_id, digest_of("sha256")) == BlobInfo(digest_of("sha256"), len(DATA))
    assert blob_bytes(uploads, digest_of("sha256")) == DATA


def test_an_empty_upload_commits_the_empty_blob(uploads: Uploads) -> None:
    upload_id = uploads.start(REPO).upload_id
    assert uploads.commit(REPO, upload_id, digest_of("sha256", b"")) == BlobInfo(digest_of("sha256", b""), 0)
    assert uploads.blobs.stat(REPO, digest_of("sha256", b"")).size == 0


def test_a_write_that_breaks_off_keeps_its_bytes_and_resumes(uploads: Uploads, monkeypatch: pytest.MonkeyPatch) -> None:
    rehashed = counting_rehashes(uploads, monkeypatch)
    upload_id = uploads.start(REPO).upload_id

    def broken() -> Iterator[bytes]:
        yield DATA[:7]
        yield DATA[7:12]
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        uploads.write(REPO, upload_id, 0, broken())
    assert uploads.status(REPO, upload_id).size == 12
    uploads.write(REPO, upload_id, 12, [DATA[12:]])
    assert uploads.commit(REPO, upload_id, digest_of("sha256")).size == len(DATA)
    assert rehashed == []  # the running hash covered exactly the kept bytes


def test_an_upload_resumed_by_another_process_is_verified_from_storage(uploads: Uploads, monkeypatch: pytest.MonkeyPatch) -> None:
    upload_id = uploads.start(REPO, "sha512").upload_id
    uploads.write(REPO, upload_id, 0, [DATA[:10]], algorithm="sha512")
    replica = Uploads(uploads.driver, uploads.blobs)
    rehashed = counting_rehashes(replica, monkeypatch)
    assert code_of(lambda: replica.write(REPO, upload_id, 0, [DATA])) is RANGE_INVALID
    info = replica.write(REPO, upload_id, 10, [DATA[10:]])
    assert info.size == len(DATA) and info.started_at == 0  # started elsewhere
    assert replica.status(REPO, upload_id).started_at > 0  # ... and recorded in storage
    assert replica.commit(REPO, upload_id, digest_of("sha512")) == BlobInfo(digest_of("sha512"), len(DATA))
    assert rehashed == ["sha512"]
    assert blob_bytes(uploads, digest_of("sha512")) == DATA


def test_expected_length_must_match_what_arrived(uploads: Uploads) -> None:
    upload_id = uploads.start(REPO).upload_id
    with pytest.raises(RegistryError) as caught:
        uploads.write(REPO, upload_id, 0, [DATA[:5]], expected_length=6)
    assert caught.value.code is SIZE_INVALID and caught.value.detail == {"expected": 6, "received": 5}
    assert uploads.write(REPO, upload_id, -1, [b""], expected_length=0).size == 5


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_a_digest_mismatch_stores_nothing_and_ends_the_session(uploads: Uploads, algorithm: str) -> None:
    upload_id = uploads.start(REPO, algorithm).upload_id
    uploads.write(REPO, upload_id, 0, [DATA], algorithm=algorithm)
    wrong = digest_of(algorithm, DATA[:-1])
    with pytest.raises(RegistryError) as caught:
        uploads.commit(REPO, upload_id, wrong)
    assert caught.value.code is DIGEST_INVALID and caught.value.detail["digest"] == wrong
    assert code_of(lambda: uploads.status(REPO, upload_id)) is BLOB_UPLOAD_UNKNOWN
    assert upload_files(uploads, upload_id) == [] and ended(uploads, upload_id)
    for digest in (wrong, digest_of(algorithm)):
        assert uploads.blobs.stat_global(digest) is None
        assert code_of(lambda: uploads.blobs.stat(REPO, digest)) is BLOB_UNKNOWN  # noqa: B023 - called at once


@pytest.mark.parametrize("digest", ["", "sha256", "sha256:abc", "md5:" + "0" * 32, "sha256:" + "A" * 64, "sha512:" + "0" * 64])
def test_a_malformed_commit_digest_keeps_the_upload(uploads: Uploads, digest: str) -> None:
    upload_id = uploads.start(REPO).upload_id
    uploads.write(REPO, upload_id, 0, [DATA])
    assert code_of(lambda: uploads.commit(REPO, upload_id, digest)) is DIGEST_INVALID
    assert uploads.commit(REPO, upload_id, digest_of("sha256")).size == len(DATA)  # still there


def test_a_commit_links_the_blob_and_removes_the_session(uploads: Uploads) -> None:
    upload_id = uploads.start(REPO).upload_id
    uploads.write(REPO, upload_id, 0, [DATA])
    uploads.commit(REPO, upload_id, digest_of("sha256"))
    assert uploads.blobs.stat(REPO, digest_of("sha256")).size == len(DATA)
    assert code_of(lambda: uploads.blobs.stat("uploads/other", digest_of("sha256"))) is BLOB_UNKNOWN
    assert upload_files(uploads, upload_id) == [] and ended(uploads, upload_id)
    for call in (
        lambda: uploads.status(REPO, upload_id),
        lambda: uploads.write(REPO, upload_id, -1, [b"x"]),
        lambda: uploads.commit(REPO, upload_id, digest_of("sha256")),
        lambda: uploads.cancel(REPO, upload_id),
    ):
        assert code_of(call) is BLOB_UPLOAD_UNKNOWN


def test_cancel_removes_the_session_and_its_bytes(uploads: Uploads) -> None:
    upload_id = uploads.start(REPO).upload_id
    uploads.write(REPO, upload_id, 0, [DATA])
    uploads.cancel(REPO, upload_id)
    assert upload_files(uploads, upload_id) == [] and ended(uploads, upload_id)
    assert code_of(lambda: uploads.cancel(REPO, upload_id)) is BLOB_UPLOAD_UNKNOWN
    assert code_of(lambda: uploads.write(REPO, upload_id, 0, [DATA])) is BLOB_UPLOAD_UNKNOWN
    assert code_of(lambda: uploads.commit(REPO, upload_id, digest_of("sha256"))) is BLOB_UPLOAD_UNKNOWN
    assert uploads.blobs.stat_global(digest_of("sha256")) is None
    uploads.discard(REPO, upload_id)  # gone already: no error


def test_an_upload_belongs_to_its_repository(uploads: Uploads) -> None:
    upload_id = uploads.start(REPO).upload_id
    other = "uploads/other"
    for call in (
        lambda: uploads.status(other, upload_id),
        lambda: uploads.write(other, upload_id, 0, [DATA]),
        lambda: uploads.commit(other, upload_id, digest_of("sha256")),
        lambda: uploads.cancel(other, upload_id),
    ):
        assert code_of(call) is BLOB_UPLOAD_UNKNOWN
    assert uploads.status(REPO, upload_id).size == 0


@pytest.mark.parametrize("upload_id", [str(uuid.uuid4()), "not-an-id", "../../../blobs", "", "A" * 36])
def test_unknown_and_malformed_upload_ids(uploads: Uploads, upload_id: str) -> None:
    for call in (
        lambda: uploads.status(REPO, upload_id),
        lambda: uploads.write(REPO, upload_id, 0, [DATA]),
        lambda: uploads.commit(REPO, upload_id, digest_of("sha256")),
        lambda: uploads.cancel(REPO, upload_id),
    ):
        assert code_of(call) is BLOB_UPLOAD_UNKNOWN
    assert not uploads.driver._files  # type: ignore[attr-defined]  # nothing was written


def test_concurrent_commits_of_the_same_digest(uploads: Uploads) -> None:
    """Eight sessions (two repositories) with the same content commit at once: every one succeeds,
    the blob is the content, each repository links it."""
    repos = [REPO if i % 2 else "uploads/other" for i in range(8)]
    ids = []
    for repo in repos:
        upload_id = uploads.start(repo).upload_id
        uploads.write(repo, upload_id, 0, [DATA])
        ids.append(upload_id)
    start = threading.Barrier(len(ids))

    def commit(i: int) -> BlobInfo:
        start.wait()
        return uploads.commit(repos[i], ids[i], digest_of("sha256"))

    with ThreadPoolExecutor(len(ids)) as pool:
        results = list(pool.map(commit, range(len(ids))))
    assert results == [BlobInfo(digest_of("sha256"), len(DATA))] * len(ids)
    assert blob_bytes(uploads, digest_of("sha256")) == DATA
    for repo in set(repos):
        assert uploads.blobs.stat(repo, digest_of("sha256")).size == len(DATA)
    assert all(upload_files(uploads, upload_id) == [] for upload_id in ids)


def test_concurrent_commits_of_one_session_succeed_once(uploads: Uploads) -> None:
    upload_id = uploads.start(REPO).upload_id
    uploads.write(REPO, upload_id, 0, [DATA])
    start = threading.Barrier(4)

    def commit(_: int) -> object:
        start.wait()
        try:
            return uploads.commit(REPO, upload_id, digest_of("sha256"))
        except RegistryError as exc:
            return exc.code

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(commit, range(4)))
    assert results.count(BlobInfo(digest_of("sha256"), len(DATA))) == 1
    assert results.count(BLOB_UPLOAD_UNKNOWN) == 3


def test_a_write_racing_a_commit_either_lands_before_it_or_fails(uploads: Uploads) -> None:
    for _ in range(20):
        upload_id = uploads.start(REPO).upload_id
        uploads.write(REPO, upload_id, 0, [DATA])
        start = threading.Barrier(2)

        def write(start: threading.Barrier = start, upload_id: str = upload_id) -> object:
            start.wait()
            try:
                return uploads.write(REPO, upload_id, len(DATA), [b"more"]).size
            except RegistryError as exc:
                return exc.code

        def commit(start: threading.Barrier = start, upload_id: str = upload_id) -> object:
            start.wait()
            try:
                return uploads.commit(REPO, upload_id, digest_of("sha256"))
            except RegistryError as exc:
                return exc.code

        with ThreadPoolExecutor(2) as pool:
            wrote, committed = pool.submit(write), pool.submit(commit)
            outcome = (wrote.result(), committed.result())
        # Written first: the commit sees the extra bytes and refuses. Committed first: the write finds no upload.
        assert outcome in [(len(DATA) + 4, DIGEST_INVALID), (BLOB_UPLOAD_UNKNOWN, BlobInfo(digest_of("sha256"), len(DATA)))]


# A whole blob in one call (Uploads.store): a monolithic push, a mirror's fetch.


def _leftovers(uploads: Uploads) -> list[str]:
    """Whatever is left under the repository's upload folder."""
    folder = layout.upload_dir(REPO, str(uuid.uuid4())).rsplit("/", 1)[0]
    try:
        return list(uploads.driver.walk(folder))
    except PathNotFound:
        return []


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_store_links_a_verified_blob_and_leaves_no_session(uploads: Uploads, algorithm: str) -> None:
    info = uploads.store(REPO, [DATA[:7], DATA[7:]], digest_of(algorithm), expected_length=len(DATA))
    assert info == BlobInfo(digest_of(algorithm), len(DATA))
    assert uploads.blobs.stat(REPO, digest_of(algorithm)).size == len(DATA)
    assert uploads.driver.get_content(layout.blob_data(digest_of(algorithm))) == DATA
    assert _leftovers(uploads) == []


@pytest.mark.parametrize(
    ("digest", "expected_length", "code"),
    [
        (digest_of("sha256", b"other bytes"), -1, DIGEST_INVALID),
        (digest_of("sha256"), len(DATA) + 1, SIZE_INVALID),
    ],
)
def test_store_of_content_that_does_not_match_stores_nothing(uploads: Uploads, digest: str, expected_length: int, code: object) -> None:
    with pytest.raises(RegistryError) as raised:
        uploads.store(REPO, [DATA], digest, expected_length)
    assert raised.value.code is code
    assert uploads.driver.file_size(layout.blob_data(digest)) is None
    with pytest.raises(RegistryError):
        uploads.blobs.stat(REPO, digest)
    assert _leftovers(uploads) == []


def test_store_whose_bytes_break_off_stores_nothing(uploads: Uploads) -> None:
    def broken() -> Iterator[bytes]:
        yield DATA[:10]
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        uploads.store(REPO, broken(), digest_of("sha256"))
    assert uploads.driver.file_size(layout.blob_data(digest_of("sha256"))) is None
    assert _leftovers(uploads) == []


# Fresh sessions: started by a gateway, in storage only from their first bytes.


def fresh_id() -> tuple[str, int]:
    return str(uuid.uuid4()), int(time.time())


def test_a_fresh_session_is_empty_until_written_and_costs_no_storage(uploads: Uploads) -> None:
    upload_id, since = fresh_id()
    assert uploads.status(REPO, upload_id, since) == UploadInfo(upload_id, 0, since)
    assert not uploads.driver._files  # type: ignore[attr-defined]
    assert code_of(lambda: uploads.status(REPO, upload_id)) is BLOB_UPLOAD_UNKNOWN  # only its fresh URL knows it
    assert code_of(lambda: uploads.write(REPO, upload_id, 3, [DATA], fresh_since=since)) is RANGE_INVALID
    assert uploads.write(REPO, upload_id, 0, [DATA[:10]], fresh_since=since).size == 10
    # Stored now: any URL of it finds it, with the start time the gateway signed.
    assert uploads.status(REPO, upload_id) == UploadInfo(upload_id, 10, since)
    uploads.write(REPO, upload_id, 10, [DATA[10:]])
    assert uploads.commit(REPO, upload_id, digest_of("sha256"), since).size == len(DATA)
    assert blob_bytes(uploads, digest_of("sha256")) == DATA


def test_a_fresh_session_stored_whole_leaves_only_its_end_marker(uploads: Uploads) -> None:
    upload_id, since = fresh_id()
    assert uploads.unstored(REPO, upload_id, since)
    assert uploads.store(REPO, [DATA], digest_of("sha256"), upload_id=upload_id).size == len(DATA)
    assert uploads.blobs.stat(REPO, digest_of("sha256")).size == len(DATA)
    assert upload_files(uploads, upload_id) == [] and ended(uploads, upload_id)
    for call in (
        lambda: uploads.unstored(REPO, upload_id, since),
        lambda: uploads.status(REPO, upload_id, since),
        lambda: uploads.write(REPO, upload_id, 0, [DATA], fresh_since=since),
        lambda: uploads.commit(REPO, upload_id, digest_of("sha256"), since),
        lambda: uploads.cancel(REPO, upload_id, since),
    ):
        assert code_of(call) is BLOB_UPLOAD_UNKNOWN  # its first URL cannot bring it back


def test_a_fresh_session_stays_fresh_after_a_failed_store_but_not_after_a_mismatch(uploads: Uploads) -> None:
    upload_id, since = fresh_id()
    assert code_of(lambda: uploads.store(REPO, [DATA], digest_of("sha256"), len(DATA) + 1, upload_id)) is SIZE_INVALID
    assert uploads.status(REPO, upload_id, since).size == 0 and not uploads.driver._files  # type: ignore[attr-defined]
    assert code_of(lambda: uploads.store(REPO, [DATA], digest_of("sha256", b"other"), upload_id=upload_id)) is DIGEST_INVALID
    assert code_of(lambda: uploads.status(REPO, upload_id, since)) is BLOB_UPLOAD_UNKNOWN
    assert uploads.blobs.stat_global(digest_of("sha256")) is None


def test_committing_a_fresh_session_with_nothing_written(uploads: Uploads) -> None:
    """POST, then PUT without a body: the empty blob, or a mismatch that ends the session."""
    upload_id, since = fresh_id()
    empty = digest_of("sha256", b"")
    assert uploads.commit(REPO, upload_id, empty, since).size == 0
    assert uploads.blobs.stat(REPO, empty).size == 0
    other, since = fresh_id()
    assert code_of(lambda: uploads.commit(REPO, other, digest_of("sha256"), since)) is DIGEST_INVALID
    assert code_of(lambda: uploads.status(REPO, other, since)) is BLOB_UPLOAD_UNKNOWN


def test_a_cancelled_fresh_session_stays_cancelled(uploads: Uploads) -> None:
    upload_id, since = fresh_id()
    uploads.cancel(REPO, upload_id, since)
    assert code_of(lambda: uploads.write(REPO, upload_id, 0, [DATA], fresh_since=since)) is BLOB_UPLOAD_UNKNOWN
    assert code_of(lambda: uploads.unstored(REPO, upload_id, since)) is BLOB_UPLOAD_UNKNOWN
    assert upload_files(uploads, upload_id) == []


def test_a_fresh_session_expires_with_upload_purging_age(uploads: Uploads) -> None:
    bounded = Uploads(uploads.driver, uploads.blobs, fresh_lifetime=3600)
    upload_id = str(uuid.uuid4())
    assert bounded.status(REPO, upload_id, int(time.time()) - 3500).size == 0
    assert code_of(lambda: bounded.status(REPO, upload_id, int(time.time()) - 3700)) is BLOB_UPLOAD_UNKNOWN
    assert code_of(lambda: bounded.write(REPO, upload_id, 0, [DATA], fresh_since=int(time.time()) - 3700)) is BLOB_UPLOAD_UNKNOWN
