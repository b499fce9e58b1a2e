"""The per-endpoint queue and worker on their own: bounds, order, batching, backoff, filtering,
what gets logged, and which endpoints the configuration yields."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from services.common.config import NotificationEndpoint, Settings
from services.gateway.events import configured_endpoints
from services.gateway.events.endpoints import MAX_BATCH, Endpoint, retry_delay, safe_url


def _event(i: int, action: str = "push", media_type: str = "application/vnd.oci.image.manifest.v1+json") -> dict:
    return {"id": str(i), "action": action, "target": {"mediaType": media_type, "repository": "r"}}


def _endpoint(handler, url: str = "http://hook.test/in", **config) -> Endpoint:  # type: ignore[no-untyped-def]
    settings = NotificationEndpoint(name="hook", url=url, **config)
    return Endpoint(settings, httpx.MockTransport(handler))


def test_a_full_queue_drops_the_oldest_and_counts_them() -> None:
    endpoint = _endpoint(lambda request: httpx.Response(200), queue_size=3)
    for i in range(10):
        endpoint.offer(_event(i))
    assert [e["id"] for e in endpoint._queue] == ["7", "8", "9"]
    assert (endpoint.stats.queued, endpoint.stats.dropped, endpoint.stats.pending) == (10, 7, 3)


def test_events_go_out_in_order_in_batches_with_the_endpoints_headers() -> None:
    bodies: list[dict] = []
    headers: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        headers.append(request.headers)
        return httpx.Response(202)

    async def scenario() -> Endpoint:
        endpoint = _endpoint(handler, headers={"Authorization": ["Bearer x"], "X-Multi": ["a", "b"]})
        for i in range(120):
            endpoint.offer(_event(i))
        await endpoint.start()
        for _ in range(200):
            if endpoint.stats.pending == 0:
                break
            await asyncio.sleep(0.01)
        await endpoint.aclose(asyncio.get_running_loop().time() + 1)
        return endpoint

    endpoint = asyncio.run(scenario())
    assert [len(b["events"]) for b in bodies] == [MAX_BATCH, MAX_BATCH, 20]
    assert [e["id"] for b in bodies for e in b["events"]] == [str(i) for i in range(120)]
    assert headers[0]["authorization"] == "Bearer x" and headers[0].get_list("x-multi") == ["a", "b"]
    assert headers[0]["content-type"] == "application/vnd.docker.distribution.events.v1+json"
    assert (endpoint.stats.delivered, endpoint.stats.failed_attempts, endpoint.stats.abandoned) == (120, 0, 0)


def test_retries_wait_backoff_and_double_once_the_endpoint_counts_as_down() -> None:
    assert [retry_delay(n, 1.0, 3) for n in range(1, 8)] == [1, 1, 1, 2, 4, 8, 16]
    assert retry_delay(30, 1.0, 3) == 60.0
    assert retry_delay(1, 0.25, 1) == 0.25


def test_failures_are_logged_rarely_and_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    answers = iter([httpx.Response(500)] * 6 + [httpx.Response(200)] * 10)

    async def scenario() -> Endpoint:
        endpoint = _endpoint(
            lambda request: next(answers),
            url="http://user:pw@hook.test/in?token=q",
            backoff=0.01,
            threshold=2,
            headers={"X-Secret": ["s3cret"]},
        )
        endpoint.offer(_event(1))
        await endpoint.start()
        for _ in range(300):
            if endpoint.stats.delivered:
                break
            await asyncio.sleep(0.01)
        await endpoint.aclose(asyncio.get_running_loop().time() + 1)
        return endpoint

    with caplog.at_level(logging.INFO, logger="berth.gateway.events"):
        endpoint = asyncio.run(scenario())
    assert (endpoint.stats.failed_attempts, endpoint.stats.delivered, endpoint.stats.down) == (6, 1, False)
    failures = [r for r in caplog.records if "delivery of" in r.getMessage()]
    assert len(failures) == 1 and "HTTP 500" in failures[0].getMessage()
    assert any("is back after 6 failed attempts" in r.getMessage() for r in caplog.records)
    text = caplog.text
    assert "s3cret" not in text and "pw@" not in text and "token=q" not in text
    assert safe_url("http://user:pw@hook.test:8080/in?token=q") == "http://hook.test:8080/in"


def test_shutdown_waits_only_the_grace_period_for_a_hanging_endpoint() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(60)
        return httpx.Response(200)

    async def scenario() -> tuple[Endpoint, float]:
        endpoint = _endpoint(hang, timeout=60)
        await endpoint.start()
        for i in range(5):
            endpoint.offer(_event(i))
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await endpoint.aclose(start + 0.3)
        return endpoint, loop.time() - start

    endpoint, took = asyncio.run(scenario())
    assert took < 1.0 and endpoint.stats.abandoned == 5 and endpoint.stats.delivered == 0


def test_ignore_rules_filter_by_action_and_media_type() -> None:
    endpoint = _endpoint(
        lambda r: httpx.Response(200),
        ignore={"actions": ["pull"], "mediatypes": ["application/octet-stream"]},
        ignoredmediatypes=["application/vnd.oci.image.index.v1+json"],
    )
    assert endpoint.accepts(_event(1))
    assert not endpoint.accepts(_event(2, action="pull"))
    assert not endpoint.accepts(_event(3, media_type="application/octet-stream"))
    assert not endpoint.accepts(_event(4, media_type="application/vnd.oci.image.index.v1+json"))
    assert endpoint.accepts({"id": "5", "action": "delete", "target": {"repository": "r", "digest": "sha256:x"}})


def test_the_search_service_is_an_endpoint_when_search_is_on() -> None:
    on = Settings.model_validate({"search_backend": "sqlalchemy", "search": {"addr": "127.0.0.1:7003"}})
    assert [(e.name, e.url) for e in configured_endpoints(on)] == [("search", "http://127.0.0.1:7003/events")]
    own = Settings.model_validate(
        {
            "search_backend": "sqlalchemy",
            "notifications": {
                "endpoints": [{"name": "search", "url": "http://elsewhere/events"}, {"name": "audit", "url": "http://audit/"}]
            },
        }
    )
    assert [e.url for e in configured_endpoints(own)] == ["http://elsewhere/events", "http://audit/"]
    silenced = Settings.model_validate(
        {"search_backend": "sqlalchemy", "notifications": {"endpoints": [{"name": "search", "url": "http://x/", "disabled": True}]}}
    )
    assert configured_endpoints(silenced) == []
    assert configured_endpoints(Settings.model_validate({"search_backend": ""})) == []


TOKEN = "shared-secret-0123456789"


def test_the_search_endpoint_carries_the_blobstore_token() -> None:
    """The search service beyond loopback asks POST /events for blobstore.token: the gateway's
    endpoint for it sends the token (with auto whenever one is set, as towards the blobstore),
    and no other endpoint ever gets it."""
    beyond = Settings.model_validate(
        {
            "search": {"addr": "0.0.0.0:7003", "url": "http://search:7003"},
            "blobstore": {"token": TOKEN},
            "notifications": {"endpoints": [{"name": "audit", "url": "http://audit/"}]},
        }
    )
    endpoints = {e.name: e for e in configured_endpoints(beyond)}
    assert endpoints["search"].url == "http://search:7003/events"
    assert endpoints["search"].headers == {"Authorization": [f"Bearer {TOKEN}"]}
    assert endpoints["audit"].headers == {}
    # This gateway's own search.addr may be the loopback default while search.url is elsewhere.
    local_view = Settings.model_validate({"search": {"url": "http://search:7003"}, "blobstore": {"token": TOKEN}})
    assert configured_endpoints(local_view)[0].headers == {"Authorization": [f"Bearer {TOKEN}"]}
    # An endpoint named search that points at the service keeps an Authorization of its own; one
    # pointing elsewhere never gets the token; search.security none sends nothing.
    own = Settings.model_validate(
        {
            "search": {"url": "http://search:7003"},
            "blobstore": {"token": TOKEN},
            "notifications": {
                "endpoints": [{"name": "search", "url": "http://search:7003/events", "headers": {"authorization": ["Bearer mine"]}}]
            },
        }
    )
    assert configured_endpoints(own)[0].headers == {"authorization": ["Bearer mine"]}
    elsewhere = Settings.model_validate(
        {"blobstore": {"token": TOKEN}, "notifications": {"endpoints": [{"name": "search", "url": "http://listener.example.com/events"}]}}
    )
    assert configured_endpoints(elsewhere)[0].headers == {}
    off = Settings.model_validate({"search": {"url": "http://search:7003", "security": "none"}, "blobstore": {"token": TOKEN}})
    assert configured_endpoints(off)[0].headers == {}
    assert configured_endpoints(Settings.model_validate({"search": {"addr": "127.0.0.1:7003"}}))[0].headers == {}


def test_a_gateway_without_the_token_a_search_service_beyond_loopback_needs_does_not_start() -> None:
    from services.common.config import ConfigError
    from services.gateway.app import create_app

    with pytest.raises(
        ConfigError, match=r"^blobstore\.token: .*search\.security is token \(auto: the search service listens on 0\.0\.0\.0:7003\)"
    ):
        create_app(Settings.model_validate({"search": {"addr": "0.0.0.0:7003"}}))
    with pytest.raises(ConfigError, match=r"^blobstore\.token: "):
        create_app(Settings.model_validate({"search": {"security": "token"}, "blobstore": {"token": "short"}}))
    create_app(Settings.model_validate({"search_backend": "", "search": {"addr": "0.0.0.0:7003"}}))  # no search service: no token
