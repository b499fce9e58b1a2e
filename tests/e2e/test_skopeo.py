"""skopeo, a real client, pushes and pulls through Berth; what comes back is what went in."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.images import multi_arch_image, single_image
from tests.support.processes import Berth

pytestmark = pytest.mark.skopeo

if shutil.which("skopeo") is None:  # `make test` installs it; a bare pytest run says what is missing
    pytest.fail("skopeo is not installed (make tools installs it)", pytrace=False)


def skopeo(*args: str) -> str:
    result = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"skopeo {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def copy(src: str, dest: str, *extra: str) -> None:
    skopeo("copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false", *extra, src, dest)


def raw_manifest(ref: str) -> bytes:
    result = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", ref], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layout_blob_digests(path: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (path / "blobs" / "sha256").iterdir()}


def test_oci_image_round_trip(berth: Berth, tmp_path: Path) -> None:
    image = single_image(tmp_path / "src", seed="oci-round-trip")
    remote = f"docker://{berth.host}/e2e/oci:v1"
    copy(image.ref(), remote)

    assert sha256(raw_manifest(remote)) == image.manifest_digests[0]
    copy(remote, f"oci:{tmp_path / 'back'}:v1")
    assert layout_blob_digests(tmp_path / "back") == layout_blob_digests(tmp_path / "src")
    for digest in layout_blob_digests(tmp_path / "back"):
        data = (tmp_path / "back" / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
        assert sha256(data) == digest


def test_docker_schema2_round_trip(berth: Berth, tmp_path: Path) -> None:
    image = single_image(tmp_path / "src", seed="docker-v2s2")
    remote = f"docker://{berth.host}/e2e/docker:v1"
    copy(image.ref(), remote, "--format", "v2s2")

    manifest = raw_manifest(remote)
    assert json.loads(manifest)["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    copy(remote, f"dir:{tmp_path / 'back'}")
    pulled = (tmp_path / "back" / "manifest.json").read_bytes()
    assert pulled == manifest
    for layer in json.loads(pulled)["layers"] + [json.loads(pulled)["config"]]:
        data = (tmp_path / "back" / layer["digest"].split(":")[1]).read_bytes()
        assert sha256(data) == layer["digest"]


def test_multi_arch_index_with_all(berth: Berth, tmp_path: Path) -> None:
    image = multi_arch_image(tmp_path / "src")
    remote = f"docker://{berth.host}/e2e/multi:v1"
    copy(image.ref(), remote, "--all")

    index = raw_manifest(remote)
    assert sha256(index) == image.manifest_digests[0]
    children = [m["digest"] for m in json.loads(index)["manifests"]]
    assert children == image.manifest_digests[1:]
    for child in children:
        assert sha256(raw_manifest(f"docker://{berth.host}/e2e/multi@{child}")) == child

    copy(remote, f"oci:{tmp_path / 'back'}:v1", "--all")
    assert layout_blob_digests(tmp_path / "back") == layout_blob_digests(tmp_path / "src")


def test_copy_between_repositories_mounts_blobs(berth: Berth, tmp_path: Path) -> None:
    image = single_image(tmp_path / "src", seed="mount-me")
    copy(image.ref(), f"docker://{berth.host}/e2e/mount-source:v1")
    copy(f"docker://{berth.host}/e2e/mount-source:v1", f"docker://{berth.host}/e2e/mount-target:v1")
    assert sha256(raw_manifest(f"docker://{berth.host}/e2e/mount-target:v1")) == image.manifest_digests[0]


def test_data_survives_restart_of_both_services(fresh_berth: Berth, tmp_path: Path) -> None:
    fresh_berth.start()
    image = multi_arch_image(tmp_path / "src", seed="restart")
    remote = f"docker://{fresh_berth.host}/e2e/durable:v1"
    copy(image.ref(), remote, "--all")

    fresh_berth.restart()
    assert sha256(raw_manifest(remote)) == image.manifest_digests[0]
    copy(remote, f"oci:{tmp_path / 'back'}:v1", "--all")
    assert layout_blob_digests(tmp_path / "back") == layout_blob_digests(tmp_path / "src")
