"""The registries the benchmark runner starts and must stop: the Go reference registry (Debian's
docker-registry) with registry:2's default configuration on a free loopback port, and Berth's
blobstore and gateway as `berth run` starts them (optionally with a Redis metadata cache), each on
fresh temporary storage, killed by PID and cleaned up afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

# Mirrors the config shipped in the registry:2 image (in-memory blob
# descriptor cache), plus delete so the benchmark can clean up, and with the
# access log off so terminal/log I/O is not what gets measured.
CONFIG_TEMPLATE = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:{port}
  headers:
    X-Content-Type-Options: [nosniff]
"""


def proxy_config(remoteurl: str) -> Callable[[int, Path], str]:
    """The Go registry's configuration as a pull-through cache of ``remoteurl`` (registry:2's
    ``proxy`` section)."""
    return lambda port, root: CONFIG_TEMPLATE.format(root=root, port=port) + f"proxy:\n  remoteurl: {remoteurl}\n"


@dataclass
class Reference:
    """A Go registry this runner started and therefore must stop."""

    proc: subprocess.Popen[bytes]
    url: str
    tmp: Path
    log_path: Path


def free_port() -> int:
    """A port the kernel just handed out on loopback (tiny reuse race,
    acceptable for a local benchmark)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp: Path, port: int, render: Callable[[int, Path], str] | None = None) -> Path:
    """Config file plus empty storage dir, both inside `tmp`; ``render(port, storage dir)`` gives
    another configuration (the S3 rows', the mirror row's proxy)."""
    root = tmp / "storage"
    root.mkdir()
    config = tmp / "config.yml"
    text = render(port, root) if render is not None else CONFIG_TEMPLATE.format(root=root, port=port)
    config.write_text(text, encoding="utf-8")
    return config


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Poll GET /v2/ until it answers 200, failing fast if the process died."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"registry exited with status {proc.returncode}")
            try:
                if client.get(f"{url}/v2/").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"registry did not answer GET {url}/v2/ within {timeout:.0f}s")


def start_reference(binary: str, render: Callable[[int, Path], str] | None = None) -> Reference:
    """Start `binary serve CONFIG` on a free loopback port, wait for it."""
    tmp = Path(tempfile.mkdtemp(prefix="berth-bench-registry2-"))
    port = free_port()
    config = write_config(tmp, port, render)
    log_path = tmp / "registry.log"
    with open(log_path, "wb") as log_file:
        # AWS_CA_BUNDLE (set on some machines for their proxy) makes its S3 driver panic on a plain
        # HTTP endpoint: the S3 rows' store is loopback HTTP, which needs no bundle.
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        proc = subprocess.Popen(
            [binary, "serve", str(config)], stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    ref = Reference(proc=proc, url=f"http://127.0.0.1:{port}", tmp=tmp, log_path=log_path)
    try:
        wait_ready(ref.url, proc)
    except RuntimeError:
        tail = log_path.read_text(errors="replace")[-2000:]
        stop_reference(ref, keep_tmp=False)
        raise RuntimeError(f"could not start {binary}; its log ends with:\n{tail}") from None
    return ref


def stop_reference(ref: Reference, keep_tmp: bool) -> None:
    """SIGTERM to exactly that PID, SIGKILL if it lingers; then drop its
    storage, which may hold hundreds of MiB of benchmark blobs."""
    if ref.proc.poll() is None:
        ref.proc.terminate()
        try:
            ref.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            ref.proc.kill()
            ref.proc.wait()
    if keep_tmp:
        print(f"kept reference registry files in {ref.tmp}", file=sys.stderr)
    else:
        shutil.rmtree(ref.tmp, ignore_errors=True)


@dataclass
class LocalBerth:
    procs: list[subprocess.Popen[bytes]]
    url: str
    tmp: Path


def start_berth(cache: bool = False, extra_env: dict[str, str] | None = None, direct: bool = False) -> LocalBerth:
    """Berth's blobstore and gateway as `berth run` starts them, on free ports and a temp store;
    with ``cache``, also a redis-server as the gateway's metadata cache (cache_lru); with
    ``direct``, large blob GETs redirect to the blobstore's own listener (storage_redirect +
    blobstore.public_url: sendfile); ``extra_env`` sets more REGISTRY_* keys (the mirror row's
    proxy.remoteurl)."""
    tmp = Path(tempfile.mkdtemp(prefix="berth-bench-berth-"))
    http_port, grpc_port, blobstore_http_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    if direct:
        env.update(REGISTRY_STORAGE_REDIRECT="true", REGISTRY_BLOBSTORE_PUBLIC_URL=f"http://127.0.0.1:{blobstore_http_port}")
    env.update(
        REGISTRY_HTTP_ADDR=f"127.0.0.1:{http_port}",
        REGISTRY_BLOBSTORE_ADDR=f"127.0.0.1:{grpc_port}",
        REGISTRY_BLOBSTORE_HTTP_ADDR=f"127.0.0.1:{blobstore_http_port}",
        REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=str(tmp / "data"),
        REGISTRY_LOGLEVEL="warning",
        # registry2 runs without notifications; so does Berth here, for a like-for-like comparison.
        REGISTRY_SEARCH_BACKEND="",
    )
    env.update(extra_env or {})
    berth = LocalBerth([], f"http://127.0.0.1:{http_port}", tmp)
    if cache:
        redis_port = free_port()
        berth.procs.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(redis_port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(tmp),
                    "--maxmemory",
                    "256mb",
                    "--maxmemory-policy",
                    "allkeys-lru",
                ],
                stdout=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
        )
        env.update(REGISTRY_CACHE_LRU_HOST="127.0.0.1", REGISTRY_CACHE_LRU_PORT=str(redis_port))
    with open(tmp / "berth.log", "wb") as log_file:
        for service in ("blobstore", "gateway"):
            berth.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "services.cli", service],
                    env=env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
            if service == "blobstore":
                time.sleep(0.5)
    wait_ready(berth.url, berth.procs[-1])
    return berth


def berth_pids(berth: LocalBerth) -> dict[str, int]:
    """The blobstore's and the gateway's pids (started last, in that order)."""
    return {"blobstore": berth.procs[-2].pid, "gateway": berth.procs[-1].pid}


def stop_berth(berth: LocalBerth) -> None:
    for proc in reversed(berth.procs):
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    shutil.rmtree(berth.tmp, ignore_errors=True)
