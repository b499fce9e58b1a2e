"""The gateway's GET /v1/search: forwarded to the search service, filtered through ``visible``,
empty without a search backend, 503 when the search service is down."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from services.common.config import Settings
from services.gateway.access import OpenAccess, Reach
from services.gateway.app import create_app
from services.gateway.routes import search as search_route
from tests.support.fake_registry import FakeRegistry

ANSWER = {
    "num_results": 3,
    "num_pages": 1,
    "page": 1,
    "page_size": 25,
    "query": "web",
    "results": [
        {"name": n, "description": f"about {n}", "star_count": 0, "is_official": False, "is_automated": False}
        for n in ("team/web", "secret/web", "web")
    ],
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


class SomeAccess(OpenAccess):
    """An access controller whose callers may pull only the names ``allowed`` says (as with token
    auth); it records what it was asked."""

    def __init__(self, allowed: Callable[[str], bool]) -> None:
        self.allowed = allowed
        self.asked: list[list[str]] = []

    def reach(self, identity: Any) -> Reach:
        return "some"

    async def pullable(self, identity: Any, names: Sequence[str]) -> set[str]:
        self.asked.append(list(names))
        return {n for n in names if self.allowed(n)}


@contextmanager
def filtered_client(access: SomeAccess, **settings: Any) -> Iterator[TestClient]:
    with client_for(**settings) as client:
        client.app.state.gateway.access = access  # type: ignore[attr-defined]
        yield client


def test_results_the_caller_may_not_see_are_left_out(search_service: FakeRegistry) -> None:
    search_service.add("/v1/search?q=web&n=100&page=1", body=ANSWER)
    access = SomeAccess(lambda name: not name.startswith("secret/"))
    with filtered_client(access, search={"url": search_service.url}) as client:
        body = client.get("/v1/search", params={"q": "web"}).json()
    assert [r["name"] for r in body["results"]] == ["team/web", "web"]
    assert body["num_results"] == 2 and body["num_pages"] == 1
    assert access.asked == [["team/web", "secret/web", "web"]]


def many(total: int, n: int, page: int) -> dict[str, Any]:
    """The search service's answer for ``total`` matches r000, r001, ... (best first)."""
    names = [f"r{i:03d}" for i in range(total)][(page - 1) * n : page * n]
    return {
        "num_results": total,
        "num_pages": (total + n - 1) // n,
        "page": page,
        "page_size": n,
        "query": "r",
        "results": [{"name": name, "description": "", "star_count": 0, "is_official": False, "is_automated": False} for name in names],
    }


def test_counts_and_pages_are_those_of_what_the_caller_may_pull(search_service: FakeRegistry) -> None:
    """250 matches over three batches, a third of them visible: the counts say 84 and 4 pages, and
    page 2 is the second 25 of those 84; nothing counts a hidden repository."""
    for page in (1, 2, 3):
        search_service.add(f"/v1/search?q=r&n=100&page={page}", body=many(250, 100, page))
    visible = [f"r{i:03d}" for i in range(0, 250, 3)]
    access = SomeAccess(lambda name: int(name[1:]) % 3 == 0)
    with filtered_client(access, search={"url": search_service.url}) as client:
        pages = [client.get("/v1/search", params={"q": "r", "n": "25", "page": str(p)}).json() for p in (1, 2, 4, 5)]
    for body in pages:
        assert (body["num_results"], body["num_pages"], body["page_size"]) == (84, 4, 25)
    assert [r["name"] for r in pages[0]["results"]] == visible[:25]
    assert [r["name"] for r in pages[1]["results"]] == visible[25:50]
    assert [r["name"] for r in pages[2]["results"]] == visible[75:84]
    assert pages[3]["results"] == [] and pages[3]["page"] == 5


def test_a_caller_who_sees_nothing_gets_nothing_counted(search_service: FakeRegistry) -> None:
    search_service.add("/v1/search?q=web&n=100&page=1", body=ANSWER)
    with filtered_client(SomeAccess(lambda name: False), search={"url": search_service.url}) as client:
        body = client.get("/v1/search", params={"q": "web"}).json()
    assert (body["num_results"], body["num_pages"], body["results"]) == (0, 0, [])


def test_filtered_searches_read_at_most_max_scanned_matches(search_service: FakeRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_route, "MAX_SCANNED", 200)
    for page in (1, 2):
        search_service.add(f"/v1/search?q=r&n=100&page={page}", body=many(250, 100, page))
    with filtered_client(SomeAccess(lambda name: True), search={"url": search_service.url}) as client:
        body = client.get("/v1/search", params={"q": "r"}).json()
    assert body["num_results"] == 200
    assert [path for _, path, _ in search_service.requests] == ["/v1/search?q=r&n=100&page=1", "/v1/search?q=r&n=100&page=2"]


def test_a_failing_batch_is_503(search_service: FakeRegistry) -> None:
    search_service.add("/v1/search?q=r&n=100&page=1", body=many(250, 100, 1))
    search_service.add("/v1/search?q=r&n=100&page=2", body=many(250, 100, 2))
    search_service.add("/v1/search?q=r&n=100&page=3", status=500)
    with filtered_client(SomeAccess(lambda name: True), search={"url": search_service.url}) as client:
        response = client.get("/v1/search", params={"q": "r"})
    assert response.status_code == 503 and response.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_anonymous_htpasswd_callers_see_nothing_and_nothing_is_counted(search_service: FakeRegistry, tmp_path: Path) -> None:
    (tmp_path / "htpasswd").write_text("")
    with client_for(
        search={"url": search_service.url}, auth={"type": "htpasswd", "htpasswd": {"path": str(tmp_path / "htpasswd")}}
    ) as client:
        body = client.get("/v1/search", params={"q": "web"}).json()
    assert (body["num_results"], body["num_pages"], body["results"]) == (0, 0, [])
    assert search_service.requests == []


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
