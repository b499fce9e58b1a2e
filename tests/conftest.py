"""Fixtures: Berth running as real processes, on each storage driver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import Berth
from tests.support.s3 import MotoServer, start_moto

STORAGE_DRIVERS = ["filesystem", "inmemory", "s3"]


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One S3 endpoint (moto's server) for the session; tests take a bucket each."""
    server = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture(scope="session", params=STORAGE_DRIVERS)
def berth(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Berth]:
    """A registry shared by the tests of a session, once per storage driver."""
    env = {"REGISTRY_STORAGE_DRIVER": request.param}
    if request.param == "s3":
        server: MotoServer = request.getfixturevalue("moto")
        env = server.berth_env(server.new_bucket("berth"), rootdirectory="registry")
    instance = Berth(tmp_path_factory.mktemp(f"berth-{request.param}"), env=env)
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
