"""``search_backend`` naming a module: its ``Index`` answers /v1/search through the real search
service, in the SQL index's v1 format, and its hooks follow the registry's events. A module that
cannot be used stops ``berth search`` (and fails ``berth config check``) with exit 2, naming the key.
The last test runs it all as processes behind a real gateway."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from services.common.config import ConfigError, Settings
from services.gateway.events.bus import configured_endpoints
from services.gateway.search_client import SearchClient
from services.search.app import create_app
from tests.search.test_events import event, eventually, send
from tests.search.test_events import search as v1_search
from tests.support.processes import ROOT, Berth, free_port
from tests.support.registry import push_image

# A custom index as an operator would write one: repositories in a dict, events recorded in CALLS.
MODULE = """
CALLS = []


class Index:
    def __init__(self):
        self.repos = {"library/ubuntu": "Ubuntu base image"}

    def results(self, search_term):
        if search_term == "boom":
            raise RuntimeError("index on fire")
        found = [{"name": n, "description": d} for n, d in sorted(self.repos.items()) if search_term in n + d]
        if search_term == "shapes":
            return [
                {"name": "full", "description": "every field", "star_count": 7, "is_official": True,
                 "is_automated": True, "extra": "dropped"},
                {"name": "typed", "description": None, "star_count": "many", "is_official": "yes"},
                {"description": "no name: skipped"},
                "not a dict",
            ]
        return found

    def repository_updated(self, name, event):
        CALLS.append(("updated", name, event["target"]["tag"]))
        if name == "fail/me":
            raise ValueError("hook on fire")
        self.repos[name] = "pushed " + event["target"]["tag"]

    def repository_deleted(self, name, event):
        CALLS.append(("deleted", name, event["target"].get("tag") or event["target"].get("digest")))
        self.repos.pop(name, None)
"""


def write_module(directory: Path, source: str = MODULE) -> str:
    """A module of a unique name in ``directory`` (so no test sees another's import); its name."""
    name = f"custom_index_{uuid.uuid4().hex[:12]}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    return name


@pytest.fixture()
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = tmp_path / "modules"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    before = set(sys.modules)
    yield directory
    for name in set(sys.modules) - before:
        if name.startswith("custom_index_"):
            del sys.modules[name]


@pytest.fixture()
def custom(module_dir: Path) -> Iterator[tuple[TestClient, Any]]:
    """A client of the search service over the test module; and the module (its CALLS)."""
    name = write_module(module_dir)
    with TestClient(create_app(Settings.model_validate({"search_backend": name}))) as client:
        yield client, importlib.import_module(name)


def test_search_answers_from_the_module_in_the_v1_format(custom: tuple[TestClient, Any]) -> None:
    client, _ = custom
    body = v1_search(client, "ubuntu")
    assert body == {
        "num_results": 1,
        "num_pages": 1,
        "page": 1,
        "page_size": 25,
        "query": "ubuntu",
        "results": [
            {"name": "library/ubuntu", "description": "Ubuntu base image", "star_count": 0, "is_official": False, "is_automated": False},
        ],
    }
    assert v1_search(client, "shapes")["results"] == [
        {"name": "full", "description": "every field", "star_count": 7, "is_official": True, "is_automated": True},
        {"name": "typed", "description": "", "star_count": 0, "is_official": False, "is_automated": False},
    ]
    assert v1_search(client, "nothing like it")["results"] == []
    assert client.get("/_ready").status_code == 200  # no database to check


def test_pages_and_their_numbers_behave_as_with_the_sql_index(custom: tuple[TestClient, Any]) -> None:
    client, _ = custom
    for i in range(30):
        send(client, event("push", f"fmt/repo-{i:02d}", digest="sha256:" + f"{i:02d}" * 32, tag="v1"))
    first = v1_search(client, "fmt/")
    assert (first["num_results"], first["num_pages"], first["page"], first["page_size"]) == (30, 2, 1, 25)
    assert [r["name"] for r in first["results"]] == [f"fmt/repo-{i:02d}" for i in range(25)]
    assert [r["name"] for r in v1_search(client, "fmt/", page=2)["results"]] == [f"fmt/repo-{i:02d}" for i in range(25, 30)]
    assert [r["name"] for r in v1_search(client, "fmt/", n=7, page=3)["results"]] == [f"fmt/repo-{i:02d}" for i in range(14, 21)]
    assert v1_search(client, "fmt/", page=9)["results"] == []
    assert v1_search(client, "fmt/", n=1000)["page_size"] == 100
    response = client.get("/v1/search", params={"q": "x", "n": "ten"})
    assert response.status_code == 400 and response.json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"


def test_push_and_delete_events_reach_the_hooks(custom: tuple[TestClient, Any]) -> None:
    client, module = custom
    digest = "sha256:" + "a" * 64
    push = event("push", "team/web", digest=digest, tag="v1")
    assert (
        send(
            client,
            push,
            event("push", "team/web", digest="sha256:" + "b" * 64, media_type="application/octet-stream"),
            event("pull", "team/web", digest=digest),
            event("push", "Bad/NAME", digest=digest, tag="v1"),
        )
        == 1
    )
    assert send(client, push) == 0  # the same envelope again: a retry after a lost answer
    assert [r["name"] for r in v1_search(client, "team/")["results"]] == ["team/web"]
    assert send(client, event("delete", "team/web", tag="v1"), event("delete", "team/web", digest=digest)) == 2
    assert module.CALLS == [("updated", "team/web", "v1"), ("deleted", "team/web", "v1"), ("deleted", "team/web", digest)]  # noqa: SIM300 - CALLS is the state under test, not a constant
    assert v1_search(client, "team/")["results"] == []


def test_a_failing_hook_skips_its_event_and_a_failing_search_answers_503(custom: tuple[TestClient, Any]) -> None:
    client, module = custom
    digest = "sha256:" + "c" * 64
    assert send(client, event("push", "fail/me", digest=digest, tag="v1"), event("push", "team/ok", digest=digest, tag="v1")) == 1
    assert [name for _, name, _ in module.CALLS] == ["fail/me", "team/ok"]
    response = client.get("/v1/search", params={"q": "boom"})
    assert response.status_code == 503 and response.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_hooks_are_optional(module_dir: Path) -> None:
    name = write_module(
        module_dir, "class Index:\n    def results(self, search_term):\n        return [{'name': 'only/results', 'description': ''}]\n"
    )
    with TestClient(create_app(Settings.model_validate({"search_backend": name}))) as client:
        assert send(client, event("push", "team/web", digest="sha256:" + "d" * 64, tag="v1")) == 0
        assert [r["name"] for r in v1_search(client, "")["results"]] == ["only/results"]


@pytest.mark.parametrize(
    "source, why",
    [
        (None, "import failed (ModuleNotFoundError"),
        ("raise RuntimeError('broken at import')\n", "import failed (RuntimeError: broken at import)"),
        ("class NotIndex:\n    pass\n", "it has no Index class"),
        ("Index = 42\n", "it has no Index class"),
        ("class Index:\n    pass\n", "its Index class has no results(search_term) method"),
        (
            "class Index:\n    def __init__(self):\n        raise OSError('no index file')\n    def results(self, term):\n        return []\n",
            "Index() failed (OSError: no index file)",
        ),
    ],
)
def test_an_unusable_module_stops_the_service_at_start(module_dir: Path, source: str | None, why: str) -> None:
    name = "no_such_module.anywhere" if source is None else write_module(module_dir, source)
    with pytest.raises(ConfigError) as raised:
        create_app(Settings.model_validate({"search_backend": name}))
    assert str(raised.value).startswith(f"config key 'search_backend': cannot use module {name!r}: {why}")


def test_the_gateway_sends_events_and_searches_to_any_search_backend() -> None:
    for backend, runs in (("sqlalchemy", True), ("my.search.index", True), ("", False)):
        settings = Settings.model_validate({"search_backend": backend, "search": {"addr": "127.0.0.1:7003"}})
        assert [e.url for e in configured_endpoints(settings)] == (["http://127.0.0.1:7003/events"] if runs else [])
        assert SearchClient.from_settings(settings).base_url == ("http://127.0.0.1:7003" if runs else None)


def berth_command(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_") and k != "DOCKER_REGISTRY_CONFIG"}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args], check=False, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60
    )


def test_a_bad_module_path_makes_search_and_config_check_exit_2_naming_the_key(tmp_path: Path) -> None:
    env = {
        "REGISTRY_SEARCH_BACKEND": "no.such.module",
        "REGISTRY_SEARCH_ADDR": f"127.0.0.1:{free_port()}",
        "REGISTRY_SEARCH_DATABASE": f"sqlite:///{tmp_path / 'index.db'}",
    }
    expected = "berth: configuration error: config key 'search_backend': cannot use module 'no.such.module': import failed"
    for command in (["search"], ["config", "check"]):
        result = berth_command(*command, env=env)
        assert result.returncode == 2, (command, result.stderr)
        assert expected in result.stderr, (command, result.stderr)
    assert not (tmp_path / "index.db").exists()  # no SQL index behind a custom backend


def test_config_check_accepts_a_module_on_the_python_path(tmp_path: Path) -> None:
    name = write_module(tmp_path)
    result = berth_command("config", "check", env={"REGISTRY_SEARCH_BACKEND": name, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr


@pytest.fixture()
def berth_with_module(tmp_path: Path) -> Iterator[Berth]:
    modules = tmp_path / "modules"
    name = write_module(modules)
    path = os.pathsep.join(p for p in (str(modules), os.environ.get("PYTHONPATH", "")) if p)
    instance = Berth(tmp_path, env={"REGISTRY_SEARCH_BACKEND": name, "PYTHONPATH": path})
    instance.start("blobstore", "search", "gateway")
    yield instance
    instance.stop()


def test_a_push_through_the_gateway_is_found_through_the_gateway_by_the_module(berth_with_module: Berth) -> None:
    with berth_with_module.client() as client:
        assert client.get("/v1/search", params={"q": "ubuntu"}).json()["results"][0]["name"] == "library/ubuntu"
        push_image(client, "demo/app", "v1")

        def found() -> list[tuple[str, str]]:
            response = client.get("/v1/search", params={"q": "demo/"})
            assert response.status_code == 200, response.text
            return [(r["name"], r["description"]) for r in response.json()["results"]]

        eventually(lambda: found() == [("demo/app", "pushed v1")], timeout=10)
        assert client.delete("/v2/demo/app/manifests/v1").status_code == 202
        eventually(lambda: found() == [], timeout=10)
        ready = httpx.get(f"{berth_with_module.url}/_ready", timeout=10).json()
        assert ready["checks"]["search"] == "ok"
