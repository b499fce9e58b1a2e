"""``berth search reindex`` rebuilds the index from a registry: paginated catalog and tag lists,
descriptions, repositories gone from the registry, partial failures and exit codes."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.search.index import Index
from services.search.reindex import RegistryUnavailable, reindex
from tests.search.helpers import digest, names, push
from tests.support.fake_registry import FakeRegistry
from tests.support.processes import ROOT

DESCRIPTION = "org.opencontainers.image.description"


@pytest.fixture()
def registry() -> Iterator[FakeRegistry]:
    fake = FakeRegistry().start()
    yield fake
    fake.stop()


def _catalog(registry: FakeRegistry) -> None:
    registry.add("/v2/_catalog?n=1000", body={"repositories": ["a/one", "b/two"]}, link='</v2/_catalog?n=1000&last=b/two>; rel="next"')
    registry.add("/v2/_catalog?n=1000&last=b/two", body={"repositories": ["c/broken"]})
    registry.add(
        "/v2/a/one/tags/list?n=1000", body={"name": "a/one", "tags": ["v1"]}, link='</v2/a/one/tags/list?n=1000&last=v1>; rel="next"'
    )
    registry.add("/v2/a/one/tags/list?n=1000&last=v1", body={"name": "a/one", "tags": ["latest"]})
    registry.image("a/one", "v1", labels={DESCRIPTION: "old image of one"})
    registry.image("a/one", "latest", labels={DESCRIPTION: "the latest image of one"})
    registry.add("/v2/b/two/tags/list?n=1000", body={"name": "b/two", "tags": ["only"]})
    registry.image("b/two", "only", annotations={DESCRIPTION: "two's description"})
    registry.add("/v2/c/broken/tags/list?n=1000", status=500)


def test_reindex_mirrors_the_registry(registry: FakeRegistry, tmp_path: Path) -> None:
    _catalog(registry)
    index = Index.open(f"sqlite:///{tmp_path / 'index.db'}")
    try:
        push(index, "gone/away", "deleted while we were down")
        push(index, "a/one", tag="stale")
        with index.writing() as conn:
            index.pulled(conn, "a/one")
        out = io.StringIO()
        outcome = asyncio.run(reindex(index, registry.url + "/", out))
        assert outcome.exit_code == 1 and [name for name, _ in outcome.failed] == ["c/broken"]
        assert (outcome.indexed, outcome.hidden) == (2, 1)
        one = index.repository("a/one")
        assert one is not None and set(one.tags) == {"v1", "latest"} and one.pull_count == 1
        assert one.description == "the latest image of one"
        assert names(index, "two's") == ["b/two"]
        assert names(index, "") == ["a/one", "b/two"]
        assert "reindex: 3 repositories" in out.getvalue() and "failed: c/broken" in out.getvalue()
        # Tags are read with HEAD (no pull); only the chosen images are fetched, as our own agent.
        assert all(agent.startswith("berth-search/") for _, _, agent in registry.requests)
        assert ("HEAD", "/v2/a/one/manifests/v1", registry.requests[0][2]) in registry.requests
    finally:
        index.close()


def test_an_unreachable_registry_is_exit_code_1(tmp_path: Path, registry: FakeRegistry) -> None:
    index = Index.open(f"sqlite:///{tmp_path / 'index.db'}")
    try:
        with pytest.raises(RegistryUnavailable):
            asyncio.run(reindex(index, "http://127.0.0.1:9", io.StringIO()))
    finally:
        index.close()
    env = {"PATH": "/usr/bin:/bin", "REGISTRY_SEARCH_DATABASE": f"sqlite:///{tmp_path / 'index.db'}"}
    down = subprocess.run(
        [sys.executable, "-m", "services.cli", "search", "reindex", "--registry", "http://127.0.0.1:9"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 1 and "_catalog" in down.stderr  # a runtime failure: worth retrying
    registry.add("/v2/_catalog?n=1000", body={"repositories": []})
    empty = subprocess.run(
        [sys.executable, "-m", "services.cli", "search", "reindex", "--registry", registry.url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert empty.returncode == 0, empty.stderr
    assert "0 repositories indexed" in empty.stderr


def test_a_digest_the_registry_reports_is_what_the_index_keeps(registry: FakeRegistry, tmp_path: Path) -> None:
    registry.add("/v2/_catalog?n=1000", body={"repositories": ["d/moved"]})
    registry.add("/v2/d/moved/tags/list?n=1000", body={"name": "d/moved", "tags": ["v1"]})
    current = registry.image("d/moved", "v1")
    index = Index.open(f"sqlite:///{tmp_path / 'index.db'}")
    try:
        push(index, "d/moved", tag="v1", image="an older image")
        assert index.repository("d/moved").tags == {"v1": digest("an older image")}  # type: ignore[union-attr]
        assert asyncio.run(reindex(index, registry.url, io.StringIO())).exit_code == 0
        assert index.repository("d/moved").tags == {"v1": current}  # type: ignore[union-attr]
    finally:
        index.close()
