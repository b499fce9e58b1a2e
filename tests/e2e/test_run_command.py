"""`berth run` starts every service, serves the registry, and stops everything on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.support.processes import free_port


def test_run_serves_and_stops_cleanly_on_interrupt(tmp_path: Path) -> None:
    http_port, grpc_port, search_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(
        REGISTRY_HTTP_ADDR=f"127.0.0.1:{http_port}",
        REGISTRY_BLOBSTORE_ADDR=f"127.0.0.1:{grpc_port}",
        REGISTRY_BLOBSTORE_HTTP_ADDR="",
        REGISTRY_SEARCH_ADDR=f"127.0.0.1:{search_port}",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{http_port}/v2/", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "berth run did not come up"
                time.sleep(0.2)
        assert r.status_code == 200
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3  # blobstore, search (on by default), gateway
        # Data lands in ./data under the working directory, as `make run` promises.
        assert (tmp_path / "data" / "registry").is_dir()
        assert (tmp_path / "data" / "search" / "index.db").is_file()
        # The gateway answers /v1/search from the search service it was started with.
        found = httpx.get(f"http://127.0.0.1:{http_port}/v1/search", params={"q": "x"}, timeout=5)
        assert found.status_code == 200 and found.json()["num_results"] == 0

        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output
        assert "Berth stopped" in output
        assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_run_refuses_an_address_another_program_holds(tmp_path: Path) -> None:
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        env.update(
            REGISTRY_HTTP_ADDR=f"127.0.0.1:{free_port()}",
            REGISTRY_BLOBSTORE_ADDR=f"127.0.0.1:{taken}",
            REGISTRY_BLOBSTORE_HTTP_ADDR="",
            REGISTRY_SEARCH_BACKEND="",
        )
        result = subprocess.run(
            [sys.executable, "-m", "services.cli", "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 2
    assert f"blobstore.addr: 127.0.0.1:{taken} cannot be used" in result.stderr
