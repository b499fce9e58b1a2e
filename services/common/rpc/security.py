"""Who may call the blobstore: a shared token checked on every call, or client certificates.

The blobstore holds every byte of the registry and trusts whatever it is asked, so when it listens
beyond loopback (``blobstore.security``: token or mtls) no call may reach a servicer without
credentials. The single exception is the standard health service, which orchestrators probe
without any (a Kubernetes ``grpc`` probe cannot send metadata or a client certificate) and which
reveals nothing but SERVING / NOT_SERVING.

Both ends live here (the gateway's channel credentials and token metadata too), so what one side
sends and the other checks cannot drift apart.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from services.common.config import BlobstoreSettings, ConfigError
from services.common.metrics import RPC_REFUSED

log = logging.getLogger("berth.blobstore")

AUTHORIZATION_KEY = "authorization"
# Probes only; everything else needs credentials.
_OPEN_PREFIX = "/grpc.health.v1.Health/"
_LOG_INTERVAL = 10


def read_pem(path: str, key: str) -> bytes:
    """The content of a PEM file, or a ConfigError naming the setting: a typo in a path must stop
    the process at start, not surface as handshake failures on the first call."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path!r}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{key}: {path!r} is not a PEM file")
    return data


def server_credentials(settings: BlobstoreSettings) -> grpc.ServerCredentials | None:
    """TLS for the listening port: required client certificates (mtls), server-only TLS when a
    certificate is configured with token security, or None for a plain port."""
    mode = settings.effective_security
    tls = settings.tls
    if mode != "mtls" and not tls.certificate:
        return None
    if bool(tls.certificate) != bool(tls.key):
        missing = "blobstore.tls.key" if tls.certificate else "blobstore.tls.certificate"
        raise ConfigError(f"{missing}: required with {'blobstore.tls.certificate' if tls.certificate else 'blobstore.tls.key'}")
    pair = (read_pem(tls.key, "blobstore.tls.key"), read_pem(tls.certificate, "blobstore.tls.certificate"))
    if mode == "mtls":
        return grpc.ssl_server_credentials(
            [pair], root_certificates=read_pem(tls.clientca, "blobstore.tls.clientca"), require_client_auth=True
        )
    return grpc.ssl_server_credentials([pair])


def channel_credentials(settings: BlobstoreSettings) -> grpc.ChannelCredentials | None:
    """A gateway's TLS towards the blobstore: its client certificate (mtls), or only the CA when one
    is configured (a blobstore with a server certificate; whatever ``auto`` resolves to from this
    gateway's own address, which says nothing of the blobstore's), or None for plain gRPC."""
    tls = settings.tls
    mode = settings.effective_security
    if mode == "mtls":
        return grpc.ssl_channel_credentials(
            root_certificates=read_pem(tls.ca, "blobstore.tls.ca"),
            private_key=read_pem(tls.client_key, "blobstore.tls.client_key"),
            certificate_chain=read_pem(tls.client_certificate, "blobstore.tls.client_certificate"),
        )
    if tls.ca:
        return grpc.ssl_channel_credentials(root_certificates=read_pem(tls.ca, "blobstore.tls.ca"))
    return None


def call_metadata(settings: BlobstoreSettings) -> tuple[tuple[str, str], ...]:
    """What a gateway adds to every call. With ``auto`` the token goes whenever one is configured:
    a gateway's own ``addr`` may be the loopback default while the blobstore it reaches through
    ``target`` listens beyond it (and requires the token); a blobstore that asks for none ignores it."""
    mode = settings.effective_security
    if settings.token and (mode == "token" or settings.security == "auto"):
        return ((AUTHORIZATION_KEY, f"Bearer {settings.token}"),)
    return ()


def interceptors(settings: BlobstoreSettings) -> list[grpc.ServerInterceptor]:
    """The credential checks that run before any servicer (mtls needs none: the handshake is it)."""
    if settings.effective_security == "token":
        return [TokenCheck(settings.token)]
    return []


class TokenCheck(grpc.ServerInterceptor):
    """Refuses, with UNAUTHENTICATED, every call whose ``authorization`` is not ``Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()
        self._logged_at = float("-inf")

    def _log_refusal(self, method: str, reason: str) -> None:
        """One line per 10 s at most: a scanner or a misconfigured gateway must not flood the log
        (the counter has the numbers)."""
        now = time.monotonic()
        if now - self._logged_at >= _LOG_INTERVAL:
            self._logged_at = now
            log.warning("refused %r: %s token (further refusals for %ds only counted)", method, reason, _LOG_INTERVAL)

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if details.method.startswith(_OPEN_PREFIX):
            return continuation(details)
        sent = _metadata_value(details.invocation_metadata, AUTHORIZATION_KEY)
        if sent is not None and hmac.compare_digest(sent.encode(), self._expected):
            return continuation(details)
        reason = "missing" if sent is None else "invalid"
        RPC_REFUSED.labels(reason=f"token_{reason}").inc()
        self._log_refusal(details.method, reason)
        # Refused before the servicer runs (a request stream is never read), by a handler shaped
        # like the real one, so the server frames the refusal the way the client expects.
        return _refusal(continuation(details))


def _metadata_value(metadata: Any, key: str) -> str | None:
    for item in metadata or ():
        if item[0] == key:
            value = item[1]
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None


def _refuse(_request: Any, context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "blobstore credentials missing or wrong")


def _refusal(handler: grpc.RpcMethodHandler[Any, Any] | None) -> grpc.RpcMethodHandler[Any, Any]:
    if handler is None:  # no such method: still no hint about what exists
        return grpc.unary_unary_rpc_method_handler(_refuse)
    if handler.request_streaming and handler.response_streaming:
        factory = grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        factory = grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        factory = grpc.unary_stream_rpc_method_handler
    else:
        factory = grpc.unary_unary_rpc_method_handler
    return factory(_refuse, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
