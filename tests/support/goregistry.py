"""Debian's docker-registry (the reference Go registry, registry:2) as a real upstream on loopback:
filesystem storage in a folder of the test, htpasswd (bcrypt) or token auth, its access log in a
file (one line per request, to count what reached it). ``stop`` and ``start`` keep port and data."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.auth import write_htpasswd
from tests.support.processes import free_port, stop_process


@dataclass
class GoRegistry:
    workdir: Path
    users: dict[str, str] = field(default_factory=dict)
    # registry:2's auth.token section, instead of htpasswd users.
    token: dict[str, Any] | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "registry.log"

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(self.workdir / "data")}, "delete": {"enabled": True}},
            "http": {"addr": self.host},
        }
        if self.token is not None:
            config["auth"] = {"token": self.token}
        elif self.users:
            write_htpasswd(self.workdir / "htpasswd", self.users)
            config["auth"] = {"htpasswd": {"realm": "upstream", "path": str(self.workdir / "htpasswd")}}
        return config

    def start(self) -> GoRegistry:
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / "registry.yml"
        path.write_text(yaml.safe_dump(self.config()))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(["docker-registry", "serve", str(path)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{self.url}/v2/", timeout=1)
                return self
            except httpx.TransportError:
                assert self.proc.poll() is None and time.monotonic() < deadline, self.log_path.read_text()
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=15)  # type: ignore[arg-type]
            self.proc = None

    def requests(self, method: str, path_part: str, status: int | None = None) -> int:
        """How many requests of ``method`` whose path contains ``path_part`` it answered (access
        log), only those answered with ``status`` when given."""
        return sum(
            1
            for line in self.log_path.read_text(errors="replace").splitlines()
            if f'"{method} ' in line and path_part in line and (status is None or f'HTTP/1.1" {status} ' in line)
        )
