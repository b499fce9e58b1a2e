"""An image's description, as its producer wrote it: ``org.opencontainers.image.description`` (or,
lacking one anywhere, ``.title``) from the manifest's annotations, then the index's (for an index,
the manifest is its linux/amd64 or first image), then the image config's ``config.Labels`` (where
``LABEL`` in a Dockerfile puts it).

Documents are read over HTTP from the registry that sent the event (or the configured
``search.registry``), with the search service's own User-Agent so the pulls this causes are not
counted as pulls (``events.SELF_AGENT``). Sizes are capped: a description is worth a few KiB.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

log = logging.getLogger("berth.search")

USER_AGENT = "berth-search/0.1"
KEYS = ("org.opencontainers.image.description", "org.opencontainers.image.title")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
ACCEPT = ", ".join(MANIFEST_TYPES)
# Largest manifest or config read.
MAX_DOCUMENT = 4 << 20


class FetchError(Exception):
    """A document could not be read; the message is safe to log."""


def manifest_url(base: str, repository: str, reference: str) -> str:
    return f"{base.rstrip('/')}/v2/{repository}/manifests/{quote(reference, safe=':@')}"


def base_of(url: str, repository: str) -> str | None:
    """The registry base of a manifest URL (scheme://host[/prefix]); None if it is not one."""
    parts = urlsplit(url)
    marker = f"/v2/{repository}/manifests/"
    if parts.scheme not in ("http", "https") or not parts.netloc or marker not in parts.path:
        return None
    return f"{parts.scheme}://{parts.netloc}{parts.path[: parts.path.rindex(marker)]}"


def _pick(sources: list[dict[str, Any]], keys: tuple[str, ...] = KEYS) -> str | None:
    """The first key found in any source, sources in order; so a description anywhere beats a
    title anywhere."""
    for key in keys:
        for source in sources:
            value = source.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class Describer:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def fetch(self, url: str, accept: str = ACCEPT) -> dict[str, Any]:
        try:
            async with self.client.stream("GET", url, headers={"Accept": accept, "User-Agent": USER_AGENT}) as response:
                if response.status_code != 200:
                    raise FetchError(f"HTTP {response.status_code}")
                body = bytearray()
                async for piece in response.aiter_bytes():
                    body += piece
                    if len(body) > MAX_DOCUMENT:
                        raise FetchError("document too large")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL: an event's target.url that is not one
            raise FetchError(type(exc).__name__) from None
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: a pushed config nested absurdly deep
            raise FetchError("not JSON") from None
        if not isinstance(doc, dict):
            raise FetchError("not a JSON object")
        return doc

    async def describe(self, base: str, repository: str, reference: str) -> str | None:
        """The description of the image ``reference`` names in ``repository`` at ``base``."""
        return await self.describe_document(base, repository, await self.fetch(manifest_url(base, repository, reference)))

    async def describe_document(self, base: str, repository: str, doc: dict[str, Any]) -> str | None:
        sources = [_dict(doc.get("annotations"))]
        children = doc.get("manifests")
        if isinstance(children, list):  # an index: the annotations, then its first image's
            image = _first_image([c for c in children if isinstance(c, dict)])
            if image is None:
                return _pick(sources)
            try:
                doc = await self.fetch(manifest_url(base, repository, str(image.get("digest", ""))))
            except FetchError:
                if _pick(sources):  # the index describes itself: enough
                    return _pick(sources)
                raise
            sources.insert(0, _dict(doc.get("annotations")))
        found = _pick(sources, KEYS[:1])
        if found:
            return found
        digest = _dict(doc.get("config")).get("digest")
        if isinstance(digest, str) and digest:
            blob = await self.fetch(f"{base.rstrip('/')}/v2/{repository}/blobs/{digest}", accept="*/*")
            sources.append(_dict(_dict(blob.get("config")).get("Labels")))
        return _pick(sources)


def _first_image(children: list[dict[str, Any]]) -> dict[str, Any] | None:
    """linux/amd64 if the index has it, else its first image (attestations are skipped)."""
    images = [c for c in children if _dict(c.get("platform")).get("os") != "unknown" and isinstance(c.get("digest"), str)]
    for child in images:
        platform = _dict(child.get("platform"))
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return child
    return images[0] if images else None
