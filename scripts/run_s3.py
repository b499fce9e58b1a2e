"""`make run-s3`: a local S3 endpoint and Redis, then every Berth service on them.

Starts what is missing (a moto server for S3, redis-server for the cache), creates the bucket, runs
`berth run` with the ``s3`` flavor of config/berth.yml, and on exit stops only what it started.
The moto server keeps objects in memory: they are gone when it stops.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import boto3
from botocore.config import Config

from services.common import config

ROOT = Path(__file__).resolve().parents[1]


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


def _wait(host: str, port: int, child: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while not _listening(host, port):
        if child.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"run-s3: {what} did not start on {host}:{port}")
        time.sleep(0.1)


def main() -> int:
    config_path = os.environ.get("DOCKER_REGISTRY_CONFIG") or str(ROOT / "config" / "berth.yml")
    os.environ.setdefault("SETTINGS_FLAVOR", "s3")
    settings = config.load(config_path)
    s3 = settings.storage.s3
    endpoint = urlsplit(s3.regionendpoint)
    if endpoint.scheme != "http" or endpoint.hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"run-s3: storage.s3.regionendpoint must be a local http:// URL for the moto server, got {s3.regionendpoint!r}")
    host, port = endpoint.hostname, endpoint.port or 80
    started: list[subprocess.Popen[bytes]] = []
    try:
        if not _listening(host, port):
            moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
            child = subprocess.Popen(
                [moto, "-H", host, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
            started.append(child)
            _wait(host, port, child, "the moto S3 server")
            print(f"run-s3: S3 endpoint (moto) at {s3.regionendpoint}", file=sys.stderr)
        client = boto3.client(
            "s3",
            endpoint_url=s3.regionendpoint,
            region_name=s3.region,
            aws_access_key_id=s3.accesskey,
            aws_secret_access_key=s3.secretkey,
            config=Config(s3={"addressing_style": "path"}),
        )
        if s3.bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=s3.bucket)
        redis = settings.cache_lru
        if redis.enabled and not _listening(redis.host, redis.port):
            if not shutil.which("redis-server"):
                raise SystemExit("run-s3: redis-server is not installed (apt-get install redis-server)")
            workdir = tempfile.mkdtemp(prefix="berth-redis-")
            child = subprocess.Popen(
                [
                    "redis-server",
                    "--bind",
                    redis.host,
                    "--port",
                    str(redis.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    workdir,
                    "--maxmemory",
                    "256mb",
                    "--maxmemory-policy",
                    "allkeys-lru",
                ],
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
            started.append(child)
            _wait(redis.host, redis.port, child, "redis-server")
            print(f"run-s3: Redis at {redis.host}:{redis.port}", file=sys.stderr)
        berth = subprocess.Popen([sys.executable, "-m", "services.cli", "--config", config_path, "run"], cwd=ROOT)
        started.append(berth)
        # Passed on to berth run, which stops its services (from a terminal it got Ctrl-C itself
        # too; a second signal is harmless).
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda received, _: berth.send_signal(received))
        return berth.wait()
    finally:
        for child in reversed(started):
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.kill()


if __name__ == "__main__":
    sys.exit(main())
