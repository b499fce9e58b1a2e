"""Addresses of Berth's internal listeners that do not collide with the ones a file names.

Berth's internal services default to 127.0.0.1:5001-5004. A file written for another registry may
use those ports for something else (registry:2's sample puts its debug listener on
localhost:5001, a webhook on localhost:5003). Internal listeners the configuration leaves at their
default move to the next port the configuration does not name; an address set explicitly is kept
(and ``berth run`` says so when it is taken).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from services.common.config.translation import Translation

# Internal listener key -> its default port; the order in which free ports are handed out.
INTERNAL = (("blobstore.addr", 5001), ("token_service.addr", 5002), ("search.addr", 5003), ("blobstore.http_addr", 5004))
_LOCAL = {"", "localhost", "127.0.0.1", "0.0.0.0", "::", "::1", "[::]", "[::1]"}
_HOST = "127.0.0.1"


def place(t: Translation, named: list[str]) -> None:
    """``named``: addresses and URLs the document used for other things (listeners, endpoints)."""
    taken = {p for p in (_local_port(a) for a in [*named, *_addresses_in(t.tree)]) if p is not None}
    explicit = {key for key, _ in INTERNAL if t.has(key)}
    for key in explicit:
        port = _local_port(str(t.get(key)))
        if port is not None:
            taken.add(port)
    kept = [key for key, default in INTERNAL if key in explicit or default not in taken]
    taken |= {default for key, default in INTERNAL if key in kept}
    candidate = 5001
    for key, default in INTERNAL:
        if key in kept:
            continue
        while candidate in taken:
            candidate += 1
        taken.add(candidate)
        t.put(key, f"{_HOST}:{candidate}", f"moved from port {default}, which the configuration uses for something else")
        t.warn(f"{key}: port {default} is named elsewhere in the configuration; Berth's internal listener takes {_HOST}:{candidate}")
        if key == "token_service.addr":
            for url_key, path in (("auth.token.realm", "/token"), ("auth.token.jwks", "/.well-known/jwks.json")):
                t.set_default(url_key, f"http://{_HOST}:{candidate}{path}", "the token service's moved address")


def _addresses_in(tree: dict[str, Any]) -> list[str]:
    """The gateway's address and every URL the configuration sends to."""
    found = [str((tree.get("http") or {}).get("addr", "") or "")]
    for endpoint in (tree.get("notifications") or {}).get("endpoints") or []:
        if isinstance(endpoint, dict) and endpoint.get("url"):  # a disabled one still names a port in use
            found.append(str(endpoint["url"]))
    for section in ("cache", "cache_lru"):
        node = tree.get(section) or {}
        if isinstance(node, dict) and node.get("host"):
            found.append(f"{node['host']}:{node.get('port', 6379)}")
    return found


def _local_port(address: str) -> int | None:
    """The port of a local address (host:port, :port or URL); None for remote or unparsable ones."""
    if not address:
        return None
    if "://" in address:
        parts = urlsplit(address)
        try:
            url_port = parts.port
        except ValueError:
            return None
        return url_port if url_port is not None and (parts.hostname or "") in _LOCAL else None
    host, _, port = address.rpartition(":")
    return int(port) if port.isdigit() and host.strip() in _LOCAL else None
