"""HTTPS for an HTTP listener, from a ``tls`` section (registry:2's ``http.tls``).

The context is built before the port is bound, from files read now, so a missing, unreadable or
mismatched certificate stops the service with the configuration key to fix, rather than surfacing
as a handshake failure at the first client.
"""

from __future__ import annotations

import ssl

from services.common.config import ConfigError, TLSSettings

_VERSIONS = {"tls1.2": ssl.TLSVersion.TLSv1_2, "tls1.3": ssl.TLSVersion.TLSv1_3}


def server_context(tls: TLSSettings, key: str = "http.tls") -> ssl.SSLContext | None:
    """The server's SSL context, or None when ``tls`` names no certificate (plain HTTP).

    ``clientcas``: client certificates signed by one of these CAs are required (mutual TLS).
    Raises ConfigError naming ``key``'s entry that is at fault.
    """
    if not tls.certificate:
        return None
    _expect_pem(tls.certificate, f"{key}.certificate", "CERTIFICATE")
    _expect_pem(tls.key, f"{key}.key", "PRIVATE KEY")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.minimumtls]
    try:
        context.load_cert_chain(tls.certificate, tls.key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ConfigError(f"{key}.key: {tls.key} is not the key of {key}.certificate ({tls.certificate})") from None
        raise ConfigError(f"{key}.certificate, {key}.key: not a usable certificate and key ({exc.reason or exc})") from None
    for i, path in enumerate(tls.clientcas):
        name = f"{key}.clientcas[{i}]"
        _expect_pem(path, name, "CERTIFICATE")
        try:
            context.load_verify_locations(cafile=path)
        except ssl.SSLError as exc:
            raise ConfigError(f"{name}: no usable CA certificate in {path} ({exc.reason or exc})") from None
    if tls.clientcas:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _expect_pem(path: str, name: str, kind: str) -> None:
    """Reads ``path`` for the error messages' sake: ssl's own say neither which file nor why."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror or exc}") from None
    if f"{kind}-----".encode() not in text:
        raise ConfigError(f"{name}: {path} holds no PEM {kind.lower()}")
