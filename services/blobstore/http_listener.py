"""The blobstore's small HTTP listener (``blobstore.http_addr``): /metrics, /_ping and /_ready
(whose check is in ``health_checks.py``), and blob reads by signed URL (``direct_reads.py``) when
``blobstore.public_url`` is set.

Plain HTTP beside the gRPC port because that is what Prometheus scrapes and what every load
balancer and orchestrator can probe, whatever the blobstore's gRPC security. A stdlib threaded
server: a handful of requests a minute need no framework, and a slow storage check holds only its
own thread; a blob read is one ``sendfile`` per request, which releases the GIL while it runs.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from services.blobstore.blob_urls import PATH_PREFIX
from services.blobstore.direct_reads import DirectReads
from services.blobstore.health_checks import Readiness
from services.common.config import ConfigError

log = logging.getLogger("berth.blobstore")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer is routine; anything else is logged, not printed."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        log.exception("http listener: request from %s failed", client_address[0])


class HTTPListener:
    """Serves until ``stop()``; raises ConfigError (naming blobstore.http_addr) when the address
    cannot be used."""

    def __init__(self, addr: str, readiness: Readiness, *, metrics: bool, direct_reads: DirectReads | None = None) -> None:
        host, _, port = addr.rpartition(":")
        host = host.strip("[]")
        server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6}) if ":" in host else _Server
        try:
            self._server = server_class((host, int(port)), _handler(readiness, metrics, direct_reads))
        except OSError as exc:
            raise ConfigError(f"blobstore.http_addr: cannot listen on {addr}: {exc.strerror or exc}") from None
        self.addr = addr
        self._thread = threading.Thread(target=self._server.serve_forever, name="blobstore-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(readiness: Readiness, metrics: bool, direct_reads: DirectReads | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "berth-blobstore"
        sys_version = ""
        # Keep-alive: a client pulling several layers reuses its connection.
        protocol_version = "HTTP/1.1"
        timeout = 10

        def parse_request(self) -> bool:
            if not super().parse_request():
                return False
            # No route here takes a body: one sent anyway is never read, so the connection cannot
            # carry another request after it (its bytes would be read as one).
            length = self.headers.get("Content-Length", "0").strip()
            self._has_body = length not in ("", "0") or "Transfer-Encoding" in self.headers
            return True

        def end_headers(self) -> None:
            if getattr(self, "_has_body", False):
                self.send_header("Connection", "close")  # also sets close_connection
            super().end_headers()

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if direct_reads is not None and path.startswith(PATH_PREFIX):
                direct_reads.serve(self, head=getattr(self, "_head_only", False))
            elif path == "/_ping":
                self._send(200, "application/json", b"{}")
            elif path == "/_ready":
                reason = readiness.check()
                if reason is None:
                    self._send(200, "application/json", b'{"ready": true}')
                else:
                    self._send(503, "application/json", json.dumps({"ready": False, "reason": reason}).encode())
            elif path == "/metrics" and metrics:
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, content_type, encoder(REGISTRY))
            else:
                self._send(404, "application/json", b'{"error": "not found"}')

        def do_HEAD(self) -> None:
            self._head_only = True
            self.do_GET()

        def __getattr__(self, name: str) -> Any:
            # Any other method (do_POST, do_FOO...): 405, as the HTTP services answer, not the
            # stdlib's 501 for a method it has no handler for.
            if name.startswith("do_"):
                return self._not_allowed
            raise AttributeError(name)

        def _not_allowed(self) -> None:
            self._send(405, "application/json", b'{"error": "method not allowed"}', allow="GET, HEAD")

        def _send(self, status: int, content_type: str, body: bytes, allow: str = "") -> None:
            self.send_response(status)
            if allow:
                self.send_header("Allow", allow)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if not getattr(self, "_head_only", False):
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Probes arrive every few seconds: only worth a line when debugging.
            log.debug("http %s", format % args)

    return Handler
