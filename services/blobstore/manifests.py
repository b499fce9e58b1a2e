"""Manifests, tags and referrer entries of a repository.

Manifests are stored as blobs (content-addressed, exact bytes) with a revision link in the
repository; a tag is a link to a revision. The gateway has already validated the manifest and
tells us what it references, so this module only checks presence and writes records.

Writes and deletes of a repository's manifests and tags run one at a time (``_serialized``), reads
run freely: see there why that makes each of them take effect at one instant.
"""

from __future__ import annotations

import functools
import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from services.blobstore import layout
from services.blobstore.blobs import Blobs
from services.blobstore.drivers import PathNotFound, StorageDriver
from services.common import digests
from services.common.errors import (
    MANIFEST_BLOB_UNKNOWN,
    MANIFEST_UNKNOWN,
    NAME_UNKNOWN,
    RegistryError,
)


@dataclass(frozen=True)
class StoredManifest:
    digest: str
    payload: bytes


@dataclass(frozen=True)
class NamePage:
    names: list[str]
    more: bool


F = TypeVar("F", bound=Callable[..., Any])


def _serialized(method: F) -> F:
    """Runs a write or delete under the repository's storage lock, shared by every blobstore.

    Each is several storage calls: a push writes the revision link, then each tag's links; a
    manifest delete removes the revision, then sweeps the tags pointing at it. Interleaved, they
    fail (on the filesystem a tag delete removes the folder a push is renaming its new link into)
    or lose updates (a sweep that read "latest -> A" deletes the "latest -> B" pushed just after).
    One at a time, each takes effect at one instant: the push when its tag link is replaced, the
    delete when its revision or tag link goes. A tag is there for a reader exactly when its link and
    the revision it names both are, and since a push writes the revision first and a delete removes
    it first, what a reader sees flips at those instants and nowhere in between.
    """

    @functools.wraps(method)
    def locked(self: Manifests, repository: str, *args: Any, **kwargs: Any) -> Any:
        with self.driver.lock(layout.repository(repository)):
            return method(self, repository, *args, **kwargs)

    return cast(F, locked)


class Manifests:
    def __init__(self, driver: StorageDriver, blobs: Blobs) -> None:
        self.driver = driver
        self.blobs = blobs

    @_serialized
    def put(
        self,
        repository: str,
        digest: str,
        payload: bytes,
        *,
        tags: Sequence[str] = (),
        required_blobs: Sequence[str] = (),
        required_manifests: Sequence[str] = (),
        subject: str = "",
        referrer_descriptor: bytes = b"",
    ) -> None:
        # Every tag's links first: a tag the grammar refuses fails the push before anything is written.
        tag_links = [(layout.tag_index_link(repository, tag, digest), layout.tag_current_link(repository, tag)) for tag in tags]
        missing = self.blobs.missing(repository, list(required_blobs))
        missing += [d for d in dict.fromkeys(required_manifests) if not self._has_revision(repository, d)]
        if missing:
            raise RegistryError(MANIFEST_BLOB_UNKNOWN, {"digests": missing})
        referenced = list(dict.fromkeys([*required_blobs, *required_manifests]))
        if self.driver.file_size(layout.GC_STATE) is None:
            self._store_payload(digest, payload, referenced)
        else:
            # A garbage collection is running (services/blobstore/gc.py): name what this manifest
            # references before checking it is there, under the lock its sweep deletes under, so
            # the sweep either sees the names and keeps the blobs or has already deleted them and
            # this push fails instead of pointing at nothing.
            with self.driver.lock(layout.GC_SWEEP_LOCK):
                for ref in [digest, *referenced]:
                    self.driver.put_content(layout.gc_live(ref), b"")
                self._store_payload(digest, payload, referenced)
        self.driver.put_content(layout.revision_link(repository, digest), digest.encode())
        if subject:
            self.driver.put_content(layout.referrer_entry(repository, subject, digest), referrer_descriptor)
        for index_link, current_link in tag_links:
            self.driver.put_content(index_link, digest.encode())
            self.driver.put_content(current_link, digest.encode())

    def _store_payload(self, digest: str, payload: bytes, referenced: list[str]) -> None:
        """Checks the content of what the manifest references is in the store (links can outlive
        content that garbage collection removed), then stores the manifest's bytes."""
        gone = [d for d in referenced if self.driver.file_size(layout.blob_data(d)) is None]
        if gone:
            raise RegistryError(MANIFEST_BLOB_UNKNOWN, {"digests": gone})
        if self.driver.file_size(layout.blob_data(digest)) is None:
            self.driver.put_content(layout.blob_data(digest), payload)

    def get(self, repository: str, reference: str) -> StoredManifest:
        digest = reference if digests.is_digest(reference) else self.resolve_tag(repository, reference)
        if not self._has_revision(repository, digest):
            raise self._unknown(repository, reference)
        try:
            return StoredManifest(digest, self.driver.get_content(layout.blob_data(digest)))
        except PathNotFound:
            raise self._unknown(repository, reference) from None

    def resolve_tag(self, repository: str, tag: str) -> str:
        try:
            return self.driver.get_content(layout.tag_current_link(repository, tag)).decode()
        except PathNotFound:
            raise self._unknown(repository, tag) from None

    @_serialized
    def delete(self, repository: str, digest: str, subject: str = "") -> None:
        """Deletes a revision, every tag that points at it, and its referrer entry."""
        digests.parse(digest)
        try:
            self.driver.delete(layout.revision_dir(repository, digest))
        except PathNotFound:
            raise self._unknown(repository, digest) from None
        for tag in self.tags(repository):
            try:
                current = self.driver.get_content(layout.tag_current_link(repository, tag)).decode()
            except PathNotFound:
                continue
            if current == digest:
                self._delete_quietly(layout.tag_dir(repository, tag))
        if subject:
            self._delete_quietly(layout.referrer_entry(repository, subject, digest))

    @_serialized
    def delete_tag(self, repository: str, tag: str) -> None:
        try:
            self.driver.delete(layout.tag_dir(repository, tag))
        except PathNotFound:
            raise self._unknown(repository, tag) from None

    def tags(self, repository: str) -> list[str]:
        try:
            return [p.rsplit("/", 1)[1] for p in self.driver.list(layout.tags_dir(repository))]
        except PathNotFound:
            if not self._repository_exists(repository):
                raise RegistryError(NAME_UNKNOWN, {"name": repository}) from None
            return []

    def list_tags(self, repository: str, last: str, limit: int) -> NamePage:
        """Reads the tags folder from ``last`` on, and only as far as the page needs."""
        try:
            return _page((p.rsplit("/", 1)[1] for p in self.driver.children(layout.tags_dir(repository), last)), limit)
        except PathNotFound:
            if not self._repository_exists(repository):
                raise RegistryError(NAME_UNKNOWN, {"name": repository}) from None
            return NamePage([], False)

    def referrers(self, repository: str, subject: str) -> list[bytes]:
        try:
            entries = self.driver.list(layout.referrers_dir(repository, subject))
        except PathNotFound:
            return []
        found = []
        for path in entries:
            try:
                found.append(self.driver.get_content(path))
            except PathNotFound:
                continue  # deleted while we listed
        return found

    def _has_revision(self, repository: str, digest: str) -> bool:
        return self.driver.file_size(layout.revision_link(repository, digest)) is not None

    def _repository_exists(self, repository: str) -> bool:
        try:
            self.driver.stat(layout.repository(repository))
            return True
        except PathNotFound:
            return False

    def _unknown(self, repository: str, reference: str) -> RegistryError:
        if not self._repository_exists(repository):
            return RegistryError(NAME_UNKNOWN, {"name": repository})
        return RegistryError(MANIFEST_UNKNOWN, {"reference": reference})

    def _delete_quietly(self, path: str) -> None:
        try:
            self.driver.delete(path)
        except PathNotFound:
            pass


class Catalog:
    """Repository names, found by walking the repositories folder in the order of the names.

    A name is a folder holding ``_manifests`` or ``_layers``; any folder not starting with ``_``
    may hold more names ("a" and "a/b" are both repositories). The catalog's order is lexical over
    the whole name, which is not the order of a walk: "a-b" and "a.b" come between "a" and "a/b"
    ("-" and "." sort below "/"). So below each folder, the name of a child is produced at its own
    place and the child's folder is walked at the place of its name plus "/"; a heap holds the
    folders still to walk. Children that cannot hold a name after ``last`` are not read, and the
    walk stops when the page is full: a page costs what it holds, not the size of the tree.
    """

    MARKERS = ("_layers", "_manifests")

    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver

    def list(self, last: str, limit: int) -> NamePage:
        return _page(self._names(layout.REPOSITORIES, "", last), limit)

    def _names(self, path: str, prefix: str, last: str) -> Iterator[str]:
        """Names after ``last`` in the folder ``path``, whose names all start with ``prefix``."""
        rest = last[len(prefix) :] if last.startswith(prefix) else ""
        # The children that can hold a name after ``last`` are those from the part of its next
        # component before any "-" or "." on (below that, "a" when ``last`` is "a-b/c": "a/..." is
        # after "a-b/c").
        first = rest.split("/", 1)[0]
        first = first[: min((i for i in (first.find("-"), first.find(".")) if i >= 0), default=len(first))]
        waiting: list[tuple[str, str]] = []
        for child in self._children(path, first[:-1]):
            leaf = child.rsplit("/", 1)[1]
            if leaf.startswith("_"):
                continue
            name = prefix + leaf
            while waiting and waiting[0][0] < name:
                below, folder = heapq.heappop(waiting)
                yield from self._names(folder, below, last)
            if name > last and self._is_repository(child):
                yield name
            below = name + "/"
            if last < below or last.startswith(below):
                heapq.heappush(waiting, (below, child))
        while waiting:
            below, folder = heapq.heappop(waiting)
            yield from self._names(folder, below, last)

    def _children(self, path: str, after: str) -> Iterator[str]:
        try:
            yield from self.driver.children(path, after)
        except PathNotFound:
            return  # deleted while we walked

    def _is_repository(self, path: str) -> bool:
        # "_..." sorts after digits and capitals and before small letters: stop at the first other.
        for child in self._children(path, "_"):
            leaf = child.rsplit("/", 1)[1]
            if leaf in self.MARKERS:
                return True
            if not leaf.startswith("_"):
                return False
        return False


def _page(names: Iterable[str], limit: int) -> NamePage:
    """At most ``limit`` of ``names`` (0 = all), and whether there were more; reads one past."""
    if not limit:
        return NamePage(list(names), False)
    found = list(itertools.islice(names, limit + 1))
    return NamePage(found[:limit], len(found) > limit)
