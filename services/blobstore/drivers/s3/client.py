"""Building the boto3 client from the ``storage.s3`` parameters (registry:2's names).

Kept apart from the driver because it is configuration, not storage logic: which endpoint, which
credentials, which botocore options, and counting every request in STORAGE_CALLS.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
import botocore.config

from services.common.metrics import STORAGE_CALLS

# One session per process: it loads S3's service model once for every client made from it. A
# session is not thread-safe (its clients are), hence the lock around making clients.
_SESSION = boto3.session.Session()
_SESSION_LOCK = threading.Lock()


def _count_request(event_name: str = "", **_: Any) -> None:
    # "before-send.s3.HeadObject": once per HTTP request, retries included.
    STORAGE_CALLS.labels("s3", event_name.rsplit(".", 1)[-1]).inc()


def _endpoint(parameters: dict[str, Any]) -> str | None:
    endpoint = str(parameters.get("regionendpoint") or "")
    if not endpoint:
        return None
    if "://" not in endpoint:
        endpoint = ("https://" if parameters.get("secure", True) else "http://") + endpoint
    return endpoint


def make_client(parameters: dict[str, Any]) -> Any:
    """An S3 client for the driver's parameters, its requests counted per operation."""
    config = botocore.config.Config(
        max_pool_connections=int(parameters.get("maxconnections", 64)),
        retries={"mode": "standard"},
        s3={"addressing_style": "path" if parameters.get("forcepathstyle") else "auto"},
        signature_version="s3v4",
        # Only the checksums S3 insists on: newer defaults add trailing checksums that several
        # S3-compatible stores refuse, and would cost a CRC pass over every part.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    credentials: dict[str, str] = {}
    if parameters.get("accesskey") and parameters.get("secretkey"):
        credentials = {"aws_access_key_id": parameters["accesskey"], "aws_secret_access_key": parameters["secretkey"]}
    with _SESSION_LOCK:
        client = _SESSION.client(
            "s3",
            region_name=parameters.get("region") or "us-east-1",
            endpoint_url=_endpoint(parameters),
            use_ssl=bool(parameters.get("secure", True)),
            # skipverify: a store whose certificate cannot be checked (self-signed, in a test
            # setup); None keeps botocore's default, which verifies.
            verify=False if parameters.get("skipverify") else None,
            config=config,
            **credentials,
        )
    client.meta.events.register("before-send.s3", _count_request)
    return client
