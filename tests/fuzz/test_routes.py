"""Fuzzing every HTTP route of every service, as real processes on loopback (issue 13).

A gateway and a blobstore (filesystem storage), the token service and the search service run as
in production (tests.support.processes.Berth). Each service's routes are read from its FastAPI app
(built here from the same settings), so a new route is fuzzed without touching this file. Hypothesis
draws requests: methods (odd ones too), path segments (names valid, long, unicode, ``..``,
``%2e%2e``, encoded slashes; digests valid, invalid, sha512, unknown algorithms; upload ids real,
made up, with and without ``_state``), query parameters, headers (Range, Content-Range,
Content-Length that does not match the body, Content-Type, Accept, Authorization garbage), and
bodies (bytes, JSON of any shape, very deep nesting, huge numbers, manifests and event envelopes
with wrong types). Every answer must be below 500 and, where the service speaks it, an error must
be the JSON envelope ``{"errors": [{"code", "message", ...}]}``; afterwards no service may have
logged a traceback.

Bounded twice: an example count and a wall-clock budget per service (BERTH_FUZZ_SECONDS, default
60 s for the whole module, split by weight; BERTH_FUZZ_EXAMPLES scales the counts). A failure
prints the Hypothesis seed (BERTH_FUZZ_SEED replays it; the default is fixed, BERTH_FUZZ_SEED=random
explores) and the shrunk request. What it found so
far: tests/fuzz/FINDINGS.md.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import http.client
import json
import os
import random
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from starlette.routing import Route

from tests.images import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, sha256
from tests.support.processes import Berth
from tests.support.registry import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, image_manifest

TOTAL_SECONDS = float(os.environ.get("BERTH_FUZZ_SECONDS", "60"))
EXAMPLE_SCALE = float(os.environ.get("BERTH_FUZZ_EXAMPLES", "1"))
# A fixed seed by default, so a CI run is repeatable (a new finding must not turn an unrelated
# change red); BERTH_FUZZ_SEED=random explores fresh inputs, a number replays a run.
_SEED_SETTING = os.environ.get("BERTH_FUZZ_SEED", "1208954150")
SEED = random.randrange(1 << 32) if _SEED_SETTING == "random" else int(_SEED_SETTING)
SEARCH_TOKEN = "fuzz-search-token-0123456789abcdef"
REPO = "fuzz/app"
TAG = "v1"

# ------------------------------------------------------------------------------------------------
# The services


@dataclass
class Seeded:
    """What exists in the registry, so requests can name real things as well as made-up ones."""

    blobs: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    manifest_body: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Berth]:
    berth = Berth(
        tmp_path_factory.mktemp("fuzz"),
        env={
            "REGISTRY_STORAGE_DRIVER": "filesystem",
            "REGISTRY_STORAGE_DELETE_ENABLED": "true",
            "REGISTRY_SEARCH_BACKEND": "sqlalchemy",
            "REGISTRY_SEARCH_SECURITY": "token",
            "REGISTRY_BLOBSTORE_TOKEN": SEARCH_TOKEN,
        },
    )
    berth.start("blobstore", "auth", "search", "gateway")
    yield berth
    before = {service: len(berth.log(service)) for service in berth.procs}
    berth.stop()
    # Stopping must not log a traceback either (what the tests saw, they reported).
    for service, size in before.items():
        assert "Traceback" not in berth.log(service)[size:], f"{service} logged a traceback while stopping"


def seed_registry(berth: Berth) -> Seeded:
    """Pushes a small image (again: the fuzzing may have deleted it) and returns what exists."""
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer = b"fuzz layer " * 300
    out = Seeded(blobs=[sha256(config), sha256(layer)])
    for blob in (config, layer):
        response = send_raw(berth.http_port, "POST", f"/v2/{REPO}/blobs/uploads/?digest={sha256(blob)}", {}, blob)
        assert response is not None and response[0] == 201, response
    manifest = image_manifest(config, [layer])
    body = json.dumps(manifest).encode()
    response = send_raw(berth.http_port, "PUT", f"/v2/{REPO}/manifests/{TAG}", {"Content-Type": OCI_MANIFEST}, body)
    assert response is not None and response[0] == 201, response
    out.manifests.append(sha256(body))
    out.manifest_body = manifest
    return out


def routes_of(app: Any) -> list[tuple[str, list[str]]]:
    """(path template, methods) of every route of a FastAPI app."""
    found = []
    for route in app.routes:
        if isinstance(route, Route) and route.methods:
            found.append((route.path, sorted(route.methods)))
    assert found
    return found


def app_routes(berth: Berth, service: str) -> list[tuple[str, list[str]]]:
    from services.common import config

    settings = config.load(environ=berth.environment())
    if service == "gateway":
        from services.gateway.app import create_app as gateway_app

        return routes_of(gateway_app(settings))
    if service == "auth":
        from services.auth.app import create_app as auth_app

        return routes_of(auth_app(settings))
    from services.search.app import create_app as search_app

    return routes_of(search_app(settings))


# ------------------------------------------------------------------------------------------------
# Sending requests as written (httpx would fold ``..`` and refuse odd headers)


def send_raw(
    port: int, method: str, target: str, headers: dict[str, str], body: bytes, declared_length: int | None = None, timeout: float = 15
) -> tuple[int, dict[str, str], bytes] | None:
    """One request on a new connection; the target and header values go out as UTF-8, unchecked.
    ``declared_length``: a Content-Length that differs from the body's; then the write side is
    closed after the body. No answer at all is None: allowed only when the body was cut short, by
    us or by the server closing the connection before taking it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn._encode_request = lambda request: request.encode("utf-8", "surrogateescape")  # type: ignore[attr-defined]
    conn._validate_path = lambda url: None  # type: ignore[attr-defined]  # spaces and controls too: the parser's to refuse
    try:
        conn.putrequest(method, target, skip_host="host" in {k.lower() for k in headers}, skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key, value.encode("utf-8", "surrogateescape"))
        if declared_length is not None:
            conn.putheader("Content-Length", str(declared_length))
        elif body or method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        cut_short = declared_length is not None and declared_length > len(body)
        try:
            if body:
                conn.send(body)
            if cut_short:
                conn.sock.shutdown(socket.SHUT_WR)
        except OSError:  # broken pipe, reset, not connected
            cut_short = True  # the server answered (or gave up) before taking the whole body
        try:
            response = conn.getresponse()
            data = b"" if method == "HEAD" else response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, http.client.IncompleteRead):
            if cut_short:
                return None
            raise
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------
# Strategies: the pieces of a request

ODD_METHODS = [
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "OPTIONS",
    "TRACE",
    "PROPFIND",
    "MKCOL",
    "LOCK",
    "get",
    "Post",
    "FOO",
    "M-SEARCH",
    "X" * 40,
    "CONNECT",
    "QUERY",
]

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30).map(
    lambda s: s.replace("\r", "").replace("\n", "")
)  # http.client refuses to send bare CR/LF in headers
ascii_word = st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=20)
hexes = st.text("0123456789abcdef", min_size=0, max_size=140)


def encoded(s: str) -> str:
    return urllib.parse.quote(s, safe="")


segment = st.one_of(
    ascii_word,
    st.sampled_from(
        [
            "..",
            ".",
            "%2e%2e",
            "%2E%2e",
            "%2f",
            "a%2fb",
            "%00",
            "%ff",
            "%",
            "%zz",
            "~",
            "-",
            "_",
            "__",
            "..%2f..",
            "blobs",
            "manifests",
            "uploads",
            "tags",
            "_catalog",
            "référence",
            "名前",
            "\U0001f433",
            "a;b",
            "a?b",
            "a#b",
            "a b",
            "A",
            "",
        ]
    ),
    text.map(encoded),
    text.filter(lambda s: s and not any(c in s for c in "/?#%\x7f") and min(s) > " "),  # raw, as UTF-8
    st.integers(min_value=200, max_value=400).map(lambda n: "a" * n),
)

repo_name = st.one_of(
    st.just(REPO),
    st.sampled_from(
        [
            "library/ubuntu",
            "a",
            "a/b/c/d/e/f/g",
            "fuzz",
            "Fuzz/App",
            "a__b",
            "a--b",
            "a..b",
            "-a",
            "a-",
            "_uploads/x",
            "a/_manifests",
            "../../etc",
            "a/%2e%2e/b",
            "a%2fb",
            "x" * 255,
            "x" * 256,
            "/".join(["seg"] * 60),
            "a//b",
        ]
    ),
    st.lists(segment, min_size=1, max_size=4).map("/".join),
)

ALGORITHMS = ["sha256", "sha512", "sha384", "md5", "SHA256", "sha256+b64u", "multihash+base58", "", "sha-256", "blake3"]


def digests(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(known) if known else st.nothing(),
        st.sampled_from(["@body", "@body512"]),  # the body's own digest (see test_fuzz_gateway's prepare)
        st.builds(lambda a, h: f"{a}:{h}", st.sampled_from(ALGORITHMS), hexes),
        st.builds(lambda h: f"sha256:{h}", st.text("0123456789abcdef", min_size=64, max_size=64)),
        st.builds(lambda h: f"sha512:{h}", st.text("0123456789abcdef", min_size=128, max_size=128)),
        st.builds(lambda h: f"sha256:{h}", st.text("0123456789ABCDEFG", min_size=64, max_size=64)),
        st.sampled_from(
            [
                "sha256",
                "sha256:",
                ":",
                "sha256:" + "0" * 64 + "%00",
                "sha256%3a" + "a" * 64,
                "sha256:" + "a" * 64 + ":" + "b" * 64,
                "sha256:../../" + "a" * 58,
            ]
        ),
        segment,
    )


def references(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(TAG),
        st.sampled_from(["latest", "v1.0", "a" * 128, "a" * 129, "-tag", ".tag", "_tag"]),
        digests(known),
        segment,
    )


def upload_ids() -> st.SearchStrategy[str]:
    """Placeholders resolved when sending: a real session's Location (fresh each time), its id
    without or with a tampered _state, or a made-up id."""
    return st.one_of(
        st.sampled_from(["@fresh", "@fresh-nostate", "@fresh-badstate", "@fresh-otherstate"]),
        st.uuids().map(str),
        st.uuids().map(lambda u: f"{u}?_state=" + base64.urlsafe_b64encode(os.urandom(20)).decode()),
        segment,
    )


def query_pairs(names: list[str]) -> st.SearchStrategy[list[tuple[str, str]]]:
    value = st.one_of(
        st.integers(min_value=-(10**30), max_value=10**30).map(str),
        st.sampled_from(
            [
                "",
                "0",
                "-1",
                "1",
                "100",
                "10001",
                "abc",
                "1e3",
                "0x10",
                "NaN",
                "true",
                "∞",
                REPO,
                TAG,
                "sha256",
                "sha512",
                "md5",
                "@body",
                "repository:fuzz/app:pull,push",
                "registry:catalog:*",
                "a" * 300,
            ]
        ),
        text,
        ascii_word,
    )
    name = st.one_of(st.sampled_from(names), ascii_word)
    return st.lists(st.tuples(name, value), max_size=6)


def ranges() -> st.SearchStrategy[str]:
    n = st.integers(min_value=-5, max_value=2**70)
    return st.one_of(
        st.builds(lambda a, b: f"bytes={a}-{b}", n, n),
        st.builds(lambda a: f"bytes={a}-", n),
        st.builds(lambda b: f"bytes=-{b}", n),
        st.builds(lambda a, b, c, d: f"bytes={a}-{b},{c}-{d}", n, n, n, n),
        st.sampled_from(
            [
                "bytes=",
                "bytes",
                "items=0-1",
                "bytes=a-b",
                "bytes=--1",
                "bytes=1-2-3",
                "bytes=0-0,",
                "bytes = 0-1",
                "BYTES=0-1",
                "bytes=0-" + "9" * 40,
                "bytes=-0",
                "bytes=0x1-0x2",
                "bytes=١-٢",
            ]
        ),
        text,
    )


def content_ranges() -> st.SearchStrategy[str]:
    n = st.integers(min_value=-5, max_value=2**70)
    return st.one_of(
        st.builds(lambda a, b: f"{a}-{b}", n, n),
        st.builds(lambda a, b, c: f"bytes {a}-{b}/{c}", n, n, st.one_of(n.map(str), st.just("*"))),
        st.sampled_from(["", "-", "0-", "-1", "a-b", "0-0-0", "bytes */*", "0 - 1", "٠-١"]),
        text,
    )


MEDIA_TYPES = [
    OCI_MANIFEST,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/json",
    "text/plain",
    "application/octet-stream",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json; charset=latin-1",
    "*/*",
    "",
    "garbage",
    OCI_CONFIG,
    OCI_LAYER,
]


def authorizations() -> st.SearchStrategy[str]:
    b64 = st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode())
    jwt_part = st.one_of(
        b64,
        st.dictionaries(ascii_word, st.one_of(ascii_word, st.integers()), max_size=4).map(
            lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
        ),
    )
    return st.one_of(
        st.builds(lambda b: f"Basic {b}", b64),
        st.builds(lambda u, p: "Basic " + base64.b64encode(f"{u}:{p}".encode()).decode(), text, text),
        st.builds(lambda t: f"Bearer {t}", st.one_of(text, ascii_word)),
        st.builds(lambda a, b, c: f"Bearer {a}.{b}.{c}", jwt_part, jwt_part, b64),
        st.sampled_from(
            [
                "Bearer",
                "Basic",
                "Basic !!!",
                "Basic Og==",
                "Bearer " + SEARCH_TOKEN,
                "Digest x",
                "",
                "Bearer " + "a" * 9000,
                "bearer " + SEARCH_TOKEN,
                "Basic " + base64.b64encode(b"\xff:\xfe").decode(),
            ]
        ),
        text,
    )


def headers(extra: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[dict[str, str]]:
    common: dict[str, st.SearchStrategy[str]] = {
        "Range": ranges(),
        "Content-Range": content_ranges(),
        "Content-Type": st.one_of(st.sampled_from(MEDIA_TYPES), text),
        "Accept": st.one_of(
            st.sampled_from(MEDIA_TYPES),
            st.lists(st.sampled_from(MEDIA_TYPES), max_size=6).map(", ".join),
            st.builds(lambda m, q: f"{m};q={q}", st.sampled_from(MEDIA_TYPES), st.sampled_from(["0", "1", "abc", "-1", "1e999", ""])),
        ),
        "Authorization": authorizations(),
        "X-Forwarded-For": st.one_of(st.sampled_from(["127.0.0.1", "::1", "garbage", "1.2.3.4, 5.6.7.8", ""]), text),
        "X-Forwarded-Proto": st.sampled_from(["http", "https", "gopher", ""]),
        "X-Forwarded-Host": st.one_of(st.sampled_from(["example.com", "a:99999", "[::1]:5000", "@@", ""]), text),
        "Forwarded": st.one_of(st.sampled_from(["for=1.2.3.4;proto=https;host=x", 'for="[::1]"', "for=", ";;;"]), text),
        "Host": st.sampled_from(["example.com", "127.0.0.1:1", "[::1]", "a b", "x:y:z", "é.example"]),
        "X-Request-Id": st.one_of(text, st.just("a" * 500)),
        "If-None-Match": st.one_of(st.just('"sha256:' + "a" * 64 + '"'), text),
        "Transfer-Encoding": st.just("chunked").filter(lambda _: False),  # never: http.client frames it
        "OCI-Chunk-Min-Length": st.integers(min_value=-1, max_value=2**64).map(str),
        "Expect": st.sampled_from(["100-continue", "garbage"]),
        **extra,
    }
    names = sorted(k for k in common if k != "Transfer-Encoding")
    return st.lists(st.sampled_from(names), max_size=6, unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries({k: common[k] for k in chosen})
    )


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
json_values = st.recursive(
    json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)), max_leaves=20
)


def deep(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    if kind == "dict":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"schemaVersion":2,"mediaType":"' + OCI_MANIFEST.encode() + b'","config":' + b"[" * depth + b"]" * depth + b"}"


def mutated(template: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A real-looking document with some fields (top-level or one down) swapped for any JSON."""

    def mutate(doc: dict[str, Any], changes: list[tuple[list[str], Any]]) -> dict[str, Any]:
        doc = json.loads(json.dumps(doc))
        for path, value in changes:
            target: Any = doc
            for key in path[:-1]:
                if isinstance(target, dict) and isinstance(target.get(key), (dict, list)):
                    target = (
                        target[key]
                        if isinstance(target[key], dict)
                        else (target[key][0] if target[key] and isinstance(target[key][0], dict) else {})
                    )
            if isinstance(target, dict):
                target[path[-1]] = value
        return doc

    keys = sorted(
        {
            *template,
            "schemaVersion",
            "mediaType",
            "config",
            "layers",
            "manifests",
            "subject",
            "annotations",
            "artifactType",
            "digest",
            "size",
            "urls",
            "platform",
            "events",
            "target",
            "action",
            "repository",
            "tag",
        }
    )
    paths = st.one_of(
        st.sampled_from(keys).map(lambda k: [k]),
        st.tuples(
            st.sampled_from(["config", "layers", "manifests", "subject", "events"]),
            st.sampled_from(["digest", "size", "mediaType", "urls", "annotations", "platform", "target", "action", "repository"]),
        ).map(list),
    )
    return st.lists(st.tuples(paths, json_values), min_size=1, max_size=4).map(lambda changes: mutate(template, changes))


def bodies(templates: list[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.just(b""),
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.builds(deep, st.sampled_from([50, 1000, 3000, 100_000]), st.sampled_from(["list", "dict", "manifest"])),
        st.sampled_from(
            [
                b"1e999999",
                b"-1e999999",
                b"9" * 5000,
                b'{"schemaVersion": 1e400}',
                b"NaN",
                b'{"a": Infinity}',
                b'{"schemaVersion": 2, "mediaType": "'
                + OCI_MANIFEST.encode()
                + b'", "config": {"digest": "sha256:'
                + b"a" * 64
                + b'", "size": '
                + b"9" * 400
                + b"}}",
                b"\xef\xbb\xbf{}",
                b'"\\ud800"',
                b'{"a":"\\u0000"}',
                b"{" * 10 + b"\x00",
                b"[1,2,",
            ]
        ),
        st.sampled_from(templates).flatmap(mutated).map(lambda d: json.dumps(d).encode()) if templates else st.nothing(),
        st.sampled_from(templates).map(lambda d: json.dumps(d).encode()) if templates else st.nothing(),
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        "grant_type",
                        "service",
                        "client_id",
                        "username",
                        "password",
                        "scope",
                        "access_type",
                        "refresh_token",
                        "token",
                        "offline_token",
                    ]
                ),
                text,
            ),
            max_size=8,
        ).map(lambda pairs: urllib.parse.urlencode(pairs).encode()),
    )


@dataclass
class Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    length_delta: int  # declared Content-Length minus the body's length (0: honest)

    def __repr__(self) -> str:  # bodies of 100,000 brackets make unreadable failure reports
        body = self.body if len(self.body) < 600 else self.body[:300] + b"...(%d bytes)..." % len(self.body) + self.body[-100:]
        return f"Request({self.method!r}, {self.target()!r}, headers={self.headers!r}, body={body!r}, length_delta={self.length_delta})"

    def target(self) -> str:
        return self.path + (("&" if "?" in self.path else "?") + urllib.parse.urlencode(self.query) if self.query else "")


def requests(
    routes: list[tuple[str, list[str]]],
    fill: dict[str, st.SearchStrategy[str]],
    query_names: list[str],
    extra_headers: dict[str, st.SearchStrategy[str]],
    templates: list[dict[str, Any]],
    likely_queries: list[list[tuple[str, str]]] = (),
) -> st.SearchStrategy[Request]:
    """A request at one of ``routes`` (its template filled from ``fill``), mostly with one of its
    methods, sometimes at a mangled or unknown path."""
    # Built once: strategies made anew at every draw cost Hypothesis far more than the requests.
    body_s, header_s = bodies(templates), headers(extra_headers)
    # Queries that get requests further in (a monolithic upload naming its body's digest) are
    # too rare drawn piece by piece.
    query_s = st.tuples(st.sampled_from([[], *likely_queries]), query_pairs(query_names)).map(lambda q: q[0] + q[1])
    route_s, mangle_s = st.sampled_from(routes), st.sampled_from(["//", "/./", "/%2f", "/../"])
    path_s, odd_s = st.lists(segment, max_size=6).map(lambda s: "/" + "/".join(s)), st.sampled_from(ODD_METHODS)
    delta_s = st.sampled_from([0] * 12 + [-1, 1, 5, -3])

    @st.composite
    def build(draw: st.DrawFn) -> Request:
        template, methods = draw(route_s)
        path = template
        for param in [p.split("}")[0] for p in template.split("{")[1:]]:
            value = draw(fill.get(param.split(":")[0], segment))
            path = path.replace("{" + param + "}", value, 1)
        shape = draw(st.integers(0, 9))
        if shape == 0:
            path = path.rstrip("/") + "/" + draw(segment)
        elif shape == 1:
            path = draw(path_s)
        elif shape == 2:
            path = path.replace("/", draw(mangle_s), 1)
        method = draw(st.sampled_from(methods)) if draw(st.integers(0, 4)) else draw(odd_s)
        delta = draw(delta_s)
        body = draw(body_s)
        if delta < 0 and len(body) < -delta:
            delta = 0
        return Request(method, path, draw(query_s), draw(header_s), body, delta)

    return build()


# ------------------------------------------------------------------------------------------------
# Checks and the loop


@dataclass
class Record:
    sent: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    slowest: list[tuple[float, str]] = field(default_factory=list)


RECORDS: dict[str, Record] = {}
UVICORN_400 = b"Invalid HTTP request received."


def check_answer(service: str, request: Request, answer: tuple[int, dict[str, str], bytes] | None, envelope: bool) -> None:
    where = f"{service}: {request!r} (seed {SEED})"
    if answer is None:  # a body cut short (see send_raw), and the server closed the connection
        RECORDS[service].statuses[0] += 1
        return
    status, response_headers, body = answer
    RECORDS[service].statuses[status] += 1
    assert status < 500, f"{status} {body[:500]!r} for {where}"
    if status == 400 and body == UVICORN_400 and service != "gateway":
        return  # uvicorn's own answer to what its parser refuses (the gateway has an enveloped one)
    if status >= 400 and envelope and body:
        assert response_headers.get("content-type", "").split(";")[0] == "application/json", f"{status} {body[:300]!r} for {where}"
        errors = json.loads(body)["errors"]
        assert isinstance(errors, list) and errors, f"{status} {body[:300]!r} for {where}"
        for error in errors:
            assert isinstance(error.get("code"), str) and isinstance(error.get("message"), str), f"{status} {body[:300]!r} for {where}"
            assert registered(error["code"]), f"unregistered code: {status} {body[:300]!r} for {where}"


def registered(code: str) -> bool:
    """Every code a service answers with is one of services.common.errors (one registry for all)."""
    from services.common import errors as registry

    return registry.lookup(code).name == code


class BudgetSpent(BaseException):
    """Raised (a BaseException, so Hypothesis stops at once rather than generating the remaining
    examples) when the wall-clock budget is over and nothing has failed."""


def run(
    service: str,
    port: int,
    strategy: st.SearchStrategy[Request],
    *,
    seconds: float,
    examples: int,
    prepare: Callable[[Request], Request] = lambda r: r,
    envelope: bool = True,
) -> None:
    """Sends ``strategy``'s requests until ``examples`` ran or ``seconds`` passed."""
    RECORDS[service] = record = Record()
    stop_at = time.monotonic() + seconds
    failed = [False]

    @seed(SEED)
    @settings(
        max_examples=max(1, int(examples * EXAMPLE_SCALE)),
        deadline=None,
        database=None,
        print_blob=True,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
    @given(request=strategy)
    def fuzz(request: Request) -> None:
        if time.monotonic() > stop_at and not failed[0]:
            raise BudgetSpent  # (after a failure, Hypothesis's shrinking may take its time)
        request = prepare(request)
        declared = len(request.body) + request.length_delta if request.length_delta else None
        # A body that would be unsent or left over (a shorter Content-Length) cannot end up in a
        # kept-alive connection: each request has its own.
        started = time.monotonic()
        answer = send_raw(port, request.method, request.target(), request.headers, request.body, declared)
        record.sent += 1
        record.slowest = sorted([*record.slowest, (time.monotonic() - started, repr(request)[:300])], reverse=True)[:3]
        try:
            check_answer(service, request, answer, envelope)
        except Exception:
            failed[0] = True
            raise

    started = time.monotonic()
    try:
        fuzz()
    except BudgetSpent:
        pass
    print(
        f"fuzz {service}: {record.sent} requests in {time.monotonic() - started:.1f}s (budget {seconds:.0f}s), "
        f"statuses {dict(sorted(record.statuses.items()))} (0: connection closed on a cut-short body); "
        f"slowest: {record.slowest}"
    )
    assert record.sent > 0


def assert_no_traceback(berth: Berth, *services: str) -> None:
    for service in services:
        log = berth.log(service)
        assert "Traceback" not in log, f"{service} logged a traceback (seed {SEED}):\n{log[-6000:]}"


def share(weight: float) -> float:
    return TOTAL_SECONDS * weight


# ------------------------------------------------------------------------------------------------
# The tests: one per service, its routes from its app


def test_fuzz_gateway(services: Berth) -> None:
    seeded = seed_registry(services)
    fill = {
        "name": repo_name,
        "digest": digests(seeded.blobs + seeded.manifests),
        "reference": references(seeded.blobs + seeded.manifests),
        "upload_id": upload_ids(),
    }
    names = ["n", "last", "digest", "digest-algorithm", "tag", "mount", "from", "_state", "artifactType", "q", "page"]
    counter = [0]

    def prepare(request: Request) -> Request:
        counter[0] += 1
        if counter[0] % 250 == 0:  # deletes and overwrites wear the seeded image down
            seed_registry(services)
        if "@body" in request.target():  # so some uploads and pushes by digest get all the way through
            own = {"@body512": "sha512:" + hashlib.sha512(request.body).hexdigest(), "@body": sha256(request.body)}
            for placeholder, value in own.items():
                request.path = request.path.replace(placeholder, value)
                request.query = [(k, v.replace(placeholder, value)) for k, v in request.query]
        if "@fresh" in request.path:
            answer = send_raw(services.http_port, "POST", f"/v2/{REPO}/blobs/uploads/", {}, b"")
            assert answer is not None and answer[0] == 202, answer
            location = urllib.parse.urlsplit(answer[1]["location"])
            upload_id, state = location.path.rsplit("/", 1)[1], location.query
            replacement = {
                "@fresh-nostate": upload_id,
                "@fresh-badstate": f"{upload_id}?{state[:-4]}AAAA",
                "@fresh-otherstate": f"{upload_id}?_state=" + base64.urlsafe_b64encode(os.urandom(40)).decode().rstrip("="),
                "@fresh": f"{upload_id}?{state}",
            }
            for placeholder in sorted(replacement, key=len, reverse=True):
                request.path = request.path.replace(placeholder, replacement[placeholder])
        return request

    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": seeded.manifests[0],
                "size": len(json.dumps(seeded.manifest_body)),
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    referrer = {**seeded.manifest_body, "artifactType": "application/x-fuzz", "subject": index["manifests"][0]}
    likely = [
        [("digest", "@body")],
        [("digest", "@body512")],
        [("digest-algorithm", "sha512")],
        [("mount", seeded.blobs[0]), ("from", REPO)],
        [("n", "1")],
        [("tag", "t1"), ("tag", "t2")],
    ]
    strategy = requests(app_routes(services, "gateway"), fill, names, {}, [seeded.manifest_body, index, referrer], likely)
    run("gateway", services.http_port, strategy, seconds=share(0.55), examples=6000, prepare=prepare)
    assert_no_traceback(services, "gateway", "blobstore")


def test_fuzz_token_service(services: Berth) -> None:
    names = ["service", "scope", "account", "offline_token", "client_id", "grant_type"]
    scope = st.one_of(
        st.sampled_from(
            [
                "repository:fuzz/app:pull",
                "repository:a:pull,push,*",
                "registry:catalog:*",
                "repository:foo:bar:pull",
                "repository(plugin):x:pull",
                "a:b:c",
                ":::",
            ]
        ),
        text,
    )
    templates = [{"scopes": ["repository:fuzz/app:pull"]}]
    strategy = requests(app_routes(services, "auth"), {}, names, {"X-Scope": scope}, templates)
    run("auth", services.auth_port, strategy, seconds=share(0.2), examples=2000)
    assert_no_traceback(services, "auth")


def test_fuzz_search_service(services: Berth) -> None:
    event = {
        "id": "x",
        "timestamp": "2024-01-01T00:00:00Z",
        "action": "push",
        "target": {
            "mediaType": OCI_MANIFEST,
            "digest": "sha256:" + "a" * 64,
            "size": 10,
            "repository": "fuzz/app",
            "url": "http://127.0.0.1:1/v2/fuzz/app/manifests/sha256:" + "a" * 64,
            "tag": "v1",
        },
        "request": {"id": "r", "addr": "127.0.0.1", "host": "h", "method": "PUT", "useragent": "u"},
    }
    templates = [{"events": [event]}, {"events": [{**event, "action": "delete"}]}, event]
    strategy = requests(app_routes(services, "search"), {}, ["q", "n", "page"], {}, templates)

    def prepare(request: Request) -> Request:
        # Most event posts carry the shared token, so they get past the guard to the envelope.
        if request.path == "/events" and "Authorization" not in request.headers and len(request.body) % 4:
            request.headers["Authorization"] = f"Bearer {SEARCH_TOKEN}"
        return request

    run("search", services.search_port, strategy, seconds=share(0.2), examples=2000, prepare=prepare)
    assert_no_traceback(services, "search")


def test_fuzz_blobstore_probes(services: Berth) -> None:
    """The blobstore's HTTP listener (/_ping, /_ready, /metrics) is no FastAPI app: its paths are fixed."""
    routes = [("/_ping", ["GET", "HEAD"]), ("/_ready", ["GET", "HEAD"]), ("/metrics", ["GET", "HEAD"])]
    strategy = requests(routes, {}, ["debug", "name[]"], {}, [])
    run("blobstore", services.blobstore_http_port, strategy, seconds=share(0.05), examples=400, envelope=False)
    assert_no_traceback(services, "blobstore")
