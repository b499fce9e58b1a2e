"""Fixtures: Berth running as real processes, on each storage driver."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Berth

STORAGE_DRIVERS = ["filesystem", "inmemory"]


@pytest.fixture(scope="session", params=STORAGE_DRIVERS)
def berth(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Berth]:
    """A registry shared by the tests of a session, once per storage driver."""
    instance = Berth(tmp_path_factory.mktemp(f"berth-{request.param}"), env={"REGISTRY_STORAGE_DRIVER": request.param})
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture()
def client(berth: Berth) -> Iterator[httpx.Client]:
    with berth.client() as c:
        yield c


@pytest.fixture()
def fresh_berth(tmp_path: Path) -> Iterator[Berth]:
    """A registry of the test's own (filesystem storage), for tests that restart or reconfigure."""
    instance = Berth(tmp_path)
    yield instance
    instance.stop()
