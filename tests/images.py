"""Builds small but real images on disk as OCI image layouts, for skopeo to push.

Layers are real gzipped tarballs and configs are real image configs, so any client accepts them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


@dataclass
class Layout:
    path: Path
    manifest_digests: list[str]

    def ref(self, tag: str = "latest") -> str:
        return f"oci:{self.path}:{tag}"


class LayoutWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))

    def blob(self, data: bytes) -> str:
        digest = sha256(data)
        (self.path / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
        return digest

    def image(self, arch: str, files: dict[str, bytes], labels: dict[str, str] | None = None) -> dict:
        layer = layer_tar(files)
        diff_id = sha256(gzip.decompress(layer))
        config = json.dumps(
            {
                "architecture": arch,
                "os": "linux",
                "config": {"Labels": labels or {}},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            },
            sort_keys=True,
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": self.blob(config), "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": self.blob(layer), "size": len(layer)}],
            },
            sort_keys=True,
        ).encode()
        return {
            "mediaType": OCI_MANIFEST,
            "digest": self.blob(manifest),
            "size": len(manifest),
            "platform": {"architecture": arch, "os": "linux"},
        }

    def index(self, manifests: list[dict]) -> dict:
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}, sort_keys=True).encode()
        return {"mediaType": OCI_INDEX, "digest": self.blob(index), "size": len(index)}

    def write_index(self, top: dict, tag: str = "latest") -> None:
        entry = dict(top, annotations={"org.opencontainers.image.ref.name": tag})
        entry.pop("platform", None)
        (self.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))


def single_image(path: Path, seed: str = "hello", size: int = 4096) -> Layout:
    """One linux/amd64 image with one layer of pseudo-random content."""
    writer = LayoutWriter(path)
    top = writer.image("amd64", {"hello.txt": seed.encode(), "data.bin": os.urandom(size)})
    writer.write_index(top)
    return Layout(path, [top["digest"]])


def multi_arch_image(path: Path, seed: str = "multi") -> Layout:
    """An OCI index over amd64 and arm64 images."""
    writer = LayoutWriter(path)
    children = [writer.image(arch, {"arch.txt": f"{seed}-{arch}".encode(), "r.bin": os.urandom(2048)}) for arch in ("amd64", "arm64")]
    top = writer.index(children)
    writer.write_index(top)
    return Layout(path, [top["digest"], *[c["digest"] for c in children]])
