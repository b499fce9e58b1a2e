"""The S3 rows of `make bench`: Berth and the Go registry each storing in its own bucket of one
local S3 endpoint (moto's server, on loopback: the tests' own, tests/support/s3.py), measured
with the same workloads as the filesystem rows, so the ratio compares the registries, not the
stores.

moto keeps objects in its own memory and answers from Python: absolute figures are far below a
real S3's, and both registries share that ceiling.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoServer, start_moto

REGISTRY2_S3_TEMPLATE = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: {access_key}
    secretkey: {secret_key}
    region: {region}
    regionendpoint: {endpoint}
    bucket: {bucket}
    secure: false
    v4auth: true
    rootdirectory: /registry
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  redirect:
    disable: true
http:
  addr: 127.0.0.1:{port}
"""


def registry2_config(moto: MotoServer, bucket: str, port: int) -> str:
    return REGISTRY2_S3_TEMPLATE.format(
        access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION, endpoint=moto.endpoint, bucket=bucket, port=port
    )


@contextmanager
def moto_server() -> Iterator[MotoServer]:
    """A moto server on a free loopback port, stopped (by pid) on exit."""
    moto = start_moto()
    try:
        yield moto
    finally:
        moto.stop()
