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


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``; waits for it either way."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Berth:
    """One blobstore and one gateway sharing an environment (config via REGISTRY_* variables), and
    the token service when started as "auth" (its key and database under the data directory)."""

    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    auth_port: int = field(default_factory=free_port)
    # The search service ("search"); off unless the test sets REGISTRY_SEARCH_BACKEND=sqlalchemy,
    # so gateways of other tests send no events to a search service that is not there.
    search_port: int = field(default_factory=free_port)
    # The blobstore's HTTP listener (/metrics, /_ping, /_ready).
    blobstore_http_port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.auth_port}"

    @property
    def search_url(self) -> str:
        return f"http://127.0.0.1:{self.search_port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        env.update(
            REGISTRY_HTTP_ADDR=f"127.0.0.1:{self.http_port}",
            REGISTRY_BLOBSTORE_ADDR=f"127.0.0.1:{self.grpc_port}",
            REGISTRY_BLOBSTORE_HTTP_ADDR=f"127.0.0.1:{self.blobstore_http_port}",
            REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=str(self.data_dir),
            REGISTRY_HTTP_SECRET="test-secret",
            REGISTRY_TOKEN_SERVICE_ADDR=f"127.0.0.1:{self.auth_port}",
            REGISTRY_TOKEN_SERVICE_KEY=str(self.data_dir / "auth" / "signing-key.pem"),
            REGISTRY_TOKEN_SERVICE_DATABASE=f"sqlite:///{self.data_dir / 'auth' / 'users.db'}",
            REGISTRY_LOGLEVEL="warning",
            REGISTRY_SEARCH_BACKEND="",
            REGISTRY_SEARCH_ADDR=f"127.0.0.1:{self.search_port}",
            REGISTRY_SEARCH_DATABASE=f"sqlite:///{self.data_dir / 'search' / 'index.db'}",
        )
        env.update(self.env)
        return env

    def start(self, *services: str) -> Berth:
        for service in services or ("blobstore", "gateway"):
            log = open(self.workdir / f"{service}.log", "ab")  # noqa: SIM115 - lives as long as the process
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli", service],
                cwd=ROOT,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            self.procs[service] = proc
            ports = {"blobstore": self.grpc_port, "auth": self.auth_port, "search": self.search_port}
            wait_for_port(ports.get(service, self.http_port), proc)
        return self

    def stop(self, *services: str) -> None:
        for service in services or tuple(reversed(self.procs)):
            proc = self.procs.pop(service, None)
            if proc is None:
                continue
            stop_process(proc, timeout=15)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pid(self, service: str) -> int:
        return self.procs[service].pid

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def auth_client(self, local_address: str | None = None) -> httpx.Client:
        """A client of the token service; ``local_address`` (127.0.0.x) picks the source address."""
        transport = httpx.HTTPTransport(local_address=local_address) if local_address else None
        return httpx.Client(base_url=self.auth_url, timeout=60, transport=transport)

    def log(self, service: str) -> str:
        return (self.workdir / f"{service}.log").read_text(errors="replace")


@dataclass
class BerthRun:
    """`berth run` as a user starts it: one command, a working directory, an environment (no
    REGISTRY_* from the test's own), and the gateway at ``url``."""

    workdir: Path
    env: dict[str, str]
    url: str
    proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 60) -> BerthRun:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "AWS_", "SETTINGS_FLAVOR", "DOCKER_REGISTRY_CONFIG"))}
        env.update(self.env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run"],
            cwd=self.workdir,
            env=env,
            stdout=open(self.workdir / "run.log", "w"),  # noqa: SIM115 - lives as long as the process
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"berth run exited with {self.proc.returncode}:\n{self.log()}")
            try:
                httpx.get(f"{self.url}/", timeout=1, verify=False)
                return self
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"berth run did not come up:\n{self.log()}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=30)  # type: ignore[arg-type]

    def log(self) -> str:
        return (self.workdir / "run.log").read_text(errors="replace")
