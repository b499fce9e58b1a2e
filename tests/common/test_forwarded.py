"""Which proxy headers are believed, and what they are read as (services/common/forwarded.py)."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from services.common.config import ConfigError
from services.common.forwarded import Origin, TrustedProxies, parse_address, parse_forwarded, resolve


def request(peer: str = "10.0.0.1", *headers: tuple[str, str], scheme: str = "http", host: str = "reg:5000") -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v2/",
        "raw_path": b"/v2/",
        "query_string": b"",
        "scheme": scheme,
        "server": ("127.0.0.1", 5000),
        "client": (peer, 40000),
        "headers": [(b"host", host.encode()), *((k.lower().encode(), v.encode()) for k, v in headers)],
    }
    return Request(scope)


PROXIES = TrustedProxies(["10.0.0.1", "192.168.0.0/16", "fd00::/8"])


def test_trust_list_entries() -> None:
    assert PROXIES.trusts("10.0.0.1") and PROXIES.trusts("192.168.7.7") and PROXIES.trusts("fd00::5")
    assert not PROXIES.trusts("10.0.0.2") and not PROXIES.trusts("fe80::1") and not PROXIES.trusts("unknown")
    assert PROXIES.trusts("::ffff:10.0.0.1")  # IPv4-mapped, as dual-stack sockets report it
    assert TrustedProxies(["*"]).trusts("203.0.113.1") and not TrustedProxies([]).trusts("127.0.0.1")


def test_a_bad_entry_names_its_key() -> None:
    with pytest.raises(ConfigError, match=r"http\.trusted_proxies\[1\]: .*'10.0.0.300'"):
        TrustedProxies(["10.0.0.1", "10.0.0.300"])


def test_untrusted_peers_are_taken_at_their_word_only() -> None:
    r = request(
        "10.9.9.9",
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-For", "1.2.3.4"),
        ("Forwarded", "for=1.2.3.4;proto=https"),
    )
    assert resolve(r, PROXIES) == Origin("http", "reg:5000", "10.9.9.9", 40000)


def test_trusted_peer_x_forwarded() -> None:
    r = request(
        "10.0.0.1", ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "registry.example.com"), ("X-Forwarded-For", "203.0.113.9")
    )
    assert resolve(r, PROXIES) == Origin("https", "registry.example.com", "203.0.113.9", None)


def test_client_is_the_rightmost_address_not_a_trusted_proxy() -> None:
    # The client made up "6.6.6.6"; the edge proxy (192.168.1.1, trusted) appended what it saw.
    r = request("10.0.0.1", ("X-Forwarded-For", "6.6.6.6, 203.0.113.9, 192.168.1.1"))
    assert resolve(r, PROXIES).client == "203.0.113.9"
    # Repeated headers read as one list, in order.
    r = request("10.0.0.1", ("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "203.0.113.9"))
    assert resolve(r, PROXIES).client == "203.0.113.9"
    # Every hop trusted: the left-most is the client.
    assert resolve(request("10.0.0.1", ("X-Forwarded-For", "192.168.3.3, 192.168.1.1")), PROXIES).client == "192.168.3.3"
    # "unknown" (or garbage) ends the walk at the last hop we could name.
    assert resolve(request("10.0.0.1", ("X-Forwarded-For", "203.0.113.9, unknown, 192.168.1.1")), PROXIES).client == "192.168.1.1"
    assert resolve(request("10.0.0.1", ("X-Forwarded-For", "unknown")), PROXIES) == Origin("http", "reg:5000", "10.0.0.1", 40000)


def test_bad_scheme_and_host_values_are_ignored() -> None:
    r = request("10.0.0.1", ("X-Forwarded-Proto", "gopher"), ("X-Forwarded-Host", "a b/c"))
    assert (resolve(r, PROXIES).scheme, resolve(r, PROXIES).host) == ("http", "reg:5000")
    r = request("10.0.0.1", ("X-Forwarded-Proto", "HTTPS, http"), ("X-Forwarded-Host", "registry.example.com:8443, inner:5000"))
    assert (resolve(r, PROXIES).scheme, resolve(r, PROXIES).host) == ("https", "registry.example.com:8443")


def test_only_the_configured_header_family_is_read() -> None:
    # A proxy adds the client to the header it knows and passes the other one through from the
    # client: believing both would let the client choose its address.
    r = request(
        "10.0.0.1",
        ("Forwarded", 'for="[2001:db8::7]:4711";proto=https;host=registry.example.com, for=192.168.1.1'),
        ("X-Forwarded-For", "1.1.1.1"),
        ("X-Forwarded-Proto", "http"),
    )
    rfc7239 = TrustedProxies(["10.0.0.1", "192.168.0.0/16"], header="forwarded")
    assert resolve(r, rfc7239) == Origin("https", "registry.example.com", "2001:db8::7", None)
    assert resolve(r, PROXIES) == Origin("http", "reg:5000", "1.1.1.1", None)
    spoofed = request("10.0.0.1", ("Forwarded", "for=198.51.100.77"), ("X-Forwarded-For", "203.0.113.9"))
    assert resolve(spoofed, PROXIES).client == "203.0.113.9"


def test_parse_forwarded() -> None:
    assert parse_forwarded(['For="[::1]:80";Proto=https, for=unknown', 'for=1.2.3.4;host="a,b"']) == [
        {"for": "[::1]:80", "proto": "https"},
        {"for": "unknown"},
        {"for": "1.2.3.4", "host": "a,b"},
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("1.2.3.4:80", "1.2.3.4"),
        ("[::1]:80", "::1"),
        ("::1", "::1"),
        ('"[2001:db8::1]"', "2001:db8::1"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("unknown", None),
        ("_hidden", None),
        ("", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    found = parse_address(text)
    assert (str(found) if found else None) == expected
