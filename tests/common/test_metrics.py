"""The HTTP metrics and request id middlewares at the ASGI level (labels, streamed messages passed
through as they are, failures), the outgoing request id, and the notification metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Request
from prometheus_client import REGISTRY
from starlette.responses import StreamingResponse

from services.common import config, http_instrumentation, request_ids
from services.common.config import NotificationEndpoint
from services.common.http_instrumentation import HTTPMetrics
from services.common.request_id_http import RequestIdMiddleware, send_request_id
from services.gateway.events.endpoints import Endpoint


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def app_under_test(service: str) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{name:path}/parts/{part}")
    async def item(name: str, part: str) -> dict[str, str]:
        return {"name": name, "part": part}

    @app.put("/upload/{upload_id}")
    async def upload(upload_id: str, request: Request) -> dict[str, int]:
        size = 0
        async for piece in request.stream():
            size += len(piece)
        return {"size": size}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def pieces() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield b"x" * 1000

        return StreamingResponse(pieces())

    @app.get("/broken")
    async def broken() -> None:
        raise RuntimeError("bug")

    http_instrumentation.install(app, service, config.Settings())
    return app


async def call(
    app: Any, method: str, path: str, chunks: tuple[bytes, ...] = (), headers: tuple[tuple[bytes, bytes], ...] = ()
) -> list[dict[str, Any]]:
    """One request at the ASGI level; the messages the app sent."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": list(headers),
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 80),
    }
    incoming = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)] or [
        {"type": "http.request", "body": b"", "more_body": False}
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        await app(scope, receive, send)
    except RuntimeError:
        pass  # what the server would log as "Exception in ASGI application"
    return sent


def test_requests_are_labelled_by_route_template_and_status() -> None:
    app = app_under_test("metrics-test")
    labels = {"service": "metrics-test"}

    async def scenario() -> None:
        await call(app, "GET", "/items/a/b/c/parts/7")
        await call(app, "GET", "/items/other/parts/1")
        await call(app, "PUT", "/upload/u1", chunks=(b"a" * 100, b"b" * 50))
        await call(app, "GET", "/nowhere")
        await call(app, "POST", "/items/a/parts/1")  # a route, the wrong method
        await call(app, "BREW", "/nowhere")  # made-up methods share a label
        await call(app, "GET", "/broken")

    asyncio.run(scenario())
    broken = asyncio.run(call(app, "GET", "/broken", headers=((b"x-request-id", b"boom-1"),)))
    template = "/items/{name:path}/parts/{part}"
    assert sample("berth_http_requests_total", **labels, method="GET", route=template, status="200") == 2
    assert sample("berth_http_request_duration_seconds_count", **labels, method="GET", route=template) == 2
    assert sample("berth_http_requests_total", **labels, method="PUT", route="/upload/{upload_id}", status="200") == 1
    assert sample("berth_http_request_bytes_total", **labels, route="/upload/{upload_id}") == 150
    assert sample("berth_http_response_bytes_total", **labels, route="/upload/{upload_id}") == len(b'{"size":150}')
    assert sample("berth_http_requests_total", **labels, method="GET", route="unmatched", status="404") == 1
    assert sample("berth_http_requests_total", **labels, method="POST", route=template, status="405") == 1
    assert sample("berth_http_requests_total", **labels, method="OTHER", route="unmatched", status="404") == 1
    # An exception nothing handled: Starlette's error layer answers 500, counted, with the request id.
    assert sample("berth_http_requests_total", **labels, method="GET", route="/broken", status="500") == 2
    start = next(m for m in broken if m["type"] == "http.response.start")
    assert start["status"] == 500
    assert (b"x-request-id", b"boom-1") in start["headers"]


def test_streamed_bodies_pass_through_untouched() -> None:
    app = app_under_test("metrics-stream")
    sent = asyncio.run(call(app, "GET", "/stream"))
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert [m["body"] for m in bodies if m["body"]] == [b"x" * 1000] * 3
    assert bodies[-1]["more_body"] is False
    assert sample("berth_http_response_bytes_total", service="metrics-stream", route="/stream") == 3000


def test_the_metrics_middleware_hands_on_the_same_message_objects() -> None:
    messages = [
        {"type": "http.response.start", "status": 200, "headers": []},
        {"type": "http.response.body", "body": b"abc", "more_body": True},
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]
    seen: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        for m in messages:
            await send(m)

    async def send(message: Any) -> None:
        seen.append(message)

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    asyncio.run(HTTPMetrics(inner, "metrics-identity")({"type": "http", "method": "GET", "headers": []}, receive, send))
    assert all(a is b for a, b in zip(seen, messages, strict=True))


def test_request_ids_are_adopted_echoed_or_made() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(request_ids.current())
        await send({"type": "http.response.start", "status": 204, "headers": [(b"x-other", b"1")]})
        await send({"type": "http.response.body", "body": b""})

    app = RequestIdMiddleware(inner)

    def echoed(*headers: tuple[bytes, bytes]) -> str:
        sent = asyncio.run(call(app, "GET", "/", headers=headers))
        start = dict(sent[0]["headers"])
        assert start[b"x-other"] == b"1"
        return start[b"x-request-id"].decode()

    assert echoed((b"x-request-id", b"abc123")) == "abc123" == seen[-1]
    made = echoed()
    assert len(made) == 32 and made == seen[-1]
    assert echoed((b"x-request-id", b"bad id\r\nx")) not in ("bad id\r\nx", made)


def test_outgoing_calls_carry_the_current_request_id() -> None:
    got: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        got.append(request.headers.get("x-request-id"))
        return httpx.Response(200)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler), event_hooks={"request": [send_request_id]}) as c:
            token = request_ids.set_current("")
            await c.get("http://auth.test/authorize")
            request_ids.adopt("abc123")
            await c.get("http://auth.test/authorize")
            request_ids.reset(token)

    asyncio.run(scenario())
    assert got == [None, "abc123"]


def test_metrics_page_is_served_and_can_be_off() -> None:
    from starlette.testclient import TestClient

    on = FastAPI()
    http_instrumentation.install(on, "metrics-page", config.Settings())
    with TestClient(on) as client:
        r = client.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert "berth_http_requests_total" in r.text
        r = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert r.headers["content-type"].startswith("application/openmetrics-text")
        assert r.text.endswith("# EOF\n")
    off = FastAPI()
    http_instrumentation.install(off, "metrics-page", config.Settings(metrics=config.MetricsSettings(enabled=False)))
    with TestClient(off) as client:
        assert client.get("/metrics").status_code == 404
        assert client.get("/metrics").headers["x-request-id"]


def test_notification_metrics() -> None:
    answers = [httpx.Response(500), httpx.Response(503), httpx.Response(202)]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0) if answers else httpx.Response(202)

    name = "metrics-hook"
    endpoint = Endpoint(
        NotificationEndpoint(name=name, url="http://hook.test/in", queue_size=3, backoff=0.01), httpx.MockTransport(handler)
    )

    async def scenario() -> None:
        for i in range(5):
            endpoint.offer({"id": str(i), "action": "push", "target": {"repository": "r"}})
        assert sample("berth_notification_queue_depth", endpoint=name) == 3
        await endpoint.start()
        for _ in range(300):
            if endpoint.stats.pending == 0:
                break
            await asyncio.sleep(0.01)
        await endpoint.aclose(asyncio.get_running_loop().time() + 1)

    asyncio.run(scenario())
    assert sample("berth_notifications_dropped_total", endpoint=name) == 2
    assert sample("berth_notification_failures_total", endpoint=name) == 2
    assert sample("berth_notifications_sent_total", endpoint=name) == 3
    assert sample("berth_notification_queue_depth", endpoint=name) == 0
