"""A real S3 endpoint for tests: moto's server as a child process on a free loopback port.

One process serves any number of buckets; tests keep apart by bucket (``new_bucket``) rather than
by starting servers, which cost a couple of seconds each.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.processes import free_port, stop_process, wait_for_port

ACCESS_KEY = "berth-test"
SECRET_KEY = "berth-test-secret"
REGION = "us-east-1"


@dataclass
class MotoServer:
    endpoint: str
    proc: subprocess.Popen[bytes]
    # moto's output, one line per request it served (None: not kept).
    log: Path | None = None
    buckets: list[str] = field(default_factory=list)
    _client: Any = None

    def client(self) -> Any:
        """A boto3 client of the server (one, made on first use; clients are thread-safe)."""
        if self._client is None:
            import boto3
            import botocore.config

            self._client = boto3.session.Session().client(
                "s3",
                region_name=REGION,
                endpoint_url=self.endpoint,
                aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY,
                config=botocore.config.Config(s3={"addressing_style": "path"}),
            )
        return self._client

    def new_bucket(self, hint: str = "berth") -> str:
        name = f"{hint[:30].lower().strip('-')}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def driver_parameters(self, bucket: str, **overrides: Any) -> dict[str, Any]:
        """``storage.s3`` as the blobstore would get it (S3Settings' defaults, then these)."""
        from services.common.config import S3Settings

        settings = S3Settings(
            bucket=bucket,
            region=REGION,
            regionendpoint=self.endpoint,
            accesskey=ACCESS_KEY,
            secretkey=SECRET_KEY,
            forcepathstyle=True,
            secure=False,
        )
        return {**settings.model_dump(), **overrides}

    def berth_env(self, bucket: str, rootdirectory: str = "") -> dict[str, str]:
        """Environment for a Berth process storing in ``bucket`` (see tests.support.processes.Berth)."""
        env = {
            "REGISTRY_STORAGE_DRIVER": "s3",
            "REGISTRY_STORAGE_S3_BUCKET": bucket,
            "REGISTRY_STORAGE_S3_REGION": REGION,
            "REGISTRY_STORAGE_S3_REGIONENDPOINT": self.endpoint,
            "REGISTRY_STORAGE_S3_ACCESSKEY": ACCESS_KEY,
            "REGISTRY_STORAGE_S3_SECRETKEY": SECRET_KEY,
            "REGISTRY_STORAGE_S3_FORCEPATHSTYLE": "true",
            "REGISTRY_STORAGE_S3_SECURE": "false",
        }
        if rootdirectory:
            env["REGISTRY_STORAGE_S3_ROOTDIRECTORY"] = rootdirectory
        return env

    def requests(self) -> list[str]:
        """The request lines moto has logged so far ("GET /bucket/key?... HTTP/1.1")."""
        if self.log is None or not self.log.exists():
            return []
        return [line.split('"')[1] for line in self.log.read_text(errors="replace").splitlines() if line.count('"') >= 2]

    def stop(self) -> None:
        stop_process(self.proc)


def start_moto(log: Path | None = None) -> MotoServer:
    """Starts ``python -m moto.server`` on a free loopback port; the caller stops it."""
    port = free_port()
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc, timeout=60)
    except Exception:
        proc.kill()
        proc.wait()
        raise
    return MotoServer(f"http://127.0.0.1:{port}", proc, log)
