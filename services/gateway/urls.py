"""Every URL the gateway hands out (``Location``, ``Link``) is built here, so proxy headers and
path prefixes are handled in one place."""
from __future__ import annotations

from urllib.parse import quote, urlencode

from starlette.requests import Request

from services.common.config import HTTPSettings


class URLBuilder:
    def __init__(self, http: HTTPSettings) -> None:
        self.prefix = http.prefix
        self.fixed_base = http.host.rstrip("/")
        self.trusted = set(http.trusted_proxies)

    def base(self, request: Request) -> str:
        """scheme://host of the registry as the client sees it."""
        if self.fixed_base:
            return self.fixed_base
        headers = request.headers
        scheme, host = request.url.scheme, headers.get("host") or request.url.netloc
        client = request.client.host if request.client else ""
        if "*" in self.trusted or client in self.trusted:
            scheme = headers.get("x-forwarded-proto", scheme).split(",")[0].strip() or scheme
            host = headers.get("x-forwarded-host", host).split(",")[0].strip() or host
        return f"{scheme}://{host}"

    def path(self, *parts: str, query: dict[str, str] | None = None) -> str:
        """A path under /v2 with the configured prefix, e.g. path(name, "blobs", digest)."""
        out = f"{self.prefix}/v2/" + "/".join(quote(p, safe="/:@") for p in parts)
        return f"{out}?{urlencode(query)}" if query else out

    def absolute(self, request: Request, *parts: str, query: dict[str, str] | None = None) -> str:
        return self.base(request) + self.path(*parts, query=query)

    def blob(self, request: Request, name: str, digest: str) -> str:
        return self.absolute(request, name, "blobs", digest)

    def manifest(self, request: Request, name: str, reference: str) -> str:
        return self.absolute(request, name, "manifests", reference)

    def upload(self, request: Request, name: str, upload_id: str, state: str) -> str:
        return self.absolute(request, name, "blobs", "uploads", upload_id, query={"_state": state})
