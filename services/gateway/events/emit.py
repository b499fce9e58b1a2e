"""The calls route modules make after a successful operation, one line each.

Each builds an event only when some endpoint is configured, hands it to the bus (which only
queues it), and swallows any error: an event is never worth failing a request that succeeded.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request

from services.gateway import app_state
from services.gateway.events import envelope
from services.gateway.events.envelope import BLOB_MEDIA_TYPE, DELETE, MOUNT, PULL, PUSH

log = logging.getLogger("berth.gateway.events")


def _emit(request: Request, action: str, repository: str, url_kind: str = "", **fields: Any) -> None:
    try:
        gw = app_state.of(request)
        bus = gw.events
        if not bus.enabled:
            return
        if url_kind:
            # Absolute whatever http.relativeurls says (which is about Location headers).
            fields["url"] = gw.urls.absolute(request, repository, url_kind, fields["digest"])
        target = envelope.target(repository, **fields)
        bus.publish(envelope.event(action, target, envelope.request_record(request), envelope.actor(request), bus.source))
    except Exception:  # see the module docstring
        log.exception("could not emit a %s event for %s", action, repository)


def manifest_pushed(request: Request, repository: str, digest: str, media_type: str, size: int, tag: str = "") -> None:
    _emit(request, PUSH, repository, "manifests", digest=digest, media_type=media_type, size=size, tag=tag)


def manifest_pulled(request: Request, repository: str, digest: str, media_type: str, size: int, tag: str = "") -> None:
    _emit(request, PULL, repository, "manifests", digest=digest, media_type=media_type, size=size, tag=tag)


def manifest_deleted(request: Request, repository: str, digest: str) -> None:
    _emit(request, DELETE, repository, digest=digest)


def tag_deleted(request: Request, repository: str, tag: str) -> None:
    _emit(request, DELETE, repository, tag=tag)


def blob_pushed(request: Request, repository: str, digest: str, size: int) -> None:
    _emit(request, PUSH, repository, "blobs", digest=digest, media_type=BLOB_MEDIA_TYPE, size=size)


def blob_mounted(request: Request, repository: str, digest: str, size: int, from_repository: str) -> None:
    _emit(request, MOUNT, repository, "blobs", digest=digest, media_type=BLOB_MEDIA_TYPE, size=size, from_repository=from_repository)


def blob_deleted(request: Request, repository: str, digest: str) -> None:
    _emit(request, DELETE, repository, digest=digest)
