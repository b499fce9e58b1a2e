"""skopeo pushes, `berth garbage-collect` runs against the live registry, skopeo pulls back what
was kept byte for byte, and what was deleted is gone from storage."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_skopeo import copy, layout_blob_digests, raw_manifest, sha256
from tests.images import multi_arch_image, single_image
from tests.support.processes import ROOT, Berth

pytestmark = pytest.mark.skopeo

if shutil.which("skopeo") is None:
    pytest.fail("skopeo is not installed (make tools installs it)", pytrace=False)


def test_skopeo_push_gc_pull(tmp_path: Path) -> None:
    berth = Berth(tmp_path / "reg", env={"REGISTRY_STORAGE_DELETE_ENABLED": "true"})
    (tmp_path / "reg").mkdir()
    berth.start()
    try:
        kept = multi_arch_image(tmp_path / "kept", seed="gc-kept")
        doomed = single_image(tmp_path / "doomed", seed="gc-doomed", size=1 << 20)
        copy(kept.ref(), f"docker://{berth.host}/gc/kept:v1", "--all")
        copy(doomed.ref(), f"docker://{berth.host}/gc/doomed:v1")
        digest = sha256(raw_manifest(f"docker://{berth.host}/gc/doomed:v1"))
        subprocess.run(
            ["skopeo", "delete", "--tls-verify=false", f"docker://{berth.host}/gc/doomed@{digest}"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        doomed_blobs = layout_blob_digests(tmp_path / "doomed") - layout_blob_digests(tmp_path / "kept")

        result = subprocess.run(
            [sys.executable, "-m", "services.cli", "garbage-collect", "--delay", "0"],
            cwd=ROOT,
            env=berth.environment(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "1.0 MiB freed" in result.stdout, result.stdout
        stored = {f"sha256:{p.name}" for p in (berth.data_dir / "docker/registry/v2/blobs/sha256").glob("*/*")}
        assert not doomed_blobs & stored
        assert layout_blob_digests(tmp_path / "kept") <= stored

        copy(f"docker://{berth.host}/gc/kept:v1", f"oci:{tmp_path / 'back'}:v1", "--all")
        assert layout_blob_digests(tmp_path / "back") == layout_blob_digests(tmp_path / "kept")
        for d in layout_blob_digests(tmp_path / "back"):
            assert sha256((tmp_path / "back" / "blobs" / "sha256" / d.split(":")[1]).read_bytes()) == d
    finally:
        berth.stop()
