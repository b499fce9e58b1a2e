"""``berth run``: every service as a child process (``python -m services.cli <service>``), started
in dependency order and stopped together, for a single-host registry in one command."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time

from services.cli import configuration
from services.cli.configuration import QUIET_ENV
from services.cli.exit_status import unusable
from services.common import config, logs

log = logging.getLogger("berth")


def _listeners(settings: config.Settings) -> list[tuple[str, str, str]]:
    """(service, config key, address) of every listener `berth run` opens, in start order."""
    out = [("blobstore", "blobstore.addr", settings.blobstore.addr)]
    if settings.blobstore.http_addr:
        out.append(("blobstore", "blobstore.http_addr", settings.blobstore.http_addr))
    if settings.auth.type == "token":  # before the gateway, which may fetch its JWKS
        out.append(("auth", "token_service.addr", settings.token_service.addr))
    if settings.search_service:  # before the gateway, which sends it events
        out.append(("search", "search.addr", settings.search.addr))
    out.append(("gateway", "http.addr", settings.http.addr))
    return out


def _address_in_use(addr: str) -> OSError | None:
    """Whether something else listens on ``addr`` already (a bind fails); None when it is free."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            return exc
    return None


def _wait_for_port(addr: str, timeout: float, child: subprocess.Popen[bytes]) -> bool:
    host, _, port = addr.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            return False
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def cmd_run(args: argparse.Namespace) -> int:
    """Starts the blobstore, the token service (auth.type token), the search service
    (any search_backend), then the gateway; a signal or a dying child stops them all."""
    settings = configuration.load(args)
    logs.configure("berth", settings)
    listeners = _listeners(settings)
    seen: dict[str, str] = {}
    for _, key, addr in listeners:
        if addr in seen:
            return unusable(ValueError(f"{key} and {seen[addr]} are both {addr}"))
        seen[addr] = key
        # A service answering there already would be taken for ours (and get our traffic).
        busy = _address_in_use(addr)
        if busy is not None:
            return unusable(
                ValueError(f"{key}: {addr} cannot be used ({busy.strerror}); another program listens there, or pick another address")
            )
    base = [sys.executable, "-m", "services.cli"] + (["--config", args.config] if args.config else [])
    child_env = {**os.environ, QUIET_ENV: "1"}
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        services = [(name, addr) for name, key, addr in listeners if key != "blobstore.http_addr"]
        for name, addr in services:
            child = subprocess.Popen([*base, name], start_new_session=True, env=child_env)
            children.append((name, child))
            if not _wait_for_port(addr, 30, child):
                log.error("%s did not start listening on %s", name, addr)
                return 1
        scheme = "https" if settings.http.tls.certificate else "http"
        log.info("Berth is up: registry at %s://%s/v2/ (storage: %s)", scheme, settings.http.addr, settings.storage.driver)
        if settings.auth.type == "token":
            log.info("token service at http://%s/token", settings.token_service.addr)
        if settings.search_service:
            log.info("search service at http://%s", settings.search.addr)
        while not stopping:
            for name, child in children:
                if child.poll() is not None:
                    log.error("%s exited with status %s; stopping", name, child.returncode)
                    return 1
            time.sleep(0.2)
        return 0
    finally:
        for _, child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for name, child in reversed(children):
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", name)
                child.kill()
        log.info("Berth stopped")
