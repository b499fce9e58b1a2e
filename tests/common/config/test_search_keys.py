"""The notification and search settings: defaults, the sample's documentation of them, and
`berth config check` keeping webhook credentials and database passwords out of its output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from services.common import config
from tests.support.processes import ROOT

SAMPLE = ROOT / "config" / "config_sample.yml"


def test_search_is_on_by_default_and_in_the_sample() -> None:
    settings = config.load(environ={})
    assert settings.search_backend == "sqlalchemy"
    assert settings.search.base_url == "http://127.0.0.1:5003" and settings.search.registry == ""
    sample = yaml.safe_load(SAMPLE.read_text())["common"]
    assert sample["search_backend"] == "sqlalchemy"
    assert set(sample["search"]) == set(config.SearchSettings.model_fields)
    assert config.load(SAMPLE, environ={}).search == settings.search


def test_config_check_masks_webhook_headers_and_database_passwords(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "notifications": {"endpoints": [{"name": "hook", "url": "http://hook/", "headers": {"Authorization": ["Bearer s3cret"]}}]},
                "search": {"database": "postgresql://berth:hunter2@db/search"},
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "--config", str(path), "config", "check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout and "hunter2" not in result.stdout
    shown = json.loads(result.stdout)
    assert shown["notifications"]["endpoints"][0]["headers"] == {"Authorization": ["***"]}
    assert shown["search"]["database"].startswith("postgresql://berth:")
