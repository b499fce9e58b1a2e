"""Events as the reference registry (distribution) writes them, so a listener written for
registry:2 understands Berth's, and Berth's search service understands registry:2's.

An event is ``{id, timestamp, action, target, request, actor, source}``; one or more travel in an
envelope ``{"events": [...]}`` POSTed with ``EVENTS_MEDIA_TYPE``. Deletes carry only the repository
and the digest (or the tag), as the reference registry's do.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from services.common import forwarded, request_ids
from services.common.config import HTTPSettings

EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
# What the reference registry reports as a blob's media type (it does not know the layer type).
BLOB_MEDIA_TYPE = "application/octet-stream"

PUSH, PULL, DELETE, MOUNT = "push", "pull", "delete", "mount"

Event = dict[str, Any]


@dataclass(frozen=True)
class Source:
    """The registry node that generated an event: its address and a per-process instance id."""

    addr: str
    instance_id: str

    def to_json(self) -> dict[str, str]:
        return {"addr": self.addr, "instanceID": self.instance_id}


def source_for(http: HTTPSettings) -> Source:
    """hostname:port, as the reference registry reports it (the bind address may be 0.0.0.0)."""
    port = http.addr.rpartition(":")[2]
    return Source(f"{socket.gethostname()}:{port}", str(uuid.uuid4()))


def request_record(request: Request) -> dict[str, str]:
    return {
        # The request's id (X-Request-Id), as the reference registry reports its request context's.
        "id": request_ids.current() or str(uuid.uuid4()),
        # The client behind a trusted proxy (X-Forwarded-For, Forwarded), else the peer.
        "addr": forwarded.remote_addr(request),
        "host": request.headers.get("host", ""),
        "method": request.method,
        "useragent": request.headers.get("user-agent", ""),
    }


def actor(request: Request) -> dict[str, str]:
    """The account the access check found (``request.state.identity``), when there is one."""
    identity = getattr(request.state, "identity", None)
    account = getattr(identity, "account", None)
    return {"name": account} if isinstance(account, str) and account else {}


def target(
    repository: str,
    *,
    digest: str = "",
    media_type: str = "",
    size: int | None = None,
    url: str = "",
    tag: str = "",
    from_repository: str = "",
) -> dict[str, Any]:
    """The object an event is about; empty fields are left out, as the reference registry does."""
    out: dict[str, Any] = {}
    if media_type:
        out["mediaType"] = media_type
    if digest:
        out["digest"] = digest
    if size is not None:
        # ``length`` is the deprecated name of ``size``; listeners still read either.
        out["size"] = out["length"] = size
    out["repository"] = repository
    if from_repository:
        out["fromRepository"] = from_repository
    if url:
        out["url"] = url
    if tag:
        out["tag"] = tag
    return out


def timestamp(now: datetime | None = None) -> str:
    """RFC 3339 in UTC with microseconds, e.g. 2026-01-02T15:04:05.123456Z."""
    moment = now or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def event(action: str, target: dict[str, Any], request: dict[str, str], actor: dict[str, str], source: Source) -> Event:
    return {
        "id": str(uuid.uuid4()),
        "timestamp": timestamp(),
        "action": action,
        "target": target,
        "request": request,
        "actor": actor,
        "source": source.to_json(),
    }


def envelope(events: Sequence[Event]) -> bytes:
    return json.dumps({"events": list(events)}, separators=(",", ":")).encode()
