"""Every URL the gateway hands out (``Location``, ``Link``) is built here, so proxy headers and
path prefixes are handled in one place (which proxies to believe: ``services.common.forwarded``)."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from starlette.requests import Request

from services.common import forwarded
from services.common.config import HTTPSettings


class URLBuilder:
    def __init__(self, http: HTTPSettings) -> None:
        self.prefix = http.prefix
        self.fixed_base = http.host.rstrip("/")
        self.relative = http.relativeurls

    def base(self, request: Request) -> str:
        """scheme://host of the registry as the client sees it: ``http.host`` when set, else the
        request's, as a trusted proxy reports it (https behind a TLS-terminating proxy)."""
        if self.fixed_base:
            return self.fixed_base
        origin = forwarded.origin(request)
        return f"{origin.scheme}://{origin.host}"

    def path(self, *parts: str, query: dict[str, str] | None = None) -> str:
        """A path under /v2 with the configured prefix, e.g. path(name, "blobs", digest)."""
        out = f"{self.prefix}/v2/" + "/".join(quote(p, safe="/:@") for p in parts)
        return f"{out}?{urlencode(query)}" if query else out

    def absolute(self, request: Request, *parts: str, query: dict[str, str] | None = None) -> str:
        """The full URL: what notifications carry, since their receivers (the search service
        among them) fetch from it with no request of their own to resolve a path against."""
        return self.base(request) + self.path(*parts, query=query)

    def location(self, request: Request, *parts: str, query: dict[str, str] | None = None) -> str:
        """A ``Location`` header's value: a bare path with ``http.relativeurls`` (registry:2's
        option, for proxies that rewrite the host and clients that resolve against the URL they
        asked), else absolute."""
        if self.relative:
            return self.path(*parts, query=query)
        return self.absolute(request, *parts, query=query)

    def blob(self, request: Request, name: str, digest: str) -> str:
        """Where a pushed or mounted blob is (``Location``)."""
        return self.location(request, name, "blobs", digest)

    def manifest(self, request: Request, name: str, reference: str) -> str:
        """Where a pushed manifest is (``Location``)."""
        return self.location(request, name, "manifests", reference)

    def upload(self, request: Request, name: str, upload_id: str, state: str) -> str:
        """Where an upload goes on (``Location``), with its signed state."""
        return self.location(request, name, "blobs", "uploads", upload_id, query={"_state": state})
