"""The mirror's upstream client (services/gateway/proxy/upstream.py): challenges, Bearer tokens and
their cache, Basic, the single retry after a 401, and how failures are classified. Auth is driven
through httpx's MockTransport (a scripted registry and token realm); timeouts against real
sockets on loopback that accept and never answer."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from services.common.config.schema import UpstreamSettings
from services.gateway.proxy import upstream as upstream_module
from services.gateway.proxy.upstream import (
    NotFound,
    Upstream,
    UpstreamError,
    parse_challenge,
)

REGISTRY = "http://upstream.test"
REALM = "http://auth.test/token"
DIGEST = "sha256:" + "a" * 64
SCOPE = "repository:team/app:pull"


def settings(**extra: object) -> UpstreamSettings:
    return UpstreamSettings(prefix="hub/", remoteurl=REGISTRY, **extra)  # type: ignore[arg-type]


def test_parse_challenge_bearer_with_quoted_and_bare_parameters() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/alpine:pull,push", error=insufficient_scope'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/alpine:pull,push",
        "error": "insufficient_scope",
    }
    assert parse_challenge('Basic realm="upstream"') == ("basic", {"realm": "upstream"})
    assert parse_challenge('BEARER Realm="a\\"b"')[1] == {"realm": 'a\\"b'}
    assert parse_challenge("") == ("", {})


@dataclass
class Scripted:
    """A registry and its token realm. ``mode``: "bearer" (tokens from the realm), "basic", or
    "refuse" (401 to everything, a token or not)."""

    mode: str = "bearer"
    expires_in: int | None = 300
    realm_status: int = 200
    seen: list[httpx.Request] = field(default_factory=list)
    tokens_issued: int = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        auth = request.headers.get("authorization", "")
        if request.url.host == "auth.test":
            if self.realm_status != 200:
                return httpx.Response(self.realm_status)
            assert auth == "Basic " + base64.b64encode(b"me:secret").decode()
            self.tokens_issued += 1
            body: dict[str, object] = {"token": f"tok-{self.tokens_issued}"}
            if self.expires_in is not None:
                body["expires_in"] = self.expires_in
            return httpx.Response(200, json=body)
        if self.mode == "basic":
            if auth != "Basic " + base64.b64encode(b"me:secret").decode():
                return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="upstream"'})
        elif self.mode == "refuse" or not auth.startswith(f"Bearer tok-{self.tokens_issued}") or not self.tokens_issued:
            return httpx.Response(401, headers={"WWW-Authenticate": f'Bearer realm="{REALM}",service="upstream",scope="{SCOPE}"'})
        if "/manifests/missing" in request.url.path:
            return httpx.Response(404)
        return httpx.Response(200, headers={"Docker-Content-Digest": DIGEST})

    def registry_requests(self) -> list[httpx.Request]:
        return [r for r in self.seen if r.url.host == "upstream.test"]

    def realm_requests(self) -> list[httpx.Request]:
        return [r for r in self.seen if r.url.host == "auth.test"]


def client(script: Scripted, **extra: object) -> Upstream:
    return Upstream(settings(username="me", password="secret", **extra), timeout=5, transport=httpx.MockTransport(script.handler))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(upstream_module.time, "time", fake)
    return fake


def test_bearer_challenge_leads_to_one_token_request_with_the_credentials_then_the_retry(clock: Clock) -> None:
    script = Scripted()

    async def scenario() -> None:
        up = client(script)
        try:
            assert await up.head_manifest("hub/team/app", "v1") == DIGEST
            token_request = script.realm_requests()[0]
            assert token_request.url.params["service"] == "upstream"
            assert token_request.url.params["scope"] == SCOPE
            # The retry carried the token; the first request went without.
            first, retry = script.registry_requests()
            assert "authorization" not in first.headers and retry.headers["authorization"] == "Bearer tok-1"
            assert first.url.path == retry.url.path == "/v2/team/app/manifests/v1"  # the prefix is not the upstream's
        finally:
            await up.aclose()

    asyncio.run(scenario())


def test_tokens_are_cached_until_shortly_before_they_expire(clock: Clock) -> None:
    script = Scripted(expires_in=60)

    async def scenario() -> None:
        up = client(script)
        try:
            await up.head_manifest("hub/team/app", "v1")
            for _ in range(3):
                clock.now += 10
                assert await up.head_manifest("hub/team/app", "v2") == DIGEST
            assert script.tokens_issued == 1
            assert len(script.registry_requests()) == 2 + 3  # one challenge, then each request once
            clock.now += 60 - 30 - upstream_module.TOKEN_MARGIN + 1  # past expires_in minus the margin
            await up.head_manifest("hub/team/app", "v3")
            assert script.tokens_issued == 2
            assert script.registry_requests()[-1].headers["authorization"] == "Bearer tok-2"
        finally:
            await up.aclose()

    asyncio.run(scenario())


def test_a_token_without_expires_in_lives_60_seconds(clock: Clock) -> None:
    script = Scripted(expires_in=None)

    async def scenario() -> None:
        up = client(script)
        try:
            await up.head_manifest("hub/team/app", "v1")
            clock.now += 60 - upstream_module.TOKEN_MARGIN - 1
            await up.head_manifest("hub/team/app", "v1")
            assert script.tokens_issued == 1
            clock.now += 2
            await up.head_manifest("hub/team/app", "v1")
            assert script.tokens_issued == 2
        finally:
            await up.aclose()

    asyncio.run(scenario())


def test_basic_challenge_is_answered_and_then_credentials_go_up_front() -> None:
    script = Scripted(mode="basic")

    async def scenario() -> None:
        up = client(script)
        try:
            assert await up.head_manifest("hub/team/app", "v1") == DIGEST
            await up.head_blob("hub/team/app", DIGEST)
            statuses = [r.headers.get("authorization", "") for r in script.registry_requests()]
            assert statuses[0] == "" and all(s.startswith("Basic ") for s in statuses[1:])
            assert len(statuses) == 3  # one challenge only
            assert not script.realm_requests()
        finally:
            await up.aclose()

    asyncio.run(scenario())


def test_a_401_is_retried_once_then_reported_as_denied(clock: Clock) -> None:
    script = Scripted(mode="refuse")

    async def scenario() -> None:
        up = client(script)
        try:
            with pytest.raises(UpstreamError) as failed:
                await up.head_manifest("hub/team/app", "v1")
            assert failed.value.reason == "denied"
            assert len(script.registry_requests()) == 2 and len(script.realm_requests()) == 1
        finally:
            await up.aclose()

    asyncio.run(scenario())


def test_without_credentials_a_basic_challenge_is_denied_at_once() -> None:
    script = Scripted(mode="basic")

    async def scenario() -> None:
        up = Upstream(settings(), timeout=5, transport=httpx.MockTransport(script.handler))
        try:
            with pytest.raises(UpstreamError) as failed:
                await up.head_manifest("hub/team/app", "v1")
            assert failed.value.reason == "denied" and len(script.registry_requests()) == 1
        finally:
            await up.aclose()

    asyncio.run(scenario())


def test_a_realm_that_refuses_a_token_is_denied() -> None:
    script = Scripted(realm_status=401)

    async def scenario() -> None:
        up = client(script)
        try:
            with pytest.raises(UpstreamError) as failed:
                await up.head_manifest("hub/team/app", "v1")
            assert failed.value.reason == "denied" and "refused a token" in str(failed.value)
        finally:
            await up.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize(("status", "outcome"), [(404, "notfound"), (429, "throttled"), (500, "status"), (503, "status"), (403, "denied")])
def test_statuses_are_classified(status: int, outcome: str) -> None:
    async def scenario() -> None:
        up = Upstream(settings(), timeout=5, transport=httpx.MockTransport(lambda r: httpx.Response(status)))
        try:
            if outcome == "notfound":
                with pytest.raises(NotFound):
                    await up.get_manifest("hub/team/app", "v1", 1 << 20)
            else:
                with pytest.raises(UpstreamError) as failed:
                    await up.get_manifest("hub/team/app", "v1", 1 << 20)
                assert failed.value.reason == outcome
        finally:
            await up.aclose()

    asyncio.run(scenario())


def test_a_manifest_over_the_limit_is_invalid() -> None:
    async def scenario() -> None:
        up = Upstream(settings(), timeout=5, transport=httpx.MockTransport(lambda r: httpx.Response(200, content=b"x" * 2000)))
        try:
            with pytest.raises(UpstreamError) as failed:
                await up.get_manifest("hub/team/app", "v1", 1000)
            assert failed.value.reason == "invalid"
        finally:
            await up.aclose()

    asyncio.run(scenario())


@pytest.fixture()
def silent_server() -> Iterator[Callable[[bytes], str]]:
    """Loopback servers that accept, optionally send ``prefix`` bytes, then never say more."""
    sockets: list[socket.socket] = []
    stop = threading.Event()

    def start(prefix: bytes) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        sockets.append(listener)

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                sockets.append(conn)
                conn.recv(65536)
                if prefix:
                    conn.sendall(prefix)

        threading.Thread(target=serve, daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield start
    stop.set()
    for s in sockets:
        s.close()


def test_an_upstream_that_never_answers_times_out_within_the_timeout(silent_server: Callable[[bytes], str]) -> None:
    url = silent_server(b"")

    async def scenario() -> None:
        up = Upstream(UpstreamSettings(prefix="hub/", remoteurl=url), timeout=0.5)
        try:
            started = time.monotonic()
            with pytest.raises(UpstreamError) as failed:
                await up.head_manifest("hub/team/app", "v1")
            assert failed.value.reason == "timeout"
            assert time.monotonic() - started < 3
        finally:
            await up.aclose()

    asyncio.run(scenario())


def test_an_upstream_that_stops_sending_a_manifest_times_out(silent_server: Callable[[bytes], str]) -> None:
    url = silent_server(b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: application/json\r\n\r\n{"sche')

    async def scenario() -> None:
        up = Upstream(UpstreamSettings(prefix="hub/", remoteurl=url), timeout=0.5)
        try:
            started = time.monotonic()
            with pytest.raises(UpstreamError) as failed:
                await up.get_manifest("hub/team/app", "v1", 1 << 20)
            assert failed.value.reason == "timeout"
            assert time.monotonic() - started < 3
        finally:
            await up.aclose()

    asyncio.run(scenario())


def test_a_closed_port_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there

    async def scenario() -> None:
        up = Upstream(UpstreamSettings(prefix="hub/", remoteurl=f"http://127.0.0.1:{port}"), timeout=2)
        try:
            with pytest.raises(UpstreamError) as failed:
                await up.head_manifest("hub/team/app", "v1")
            assert failed.value.reason == "unreachable"
        finally:
            await up.aclose()

    asyncio.run(scenario())
