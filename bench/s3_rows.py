"""The S3 rows of `make bench`: Berth and the Go registry each storing in its own bucket of one
local S3 endpoint (moto's server, on loopback), measured with the same workloads as the
filesystem rows, so the ratio compares the registries, not the stores.

moto keeps objects in its own memory and answers from Python: absolute figures are far below a
real S3's, and both registries share that ceiling.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "berth-bench"
SECRET_KEY = "berth-bench-secret"
REGION = "us-east-1"

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


@dataclass
class Moto:
    endpoint: str
    proc: subprocess.Popen[bytes]

    def new_bucket(self, hint: str) -> str:
        import boto3
        import botocore.config

        client = boto3.session.Session().client(
            "s3",
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=botocore.config.Config(s3={"addressing_style": "path"}),
        )
        name = f"{hint}-{uuid.uuid4().hex[:10]}"
        client.create_bucket(Bucket=name)
        return name

    def berth_env(self, bucket: str) -> dict[str, str]:
        return {
            "REGISTRY_STORAGE_DRIVER": "s3",
            "REGISTRY_STORAGE_S3_BUCKET": bucket,
            "REGISTRY_STORAGE_S3_REGION": REGION,
            "REGISTRY_STORAGE_S3_REGIONENDPOINT": self.endpoint,
            "REGISTRY_STORAGE_S3_ACCESSKEY": ACCESS_KEY,
            "REGISTRY_STORAGE_S3_SECRETKEY": SECRET_KEY,
            "REGISTRY_STORAGE_S3_FORCEPATHSTYLE": "true",
            "REGISTRY_STORAGE_S3_SECURE": "false",
            "REGISTRY_STORAGE_S3_ROOTDIRECTORY": "registry",
        }

    def registry2_config(self, bucket: str, port: int) -> str:
        return REGISTRY2_S3_TEMPLATE.format(
            access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION, endpoint=self.endpoint, bucket=bucket, port=port
        )


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto did not listen on {port} within {timeout:.0f}s")


@contextmanager
def moto_server(port: int) -> Iterator[Moto]:
    """``python -m moto.server`` on a free loopback port, stopped (by pid) on exit."""
    log = Path(tempfile.mkdtemp(prefix="berth-bench-moto-")) / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_port(port, proc)
        yield Moto(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
