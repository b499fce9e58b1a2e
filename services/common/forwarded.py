"""The request as the client made it, when a reverse proxy stands between the client and Berth.

A proxy reports what it received in ``Forwarded`` (RFC 7239) or ``X-Forwarded-For/-Proto/-Host``.
Those headers are only believed when the direct peer is a trusted proxy (``http.trusted_proxies``:
addresses, CIDR networks, or ``*``); from anyone else they are ignored, since any client can send
them.

The client address is the security-relevant part (logs, events, per-address limits), so it is read
from the right: each trusted proxy appends the address it saw, and the right-most entry that is not
itself a trusted proxy is the first hop nobody we trust vouches beyond. Entries to its left were
written by the client and are never used. Scheme and host only shape the URLs handed back to the
same client, which could as well send its own ``Host`` header, so they are taken from the left-most
value, the one the edge proxy saw (registry:2 reads them the same way).

``install`` keeps the trust list on ``app.state``; apps that never install it trust nobody.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request

from services.common.config import ConfigError, HTTPSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A host[:port] fit for a URL; anything else a proxy sends is ignored rather than echoed.
_HOST = re.compile(r"(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_SCHEMES = ("http", "https")
_SCOPE_KEY = "berth.forwarded"


class TrustedProxies:
    """Who may speak for a client: exact addresses, CIDR networks, or everyone (``*``)."""

    def __init__(self, entries: Iterable[str] = (), key: str = "http.trusted_proxies", header: str = "x-forwarded-for") -> None:
        # The one header family read from them (http.forwarded_header).
        self.header = header
        self.everyone = False
        self.addresses: set[IPAddress] = set()
        self.networks: list[IPNetwork] = []
        for i, raw in enumerate(entries):
            entry = raw.strip()
            if entry == "*":
                self.everyone = True
                continue
            try:
                if "/" in entry:
                    self.networks.append(ipaddress.ip_network(entry, strict=False))
                else:
                    self.addresses.add(_normal(ipaddress.ip_address(entry)))
            except ValueError:
                raise ConfigError(f"{key}[{i}]: expected an IP address, a CIDR network or '*', got {raw!r}") from None

    def __bool__(self) -> bool:
        return self.everyone or bool(self.addresses) or bool(self.networks)

    def trusts(self, address: str) -> bool:
        if self.everyone:
            return True
        ip = parse_address(address)
        if ip is None:
            return False
        return ip in self.addresses or any(ip in net for net in self.networks if net.version == ip.version)


NOBODY = TrustedProxies()


@dataclass(frozen=True)
class Origin:
    """How the client addressed the registry, and from where.

    ``client_port`` is None when the address came from a proxy header (proxies rarely pass ports on).
    """

    scheme: str
    host: str
    client: str
    client_port: int | None


def install(app: Starlette, http: HTTPSettings) -> None:
    """Makes ``origin``/``client_address`` honour ``http.trusted_proxies`` (and the header they
    set, ``http.forwarded_header``) for this app.

    Raises ConfigError naming the bad entry, so a typo stops the service at startup.
    """
    app.state.trusted_proxies = TrustedProxies(http.trusted_proxies, header=http.forwarded_header)


def origin(request: Request) -> Origin:
    """The request's origin, worked out once per request."""
    found = request.scope.get(_SCOPE_KEY)
    if found is None:
        trusted = getattr(request.app.state, "trusted_proxies", NOBODY) if "app" in request.scope else NOBODY
        found = resolve(request, trusted)
        request.scope[_SCOPE_KEY] = found
    return found


def client_address(request: Request) -> str:
    """The client's IP address (the proxy's own when it is not trusted): for logs and events."""
    return origin(request).client


def remote_addr(request: Request) -> str:
    """``ip:port`` of a direct client, ``ip`` of a forwarded one: the events' ``request.addr``."""
    found = origin(request)
    if found.client_port is None:
        return found.client
    host = f"[{found.client}]" if ":" in found.client else found.client
    return f"{host}:{found.client_port}"


def resolve(request: Request, trusted: TrustedProxies) -> Origin:
    peer = request.client
    peer_host, peer_port = (peer.host, peer.port) if peer else ("", None)
    direct = Origin(request.url.scheme, request.headers.get("host") or request.url.netloc, peer_host, peer_port)
    if not trusted or not trusted.trusts(peer_host):
        return direct
    headers = request.headers
    if trusted.header == "forwarded":
        hops = parse_forwarded(headers.getlist("forwarded"))
        chain = [hop.get("for", "") for hop in hops]
        first = hops[0] if hops else {}
        scheme, host = first.get("proto", ""), first.get("host", "")
    else:
        chain = _split(headers.getlist("x-forwarded-for"))
        scheme = next(iter(_split(headers.getlist("x-forwarded-proto"))), "")
        host = next(iter(_split(headers.getlist("x-forwarded-host"))), "")
    client = _client_from_chain(chain, trusted)
    return Origin(
        scheme=scheme.lower() if scheme.lower() in _SCHEMES else direct.scheme,
        host=host if _HOST.fullmatch(host) else direct.host,
        client=client if client is not None else direct.client,
        client_port=None if client is not None else direct.client_port,
    )


def _client_from_chain(chain: Sequence[str], trusted: TrustedProxies) -> str | None:
    """The right-most address in ``chain`` that is not a trusted proxy (the left-most when all are).

    An entry that is no address ("unknown", an obfuscated name) ends the walk: the client is then
    the last hop we could name, or None (the direct peer) if there is none.
    """
    named: str | None = None
    for entry in reversed(chain):
        ip = parse_address(entry)
        if ip is None:
            break
        named = str(ip)
        if not trusted.trusts(named):
            break
    return named


def parse_address(value: str) -> IPAddress | None:
    """An IP address from a peer or a proxy header entry: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``,
    ``::1``; IPv4-mapped IPv6 addresses read as IPv4."""
    text = value.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return _normal(ipaddress.ip_address(text))
    except ValueError:
        return None


def parse_forwarded(values: Iterable[str]) -> list[dict[str, str]]:
    """RFC 7239 elements, left (nearest the client) to right: ``for=1.2.3.4;proto=https, for=...``.

    Parameter names are lower-cased; quoted values unquoted. Commas inside quotes (rare, but legal)
    are respected.
    """
    hops: list[dict[str, str]] = []
    for value in values:
        for element in _split_outside_quotes(value, ","):
            hop: dict[str, str] = {}
            for pair in _split_outside_quotes(element, ";"):
                name, sep, raw = pair.partition("=")
                if not sep:
                    continue
                raw = raw.strip()
                if len(raw) >= 2 and raw[0] == raw[-1] == '"':
                    raw = raw[1:-1].replace('\\"', '"')
                hop[name.strip().lower()] = raw
            if hop:
                hops.append(hop)
    return hops


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _split(values: Iterable[str]) -> list[str]:
    """Comma-separated header values, repeated headers joined in order."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _normal(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
