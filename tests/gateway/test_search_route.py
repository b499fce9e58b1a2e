"""The gateway's GET /v1/search: forwarded to the search service, filtered through ``visible``,
empty without a search backend, 503 when the search service is down."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from services.common.config import Settings
from services.gateway.app import create_app
from services.gateway.routes import search as search_route
from tests.support.fake_registry import FakeRegistry

ANSWER = {
    "num_results": 3, "num_pages": 1, "page": 1, "page_size": 25, "query": "web",
    "results": [{"name": n, "description": f"about {n}", "star_count": 0, "is_official": False, "is_automated": False}
                for n in ("team/web", "secret/web", "web")],
}


@pytest.fixture()
def search_service() -> Iterator[FakeRegistry]:
    fake = FakeRegistry().start()
    fake.add("/v1/search?q=web&n=25&page=1", body=ANSWER)
    fake.add("/v1/search?q=broken&n=25&page=1", status=500)
    fake.add("/v1/search?q=nonsense&n=25&page=1", body=b"<html>")
    yield fake
    fake.stop()


def client_for(**settings: Any) -> TestClient:
    return TestClient(create_app(Settings.model_validate(settings)))


def test_searches_are_forwarded_and_answered_as_the_service_answers(search_service: FakeRegistry) -> None:
    with client_for(search={"url": search_service.url}) as client:
        response = client.get("/v1/search", params={"q": "web"})
    assert response.status_code == 200 and response.json() == ANSWER
    assert search_service.requests[-1][1] == "/v1/search?q=web&n=25&page=1"


def test_results_the_caller_may_not_see_are_left_out(search_service: FakeRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    async def hide_secret(request: Any, names: list[str]) -> set[str]:
        return {n for n in names if not n.startswith("secret/")}

    monkeypatch.setattr(search_route, "visible", hide_secret)
    with client_for(search={"url": search_service.url}) as client:
        body = client.get("/v1/search", params={"q": "web"}).json()
    assert [r["name"] for r in body["results"]] == ["team/web", "web"] and body["num_results"] == 2


def test_without_a_search_backend_every_search_is_empty() -> None:
    with client_for(search_backend="") as client:
        response = client.get("/v1/search", params={"q": "anything", "n": "10", "page": "3"})
    assert response.status_code == 200
    assert response.json() == {"num_results": 0, "num_pages": 0, "page": 3, "page_size": 10, "query": "anything", "results": []}


@pytest.mark.parametrize("query", ["broken", "nonsense", "down"])
def test_a_missing_or_failing_search_service_is_503_in_the_error_envelope(search_service: FakeRegistry, query: str) -> None:
    url = "http://127.0.0.1:9" if query == "down" else search_service.url
    with client_for(search={"url": url}) as client:
        response = client.get("/v1/search", params={"q": query})
    assert response.status_code == 503
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_bad_numbers_and_other_methods_are_refused_in_the_error_envelope() -> None:
    with client_for(search_backend="", http={"prefix": "/reg"}) as client:
        bad = client.get("/reg/v1/search", params={"q": "x", "n": "-1"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"
        post = client.post("/reg/v1/search")
        assert post.status_code == 405 and post.headers["allow"] == "GET"
        assert client.get("/reg/v1/search").json()["page_size"] == 25
