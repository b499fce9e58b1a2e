"""Starts Berth services as real child processes on free loopback ports, like `berth run` does."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


@dataclass
class Berth:
    """One blobstore and one gateway sharing an environment (config via REGISTRY_* variables)."""

    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        env.update(
            REGISTRY_HTTP_ADDR=f"127.0.0.1:{self.http_port}",
            REGISTRY_BLOBSTORE_ADDR=f"127.0.0.1:{self.grpc_port}",
            REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=str(self.data_dir),
            REGISTRY_HTTP_SECRET="test-secret",
            REGISTRY_LOGLEVEL="warning",
        )
        env.update(self.env)
        return env

    def start(self, *services: str) -> "Berth":
        for service in services or ("blobstore", "gateway"):
            log = open(self.workdir / f"{service}.log", "ab")  # noqa: SIM115 - lives as long as the process
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli", service],
                cwd=ROOT, env=self.environment(), stdout=log, stderr=subprocess.STDOUT,
            )
            self.procs[service] = proc
            wait_for_port(self.grpc_port if service == "blobstore" else self.http_port, proc)
        return self

    def stop(self, *services: str) -> None:
        for service in services or tuple(reversed(self.procs)):
            proc = self.procs.pop(service, None)
            if proc is None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def pid(self, service: str) -> int:
        return self.procs[service].pid

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def log(self, service: str) -> str:
        return (self.workdir / f"{service}.log").read_text(errors="replace")
