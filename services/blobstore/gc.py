"""Garbage collection: mark every blob a kept manifest references, sweep the rest; offline or
while pushes go on (docs/architecture.md, "Garbage collection", has the safety argument).

registry:2's semantics. Every revision of every repository is kept (with ``delete_untagged``,
only those a tag reaches directly, through an index, as a subject or as a referrer of a kept one;
the others are deleted with their referrer entries), and marks itself, its config, layers, blobs,
child manifests and subject. Blob content not marked is deleted, links to it first, then the
content; repositories left without manifests or links leave the catalog.

Online, three things keep a push safe:

- the delay: content written less than ``delay`` before the collection began is never swept (a
  push uploads its blobs before the manifest that references them; a commit of content already
  stored rewrites it, so a blob a push is about to reuse is young again);
- the mark of each repository runs under its lock, the one manifest pushes hold; a collection
  writes ``_gc/state`` before the first of them, so a push either lands before the repository is
  marked (and is seen) or reads the state after it;
- a push that sees the state names what it references in ``_gc/live/`` and checks that content is
  there, both under the sweep lock; the sweep reads those names under the same lock before each
  batch of deletes. So either the sweep sees the name and keeps the blob, or it deleted the blob
  before and the push finds it missing and fails (MANIFEST_BLOB_UNKNOWN) instead of acknowledging
  a manifest whose content is gone.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from services.blobstore import layout
from services.blobstore.drivers import PathNotFound, StorageDriver
from services.blobstore.drivers.base import StorageDriver as _Base
from services.common import digests

log = logging.getLogger("berth.blobstore.gc")

SWEEP_BATCH = 500


@dataclass
class Report:
    repositories: int = 0
    manifests_kept: int = 0
    manifests_removed: int = 0
    blobs_kept: int = 0
    blobs_removed: int = 0
    bytes_freed: int = 0
    links_removed: int = 0
    repositories_removed: int = 0
    # Blobs left because they are younger than the delay, or named by a push during the run.
    blobs_recent: int = 0
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (
            f"{self.repositories} repositories: {self.manifests_kept} manifests kept, {verb} {self.manifests_removed}; "
            f"{self.blobs_kept} blobs kept ({self.blobs_recent} of them too recent to collect), {verb} "
            f"{self.blobs_removed} ({_size(self.bytes_freed)} freed), {self.links_removed} repository links and "
            f"{self.repositories_removed} empty repositories {verb}" + (f"; {len(self.errors)} errors" if self.errors else "")
        )


def _link_repository(link: str) -> str:
    """The repository of ``<REPOSITORIES>/<name>/_layers/<alg>/<hex>/link``."""
    return link[len(layout.REPOSITORIES) + 1 :].rsplit("/_layers/", 1)[0]


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


class GCError(Exception):
    """The collection stopped before sweeping (nothing was deleted by the sweep)."""


def references(payload: bytes) -> tuple[list[str], list[str], str]:
    """(blobs, child manifests, subject) a manifest names: config, layers, an artifact's blobs,
    schema1's fsLayers; an index's manifests; the subject."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return [], [], ""
    if not isinstance(doc, dict):
        return [], [], ""

    def digests_of(items: Any) -> list[str]:
        found = []
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict):
                value = item.get("digest") or item.get("blobSum")
                if isinstance(value, str) and digests.is_digest(value):
                    found.append(value)
        return found

    blobs = digests_of([doc.get("config")]) + digests_of(doc.get("layers")) + digests_of(doc.get("blobs"))
    blobs += digests_of(doc.get("fsLayers"))
    children = digests_of(doc.get("manifests"))
    subject = (digests_of([doc.get("subject")]) or [""])[0]
    return blobs, children, subject


class GarbageCollector:
    def __init__(
        self,
        driver: StorageDriver,
        *,
        dry_run: bool = False,
        delete_untagged: bool = False,
        delay: float = 0.0,
        progress: Callable[[str], None] | None = None,
        forget: Callable[[list[tuple[str, str, str]]], None] | None = None,
    ) -> None:
        self.driver = driver
        self.dry_run = dry_run
        self.delete_untagged = delete_untagged
        self.delay = delay
        self.progress = progress or (lambda _message: None)
        # Told (repository, "blob" or "manifest", digest) after each batch of removals: the
        # gateways' metadata cache (gc_cache.py). Raises when it could not be told.
        self.forget = forget
        self._unforgotten: list[tuple[str, str, str]] = []
        self._forget_failure: Exception | None = None
        self._parsed: dict[str, tuple[list[str], list[str], str] | None] = {}

    # Listing

    def _list(self, path: str) -> list[str]:
        try:
            return self.driver.list(path)
        except PathNotFound:
            return []

    def repositories(self) -> list[str]:
        found = []

        def below(path: str, prefix: str) -> None:
            children = self._list(path)
            leaves = [c.rsplit("/", 1)[1] for c in children]
            if any(leaf in ("_manifests", "_layers") for leaf in leaves):
                found.append(prefix.rstrip("/"))
            for child, leaf in zip(children, leaves, strict=True):
                if not leaf.startswith("_"):
                    below(child, f"{prefix}{leaf}/")

        below(layout.REPOSITORIES, "")
        return sorted(found)

    def _digests_below(self, path: str) -> dict[str, str]:
        """digest -> folder, for folders laid out ``<path>/<alg>/<hex>``."""
        found = {}
        for alg_dir in self._list(path):
            alg = alg_dir.rsplit("/", 1)[1]
            for hex_dir in self._list(alg_dir):
                digest = f"{alg}:{hex_dir.rsplit('/', 1)[1]}"
                if digests.is_digest(digest):
                    found[digest] = hex_dir
        return found

    def _parse(self, digest: str) -> tuple[list[str], list[str], str] | None:
        if digest not in self._parsed:
            try:
                self._parsed[digest] = references(self.driver.get_content(layout.blob_data(digest)))
            except PathNotFound:
                self._parsed[digest] = None
        return self._parsed[digest]

    # Mark

    def _mark_repository(self, repository: str, marked: set[str], report: Report) -> dict[str, str]:
        """Marks what the repository's kept manifests reference; returns its links (digest -> folder)."""
        base = layout.repository(repository)
        revisions = self._digests_below(f"{base}/_manifests/revisions")
        tagged: set[str] = set()
        for tag_dir in self._list(layout.tags_dir(repository)):
            try:
                tagged.add(self.driver.get_content(f"{tag_dir}/current/link").decode())
            except PathNotFound:
                continue
        parsed = {d: self._parse(d) for d in revisions}
        for digest, refs in parsed.items():
            if refs is None:
                report.warnings.append(f"{repository}@{digest}: the manifest's content is missing")
        kept = set(revisions)
        if self.delete_untagged:
            kept = self._reachable(tagged & set(revisions), parsed)
            for digest in sorted(set(revisions) - kept):
                report.manifests_removed += 1
                self.progress(f"{'would delete' if self.dry_run else 'deleting'} untagged manifest {repository}@{digest}")
                if not self.dry_run:
                    self._delete_quietly(revisions[digest])
                    subject = (parsed.get(digest) or ([], [], ""))[2]
                    if subject:
                        self._delete_quietly(layout.referrer_entry(repository, subject, digest))
                    self._forget([(repository, "manifest", digest)])
        report.manifests_kept += len(kept)
        for digest in kept:
            marked.add(digest)
            refs = parsed.get(digest)
            if refs is not None:
                blobs, children, subject = refs
                marked.update(blobs)
                marked.update(children)
                if subject:
                    marked.add(subject)
        return self._digests_below(f"{base}/_layers")

    @staticmethod
    def _reachable(roots: set[str], parsed: dict[str, tuple[list[str], list[str], str] | None]) -> set[str]:
        """Revisions reached from the tagged ones through index children, subjects and referrers."""
        referrers: dict[str, list[str]] = {}
        for digest, refs in parsed.items():
            if refs is not None and refs[2]:
                referrers.setdefault(refs[2], []).append(digest)
        kept: set[str] = set()
        todo = list(roots)
        while todo:
            digest = todo.pop()
            if digest in kept or digest not in parsed:
                continue
            kept.add(digest)
            refs = parsed[digest]
            if refs is not None:
                todo += refs[1]
                if refs[2]:
                    todo.append(refs[2])
            todo += referrers.get(digest, [])
        return kept

    # Sweep

    def _blob_inventory(self) -> Iterator[tuple[str, str, int | None, float | None]]:
        """(digest, data path, size, modified) of every blob content; size and time None when they
        cost a request each to learn (filesystem: asked only of candidates)."""
        root = f"{layout.ROOT}/blobs"
        if type(self.driver)._walk is not _Base._walk:  # one listing gives sizes and times (S3)
            try:
                for info in self.driver.walk(root):
                    parts = info.path[len(root) + 1 :].split("/")
                    if not info.is_dir and len(parts) == 4 and parts[3] == "data":
                        yield f"{parts[0]}:{parts[2]}", info.path, info.size, info.modified
            except PathNotFound:
                return
            return
        for alg_dir in self._list(root):
            for prefix_dir in self._list(alg_dir):
                for hex_dir in self._list(prefix_dir):
                    yield f"{alg_dir.rsplit('/', 1)[1]}:{hex_dir.rsplit('/', 1)[1]}", f"{hex_dir}/data", None, None

    def _live(self) -> set[str]:
        names = set()
        for path in self._list(layout.GC_LIVE):
            alg, _, hex_ = path.rsplit("/", 1)[1].partition("-")
            names.add(f"{alg}:{hex_}")
        return names

    def _sweep(self, marked: set[str], links: dict[str, dict[str, str]], cutoff: float, report: Report) -> None:
        linked: dict[str, list[str]] = {}
        for repository_links in links.values():
            for digest, folder in repository_links.items():
                linked.setdefault(digest, []).append(f"{folder}/link")
        candidates: list[tuple[str, str, int | None, float | None]] = []
        for seen, (digest, path, size, modified) in enumerate(self._blob_inventory(), 1):
            if digest in marked:
                report.blobs_kept += 1
            else:
                candidates.append((digest, path, size, modified))
            if seen % 1000 == 0:
                self.progress(f"sweep: {seen} blobs listed, {len(candidates)} unreferenced")
        for start in range(0, len(candidates), SWEEP_BATCH):
            self._sweep_batch(candidates[start : start + SWEEP_BATCH], linked, cutoff, report)
            self.progress(f"sweep: {min(start + SWEEP_BATCH, len(candidates))}/{len(candidates)} unreferenced blobs done")
        # Links to content that is not there at all (an interrupted sweep removed the content
        # after its links... or never had it): old ones go, so HEAD says what GET would.
        stored = {c[0] for c in candidates} | marked
        dangling = [(d, paths) for d, paths in linked.items() if d not in stored]
        if dangling and not self.dry_run:
            with self.driver.lock(layout.GC_SWEEP_LOCK):
                live = self._live()
                old = [p for d, paths in dangling if d not in live for p in paths if self._older(p, cutoff)]
                self.driver.delete_files(old)
                report.links_removed += len(old)
            self._forget([(_link_repository(p), "blob", d) for d, paths in dangling for p in paths if p in old])

    def _older(self, path: str, cutoff: float) -> bool:
        try:
            return self.driver.stat(path).modified < cutoff
        except PathNotFound:
            return False

    def _sweep_batch(
        self, batch: list[tuple[str, str, int | None, float | None]], linked: dict[str, list[str]], cutoff: float, report: Report
    ) -> None:
        def doomed(live: set[str]) -> list[tuple[str, str, int]]:
            chosen = []
            for digest, path, size, modified in batch:
                if size is None or modified is None:
                    try:
                        info = self.driver.stat(path)
                    except PathNotFound:
                        continue
                    size, modified = info.size, info.modified
                if digest in live or modified >= cutoff:
                    report.blobs_recent += 1
                    report.blobs_kept += 1
                    continue
                chosen.append((digest, path, size))
            return chosen

        if self.dry_run:
            chosen = doomed(set())
        else:
            with self.driver.lock(layout.GC_SWEEP_LOCK):
                chosen = doomed(self._live())
                link_paths = [p for digest, _, _ in chosen for p in linked.get(digest, ())]
                # Links first: an interrupted sweep leaves content nothing links to (the next run
                # removes it), never a link a HEAD would answer for content that is gone.
                self.driver.delete_files(link_paths)
                report.links_removed += len(link_paths)
                self.driver.delete_files([path for _, path, _ in chosen])
            self._forget([(_link_repository(p), "blob", d) for d, _, _ in chosen for p in linked.get(d, ())])
        if self.dry_run:
            report.links_removed += sum(len(linked.get(d, ())) for d, _, _ in chosen)
        for digest, _, size in chosen:
            report.blobs_removed += 1
            report.bytes_freed += size
            self.progress(f"{'would remove' if self.dry_run else 'removed'} blob {digest} ({size} bytes)")

    def _remove_if_empty(self, repository: str, report: Report) -> None:
        """A repository without manifests, links or uploads in progress leaves the catalog (what
        ended uploads leave in ``_uploads`` stays for upload purging)."""
        base = layout.repository(repository)
        if self._digests_below(f"{base}/_manifests/revisions") or self._digests_below(f"{base}/_layers"):
            return
        if any(not layout.is_upload_leftover(entry) for entry in self._list(f"{base}/_uploads")):
            return
        if self.dry_run:
            report.repositories_removed += 1
            return
        try:
            for part in ("_manifests", "_layers", "_referrers"):
                self._delete_quietly(f"{base}/{part}")
        except OSError as exc:
            # Blob uploads link into _layers without the repository's lock: one arrived while the
            # folder was being removed, so the repository is in use again. The next run looks again.
            log.info("garbage collection: %s is in use again, kept (%s)", repository, exc)
            return
        report.repositories_removed += 1

    def _clear_live(self) -> None:
        """Under the sweep lock, the only one pushes write names under (a push that read the
        state just before it went may still add some after: the next run clears them)."""
        with self.driver.lock(layout.GC_SWEEP_LOCK):
            self._delete_quietly(layout.GC_LIVE)

    def _forget(self, removals: list[tuple[str, str, str]]) -> None:
        """Tells the cache, after the deletes; once that failed, only collects what it owes."""
        if self.forget is None or not removals:
            return
        self._unforgotten += removals
        if self._forget_failure is None:
            self._retry_forget()

    def _retry_forget(self) -> None:
        try:
            if self.forget is not None and self._unforgotten:
                self.forget(self._unforgotten)
            self._unforgotten = []
            self._forget_failure = None
        except Exception as exc:  # noqa: BLE001 - reported, the collection itself succeeded
            self._forget_failure = exc

    def _delete_quietly(self, path: str) -> None:
        try:
            self.driver.delete(path)
        except PathNotFound:
            pass

    # The whole run

    def run(self) -> Report:
        report = Report(dry_run=self.dry_run)
        with self.driver.lock(layout.GC_RUN_LOCK):
            if self.dry_run:
                started = time.time()
            else:
                self._clear_live()  # names left by an interrupted run
                self.driver.put_content(layout.GC_STATE, json.dumps({"id": str(uuid.uuid4()), "started": time.time()}).encode())
                # The store's clock, the one blob ages are measured by.
                started = self.driver.stat(layout.GC_STATE).modified
            try:
                self._collect(started - self.delay, report)
            finally:
                if not self.dry_run:
                    self._delete_quietly(layout.GC_STATE)
                    self._clear_live()
                if self._unforgotten:
                    self._retry_forget()
                if self._unforgotten:
                    report.errors.append(
                        f"the gateways' cache could not be told of {len(self._unforgotten)} removals "
                        f"({self._forget_failure}): it may answer for them until cache_lru.mutable_ttl"
                    )
        log.info("garbage collection%s: %s", " (dry run)" if self.dry_run else "", report.summary())
        for error in report.errors:
            log.error("garbage collection: %s", error)
        return report

    def _collect(self, cutoff: float, report: Report) -> None:
        marked: set[str] = set()
        links: dict[str, dict[str, str]] = {}
        repositories = self.repositories()
        report.repositories = len(repositories)
        for n, repository in enumerate(repositories, 1):
            self.progress(f"mark: repository {n}/{len(repositories)} {repository}")
            # Under the lock manifest pushes hold: see the module's docstring.
            with self.driver.lock(layout.repository(repository)):
                links[repository] = self._mark_repository(repository, marked, report)
        self._sweep(marked, links, cutoff, report)
        for repository in repositories:
            with self.driver.lock(layout.repository(repository)):
                self._remove_if_empty(repository, report)
