"""Requests on one bucket, and what they answer.

Every other module of the driver talks to S3 through ``Bucket``: it names the bucket in each
request, applies the configured server-side encryption where asked, and turns boto3's errors into
StorageErrors, the ones callers act on (a missing key, a range past the end, a failed condition)
as their own classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from botocore.exceptions import BotoCoreError, ClientError

from services.blobstore.drivers.base import StorageError

# Metadata of a marker, the object standing for a path being written (multipart.py; S3 hands
# user metadata back lower-cased).
META_UPLOAD = "berth-upload"
META_PARTS = "berth-parts"
META_SIZE = "berth-size"

_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
# A conditional request's condition failed (412), or it lost a race with another one (409).
_CONFLICT_CODES = {"412", "PreconditionFailed", "409", "ConditionalRequestConflict"}


class Missing(StorageError):
    """The key (or upload) is not there; callers turn it into PathNotFound for their path."""


class BadRange(StorageError):
    """A ranged read started at or past the end of the object."""


class Conflict(StorageError):
    """A conditional request found the object other than it required."""


def translate(operation: str, exc: Exception) -> StorageError:
    """The StorageError for a boto3 failure of ``operation``."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING_CODES or code == "NoSuchUpload":
            return Missing(f"s3 {operation}: {code}")
        if code == "InvalidRange":
            return BadRange(f"s3 {operation}: {code}")
        if code in _CONFLICT_CODES:
            return Conflict(f"s3 {operation}: {code}")
        return StorageError(f"s3 {operation} failed: {code or exc}")
    return StorageError(f"s3 {operation} failed: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class Head:
    """What a HeadObject or GetObject said about a key."""

    length: int  # bytes in the object itself (a marker's tail)
    modified: float
    etag: str
    metadata: dict[str, str]

    @classmethod
    def of(cls, response: dict[str, Any]) -> Head:
        return cls(
            response["ContentLength"],
            response["LastModified"].timestamp(),
            response.get("ETag", ""),
            response.get("Metadata") or {},
        )

    @property
    def upload_id(self) -> str:
        return self.metadata.get(META_UPLOAD, "")

    @property
    def parts(self) -> int:
        return int(self.metadata.get(META_PARTS, "0"))

    @property
    def parts_size(self) -> int:
        return int(self.metadata.get(META_SIZE, "0"))

    @property
    def size(self) -> int:
        """Bytes of the file: a marker's parts count too."""
        return self.parts_size + self.length if self.upload_id else self.length


class Bucket:
    """The bucket the driver stores in, through one client."""

    def __init__(self, client: Any, name: str, sse: dict[str, str]) -> None:
        self.client = client
        self.name = name
        # Server-side encryption arguments for the requests that create objects (or none).
        self.sse = sse

    def call(self, operation: str, **params: Any) -> Any:
        """One request on the bucket; failures become StorageError (Missing for absent keys)."""
        try:
            return getattr(self.client, operation)(Bucket=self.name, **params)
        except (ClientError, BotoCoreError) as exc:
            raise translate(operation, exc) from exc

    def head(self, key: str) -> Head | None:
        """The key's HeadObject, or None when there is no such key."""
        try:
            return Head.of(self.call("head_object", Key=key))
        except Missing:
            return None

    def pages(self, operation: str, **params: Any) -> Iterator[dict[str, Any]]:
        """The pages of a listing ``operation``, fetched as they are consumed."""
        try:
            yield from self.client.get_paginator(operation).paginate(Bucket=self.name, **params)
        except (ClientError, BotoCoreError) as exc:
            raise translate(operation, exc) from exc


def read_closing(body: Any) -> bytes:
    """All of a response body, which is closed after."""
    try:
        return cast(bytes, body.read())
    finally:
        body.close()
