"""A registry stand-in on loopback: serves fixed documents at fixed paths and records requests.

For the search service's tests, which need something to read manifests, configs, catalogs and tag
lists from, with pagination and failures chosen by the test.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class FakeRegistry:
    def __init__(self) -> None:
        self.routes: dict[str, Response] = {}
        self.requests: list[tuple[str, str, str]] = []  # (method, path with query, user agent)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def start(self) -> FakeRegistry:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, path: str, status: int = 200, body: bytes | dict[str, Any] = b"", **headers: str) -> None:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        self.routes[path] = Response(status, data, {k.replace("_", "-"): v for k, v in headers.items()})

    def blob(self, repository: str, doc: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(doc).encode()
        digest = sha256(data)
        self.add(f"/v2/{repository}/blobs/{digest}", body=data)
        return {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": len(data)}

    def manifest(self, repository: str, doc: dict[str, Any], *tags: str) -> str:
        data = json.dumps(doc).encode()
        digest = sha256(data)
        for reference in (digest, *tags):
            self.add(
                f"/v2/{repository}/manifests/{reference}",
                body=data,
                content_type=doc.get("mediaType", OCI_MANIFEST),
                docker_content_digest=digest,
            )
        return digest

    def image(self, repository: str, *tags: str, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> str:
        """An image manifest (with a config holding ``labels``); returns its digest."""
        config = self.blob(repository, {"architecture": "amd64", "os": "linux", "config": {"Labels": labels or {}}})
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": []}
        if annotations:
            doc["annotations"] = annotations
        return self.manifest(repository, doc, *tags)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, with_body: bool) -> None:
                registry.requests.append((self.command, self.path, self.headers.get("user-agent", "")))
                found = registry.routes.get(self.path) or Response(404, b'{"errors":[{"code":"NOT_FOUND"}]}')
                self.send_response(found.status)
                for key, value in found.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(found.body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(found.body)

            def do_GET(self) -> None:  # http.server's naming
                self._answer(True)

            def do_HEAD(self) -> None:
                self._answer(False)

            def log_message(self, *args: object) -> None:
                pass

        return Handler
