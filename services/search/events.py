"""Notification envelopes applied to the index: the reference registry's format, so the search
service works behind Berth's gateway and behind registry:2 alike.

    push of a manifest with a tag   the tag now points at the digest; the description is re-read
    pull of a manifest              the repository's pull count grows
    delete with a tag               that tag goes
    delete with a digest            every tag pointing at the digest goes (a blob's digest has none)
    anything else (blobs, mounts)   ignored

One envelope is one transaction. Events are trusted only as far as their shape: names, tags and
digests are checked, and an event that does not fit is skipped, never failing the rest (a listener
that rejects envelopes makes the registry retry them forever). Event ids seen recently are
skipped, so an envelope delivered twice (a retry after a lost answer) counts pulls once.

``read`` says what an event means; ``EventApplier`` writes that to the SQL index, and a custom
index (``backends``) gets it through its hooks, so both follow the same events.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from cachetools import LRUCache

from services.common import names
from services.common.errors import RegistryError
from services.search.describe import MANIFEST_TYPES, USER_AGENT
from services.search.index import Index

log = logging.getLogger("berth.search")

# Media types the reference registry reports for manifests, besides the ones Berth stores.
_LEGACY_MANIFESTS = ("application/vnd.docker.distribution.manifest.v1+json", "application/vnd.docker.distribution.manifest.v1+prettyjws")
MANIFEST_MEDIA_TYPES = frozenset(MANIFEST_TYPES + _LEGACY_MANIFESTS)
# Pulls made with this User-Agent are the search service's own reads (describe.py, reindex.py).
SELF_AGENT = USER_AGENT.split("/")[0] + "/"
# How many event ids are remembered to skip repeats.
SEEN_IDS = 50_000
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,128}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_FRACTION = re.compile(r"(\.\d{6})\d+")


@dataclass(frozen=True)
class DescribeJob:
    """A description to read after the envelope is stored (network work stays outside the
    transaction)."""

    repository: str
    url: str
    digest: str
    at: float | None


def parse_time(value: Any) -> float | None:
    """RFC 3339 (nanoseconds and ``Z`` included, as Go writes it) to epoch seconds."""
    if not isinstance(value, str) or not value:
        return None
    text = _FRACTION.sub(r"\1", value.strip()).replace("Z", "+00:00").replace("z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo else None


def _is_manifest(target: dict[str, Any]) -> bool:
    url = target.get("url")
    return target.get("mediaType") in MANIFEST_MEDIA_TYPES or (isinstance(url, str) and "/manifests/" in url)


def logged_as(event: dict[str, Any]) -> dict[str, str]:
    """``extra`` for a log line about the event: the id of the registry request it came from, so
    the line is found with that request's other lines."""
    request = event.get("request")
    rid = request.get("id") if isinstance(request, dict) else None
    return {"request_id": rid[:128]} if isinstance(rid, str) and rid.isprintable() else {}


def _field(target: dict[str, Any], key: str, pattern: re.Pattern[str] | None = None) -> str:
    value = target.get(key)
    if not isinstance(value, str) or (pattern is not None and value and not pattern.match(value)):
        return ""
    return value


class RecentIds:
    """The last ``size`` event ids, oldest forgotten first."""

    def __init__(self, size: int = SEEN_IDS) -> None:
        self.size = size
        # An LRU cache of keys only: a lookup does not refresh an id, adding it again does.
        # Envelopes are applied in a thread pool, and an LRUCache is not thread-safe: hence the lock.
        self._ids: LRUCache[str, None] = LRUCache(maxsize=size)
        self._lock = threading.Lock()

    def __contains__(self, event_id: str) -> bool:
        with self._lock:
            return event_id in self._ids

    def add(self, event_id: str) -> None:
        with self._lock:
            self._ids[event_id] = None

    def remember(self, events: list[dict[str, Any]]) -> None:
        """Adds the ids of ``events`` (once they are applied: an envelope that failed is retried)."""
        for event in events:
            if isinstance(event.get("id"), str):
                self.add(event["id"])


@dataclass(frozen=True)
class Change:
    """What one event asks of an index: ``action`` is push (a tagged manifest), pull (of a
    manifest, by someone else) or delete (of ``tag``, or else of every tag pointing at ``digest``)."""

    action: Literal["push", "pull", "delete"]
    repository: str
    tag: str
    digest: str
    event: dict[str, Any]


def read(event: dict[str, Any]) -> Change | None:
    """The event's change; None when it concerns no index (blobs, mounts, untagged pushes, our own
    reads) or does not fit (a malformed name: logged, and only that event skipped)."""
    target = event.get("target")
    if not isinstance(target, dict):
        return None
    repository = _field(target, "repository")
    try:
        names.check_name(repository)
    except RegistryError as exc:
        log.info("skipped event %.64s: %s", str(event.get("id", "")), exc)
        return None
    action = event.get("action")
    tag, digest = _field(target, "tag", _TAG), _field(target, "digest", _DIGEST)
    if action == "delete":
        return Change("delete", repository, tag, digest, event) if tag or digest else None
    if not _is_manifest(target):
        return None
    if action == "pull":
        request = event.get("request")
        agent = request.get("useragent") if isinstance(request, dict) else None
        if isinstance(agent, str) and agent.startswith(SELF_AGENT):
            return None  # our own description reads
        return Change("pull", repository, tag, digest, event)
    if action == "push" and tag and digest:
        return Change("push", repository, tag, digest, event)
    return None


def envelope_events(envelope: Any, seen: RecentIds) -> list[dict[str, Any]]:
    """The envelope's events not seen recently; ValueError when it is not an envelope at all."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("events"), list):
        raise ValueError('expected {"events": [...]}')
    return [e for e in envelope["events"] if isinstance(e, dict) and not (isinstance(e.get("id"), str) and e["id"] in seen)]


class EventApplier:
    """Envelopes applied to Berth's SQL index."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.seen = RecentIds()

    def apply(self, envelope: Any) -> tuple[int, list[DescribeJob]]:
        """Applies the envelope's events; returns how many changed the index, and the
        descriptions to read. ValueError when it is not an envelope at all."""
        fresh = envelope_events(envelope, self.seen)
        applied, jobs = 0, []
        with self.index.writing() as conn:
            for event in fresh:
                change = read(event)
                if change is None:
                    continue
                applied += 1
                job = self._apply_one(conn, change)
                if job is not None:
                    jobs.append(job)
        self.seen.remember(fresh)
        return applied, jobs

    def _apply_one(self, conn: Any, change: Change) -> DescribeJob | None:
        """Writes the change; returns the description to read after it."""
        repository, tag, digest, event = change.repository, change.tag, change.digest, change.event
        if change.action == "delete":
            if tag:
                self.index.tag_deleted(conn, repository, tag)
            else:
                self.index.manifest_deleted(conn, repository, digest)
            log.info("%s: deleted %s", repository, tag or digest, extra=logged_as(event))
            return None
        if change.action == "pull":
            self.index.pulled(conn, repository)
            return None
        at = parse_time(event.get("timestamp"))
        self.index.tag_pushed(conn, repository, tag, digest, at)
        log.info("%s:%s pushed (%s)", repository, tag, digest, extra=logged_as(event))
        return DescribeJob(repository, _field(event["target"], "url"), digest, at)
