"""A real redis-server for tests, and a TCP proxy that can cut a client off from it.

The server runs in a temporary directory on a free port, without persistence, with the eviction
policy operators are told to use. The proxy lets a test take Redis away from one gateway while the
server (and what it holds) stays, which stopping the server cannot do.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.support.processes import free_port, stop_process


@dataclass
class RedisServer:
    workdir: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        """A gateway's environment for using this server as its metadata cache."""
        return {"REGISTRY_CACHE_LRU_HOST": "127.0.0.1", "REGISTRY_CACHE_LRU_PORT": str(self.port)}

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def stop(self) -> None:
        """Stops this server (by its PID) and waits for it."""
        stop_process(self.proc)


def start_redis(workdir: Path, port: int | None = None) -> RedisServer:
    """A redis-server on ``port`` (a free one by default); skips the test if none is installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = open(workdir / "redis.log", "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(workdir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            "64mb",
            "--maxmemory-policy",
            "allkeys-lru",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = RedisServer(workdir, port, proc)
    deadline = time.monotonic() + 15
    while True:
        try:
            if server.client().ping():
                return server
        except redis.RedisError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"redis-server did not start on {port}: {(workdir / 'redis.log').read_text()[-2000:]}")
        time.sleep(0.05)


@dataclass
class TCPProxy:
    """Forwards 127.0.0.1:<port> to a target. ``cut()`` drops every connection and then accepts
    new ones without forwarding anything (clients wait until their timeouts); ``restore()`` ends
    that."""

    target_port: int
    port: int = field(default_factory=free_port)
    _cut: threading.Event = field(default_factory=threading.Event)
    _open: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _listener: socket.socket | None = None

    def start(self) -> TCPProxy:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def cut(self) -> None:
        self._cut.set()
        self._close_all()

    def restore(self) -> None:
        self._close_all()  # the held connections: their clients reconnect and get through
        self._cut.clear()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self._close_all()

    def _close_all(self) -> None:
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # stopped
            with self._lock:
                self._open.append(client)
            if self._cut.is_set():
                continue  # held open, never answered
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.append(upstream)
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while not self._cut.is_set():
                data = source.recv(65536)
                if not data or self._cut.is_set():
                    break
                sink.sendall(data)
        except OSError:
            pass
        for conn in (source, sink):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
