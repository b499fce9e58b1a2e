"""``berth blobstore|gateway|auth|search``: run one service in the foreground until SIGTERM.

Every HTTP service is served by uvicorn the same way (``serve_http``); each service's modules are
imported only by its own command, so starting one does not load the others.
"""

from __future__ import annotations

import argparse
import ssl
from typing import Any

from services.cli import configuration
from services.cli.exit_status import unusable
from services.common import config, logs


def cmd_blobstore(args: argparse.Namespace) -> int:
    """The gRPC blobstore (and its HTTP listener); exit 2 when its addresses or files cannot be used."""
    settings = configuration.load(args)
    logs.configure("blobstore", settings)
    from services.blobstore.server import serve

    try:
        serve(settings)
    except config.ConfigError as exc:  # unreadable certificates, an address in use
        return unusable(exc)
    return 0


def serve_http(app: Any, addr: str, settings: config.Settings, *, tls: ssl.SSLContext | None = None, **options: Any) -> int:
    """Serves one service's ASGI app with uvicorn, the same way for every service; HTTPS with
    ``tls`` (``tls_context``, built before the app so bad files stop the service early)."""
    import uvicorn

    if tls is not None:
        # uvicorn's own SSL options set neither a minimum version nor several client CAs.
        options["ssl_context_factory"] = lambda _config, _default: tls
    host, _, port = addr.rpartition(":")
    uvicorn.Server(
        uvicorn.Config(
            app,
            host=host.strip("[]"),
            port=int(port),
            log_config=None,
            # Query strings only: credentials travel in headers and bodies.
            access_log=settings.loglevel == "debug",
            proxy_headers=False,  # X-Forwarded-* are honoured by the URL builder, for trusted proxies only
            server_header=False,
            timeout_graceful_shutdown=10,
            **options,
        )
    ).run()
    return 0


def tls_context(section: config.TLSSettings, key: str) -> ssl.SSLContext | None:
    """The listener's SSL context (None: plain HTTP); exit 2 naming the key when a file is unusable."""
    from services.common import https

    try:
        return https.server_context(section, key)
    except config.ConfigError as exc:
        raise SystemExit(unusable(exc)) from None


def cmd_gateway(args: argparse.Namespace) -> int:
    """The registry API, HTTPS when http.tls is set; the TLS files are read before the app is built."""
    settings = configuration.load(args)
    logs.configure("gateway", settings)
    from services.gateway.app import create_app
    from services.gateway.http_protocol import protocol_class

    tls = tls_context(settings.http.tls, "http.tls")
    try:
        app = create_app(settings)
    except config.ConfigError as exc:
        return unusable(exc)
    return serve_http(app, settings.http.addr, settings, tls=tls, http=protocol_class())


def cmd_auth(args: argparse.Namespace) -> int:
    """The token service; keys and rules that cannot be used stop it before it listens (exit 2)."""
    settings = configuration.load(args)
    logs.configure("auth", settings)
    from services.auth.app import create_app

    try:
        app = create_app(settings)
    except config.ConfigError as exc:
        return unusable(exc)
    return serve_http(app, settings.token_service.addr, settings)


def cmd_search(args: argparse.Namespace) -> int:
    """The search service; an index written by a newer Berth, or a custom backend that cannot be
    loaded, stops it before it listens (exit 2)."""
    settings = configuration.load(args)
    logs.configure("search", settings)
    from services.search.app import create_app
    from services.search.schema import SchemaError

    try:
        app = create_app(settings)
    except SchemaError as exc:  # a database written by a newer Berth
        return unusable(exc, "search index")
    except config.ConfigError as exc:  # a search_backend module that cannot be loaded
        return unusable(exc)
    return serve_http(app, settings.search.addr, settings)
