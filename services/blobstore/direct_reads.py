"""Blob reads the blobstore's HTTP listener answers itself, reached by a signed URL
(``blob_urls.py``): the file goes to the socket with ``sendfile``, so neither gRPC nor Python
touches the bytes and memory stays flat whatever the blob size.

Same answers as the gateway's blob GET: ``Docker-Content-Digest``, ``ETag``, ``Accept-Ranges``,
one ``Range`` (206, or 416 with ``Content-Range: bytes */size``), HEAD, and the registry's error
envelope (403 DENIED for a bad or expired signature, 404 BLOB_UNKNOWN once the repository no longer
links the blob).
"""

from __future__ import annotations

import json
import logging
import os
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote, urlsplit

from services.blobstore import layout
from services.blobstore.blob_urls import MIN_REDIRECT_SIZE, PATH_PREFIX, BlobURLSigner
from services.blobstore.blobs import Blobs
from services.common import digests, names
from services.common.errors import BLOB_UNKNOWN, DENIED, UNKNOWN, RegistryError
from services.common.metrics import DIRECT_READ_BYTES
from services.common.ranges import parse_range

log = logging.getLogger("berth.blobstore")


class DirectReads:
    def __init__(self, blobs: Blobs, signer: BlobURLSigner) -> None:
        self.blobs = blobs
        self.signer = signer

    def url(self, repository: str, digest: str) -> str:
        """A URL for a read of the blob here; "" for one better streamed by the gateway (small, or
        not on local storage). The caller has checked that the repository links the blob
        (``Blobs.stat``): the size comes from memory, with no second look at storage."""
        found = self.blobs.stat_global(digest)
        if found is None or found.size < MIN_REDIRECT_SIZE or self.blobs.driver.local_file(layout.blob_data(digest)) is None:
            return ""
        return self.signer.url(repository, digest)

    def serve(self, handler: BaseHTTPRequestHandler, *, head: bool) -> None:
        try:
            self._serve(handler, head)
        except RegistryError as exc:
            _send_error(handler, exc, head)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            handler.close_connection = True  # the client went away mid-blob
        except Exception:
            log.exception("direct blob read failed")
            _send_error(handler, RegistryError(UNKNOWN, message="internal error"), head)

    def _serve(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        parts = urlsplit(handler.path)
        repository, _, digest = unquote(parts.path[len(PATH_PREFIX) :]).rpartition("/")
        query = parse_qs(parts.query)
        expires, signature = query.get("expires", [""])[0], query.get("signature", [""])[0]
        if not repository or not self.signer.valid(repository, digest, expires, signature):
            raise RegistryError(DENIED, {"reason": "the blob URL is not valid (expired or not signed here)"})
        names.check_name(repository)
        digests.parse(digest)
        self.blobs.stat(repository, digest)  # the repository still links it
        path = self.blobs.driver.local_file(layout.blob_data(digest))
        if path is None:
            raise RegistryError(BLOB_UNKNOWN, {"digest": digest})
        try:
            file = open(path, "rb")  # noqa: SIM115 - closed by the `with file:` below, out of this try
        except FileNotFoundError:
            raise RegistryError(BLOB_UNKNOWN, {"digest": digest}) from None
        with file:
            size = os.fstat(file.fileno()).st_size
            wanted = parse_range(handler.headers.get("Range"), size)
            offset, length = wanted if wanted is not None else (0, size)
            handler.send_response(200 if wanted is None else 206)
            for name, value in (
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", str(length)),
                ("Docker-Content-Digest", digest),
                ("ETag", f'"{digest}"'),
                ("Accept-Ranges", "bytes"),
                ("Cache-Control", "max-age=31536000"),
            ):
                handler.send_header(name, value)
            if wanted is not None:
                handler.send_header("Content-Range", f"bytes {offset}-{offset + length - 1}/{size}")
            handler.end_headers()
            if head or length == 0:
                return
            sent = handler.connection.sendfile(file, offset, length)
            DIRECT_READ_BYTES.inc(sent)
            if sent < length:  # the file shrank under us: never claim a whole blob we did not send
                handler.close_connection = True


def _send_error(handler: BaseHTTPRequestHandler, exc: RegistryError, head: bool) -> None:
    body = json.dumps({"errors": [exc.to_json()]}).encode()
    handler.send_response(exc.status)
    for name, value in exc.headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if not head:
        handler.wfile.write(body)
