"""``berth``: one command line for every service.

    berth blobstore         the gRPC blobstore
    berth gateway           the registry HTTP API
    berth run               every service as child processes, stopped together on Ctrl-C
    berth config check      validate the configuration and print the effective result
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from services.common import config, logs

log = logging.getLogger("berth")


def _settings(args: argparse.Namespace) -> config.Settings:
    try:
        return config.load(args.config)
    except config.ConfigError as exc:
        print(f"berth: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_blobstore(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.setup("blobstore", settings.loglevel)
    from services.blobstore.server import serve

    serve(settings)
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.setup("gateway", settings.loglevel)
    import uvicorn

    from services.gateway.app import create_app
    from services.gateway.http_protocol import protocol_class

    host, _, port = settings.http.addr.rpartition(":")
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=host.strip("[]"),
            port=int(port),
            http=protocol_class(),
            log_config=None,
            access_log=settings.loglevel == "debug",
            proxy_headers=False,  # X-Forwarded-* are honoured by the URL builder, for trusted proxies only
            server_header=False,
            timeout_graceful_shutdown=10,
        )
    )
    server.run()
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    shown = settings.model_dump()
    if shown["http"]["secret"]:
        shown["http"]["secret"] = "********"
    print(json.dumps(shown, indent=2))
    return 0


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
    """Starts the blobstore, then the gateway; a signal or a dying child stops both."""
    settings = _settings(args)
    logs.setup("berth", settings.loglevel)
    base = [sys.executable, "-m", "services.cli"] + (["--config", args.config] if args.config else [])
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for name, addr in (("blobstore", settings.blobstore.addr), ("gateway", settings.http.addr)):
            child = subprocess.Popen([*base, name], start_new_session=True)
            children.append((name, child))
            if not _wait_for_port(addr, 30, child):
                log.error("%s did not start listening on %s", name, addr)
                return 1
        log.info("Berth is up: registry at http://%s/v2/ (storage: %s)", settings.http.addr, settings.storage.driver)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="berth", description="Berth container registry")
    parser.add_argument("--config", default=os.environ.get("DOCKER_REGISTRY_CONFIG"), help="YAML config file (default: $DOCKER_REGISTRY_CONFIG, else built-in defaults)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("blobstore", help="run the gRPC blobstore").set_defaults(func=cmd_blobstore)
    sub.add_parser("gateway", help="run the registry HTTP API").set_defaults(func=cmd_gateway)
    sub.add_parser("run", help="run every service until interrupted").set_defaults(func=cmd_run)
    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    cfg_sub.add_parser("check", help="validate and print the effective configuration").set_defaults(func=cmd_config_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
