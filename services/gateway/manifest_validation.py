"""Where manifests are validated: the four manifest types Berth stores, what each references,
and the descriptor a manifest gets in its subject's referrers list."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from services.common import digests
from services.common.config import ManifestValidationSettings
from services.common.errors import MANIFEST_INVALID, RegistryError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

IMAGE_MANIFESTS = {OCI_MANIFEST, DOCKER_MANIFEST}
INDEXES = {OCI_INDEX, DOCKER_MANIFEST_LIST}
SUPPORTED = IMAGE_MANIFESTS | INDEXES

# Content-Types that say nothing about the manifest; the payload's mediaType decides.
_GENERIC_TYPES = {"", "application/json", "application/octet-stream", "text/plain"}

# Layers that registries are not expected to hold (foreign / non-distributable).
_FOREIGN_LAYER_TYPES = {
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
}


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()


@dataclass
class ParsedManifest:
    media_type: str
    blobs: list[str] = field(default_factory=list)
    # The sizes an image manifest declares for its blobs (what a mirror's prefetch goes by).
    blob_sizes: dict[str, int] = field(default_factory=dict)
    manifests: list[str] = field(default_factory=list)
    # An index's children by digest: (os, architecture, variant) where the child names a platform.
    platforms: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    subject: str = ""
    artifact_type: str = ""
    annotations: dict[str, str] = field(default_factory=dict)

    def referrer_descriptor(self, digest: str, size: int) -> dict[str, Any]:
        """This manifest as an entry in its subject's referrers list (OCI 1.1 rules)."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": digest, "size": size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = self.annotations
        return out


def _invalid(reason: str) -> RegistryError:
    return RegistryError(MANIFEST_INVALID, {"reason": reason})


def media_type_of(content_type: str | None) -> str:
    """The bare media type of a Content-Type header (parameters dropped)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse(payload: bytes, content_type: str | None) -> ParsedManifest:
    """Validates a pushed manifest; raises MANIFEST_INVALID saying what is wrong."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise _invalid("not valid JSON") from None
    except RecursionError:  # nesting deeper than the parser's stack: no manifest needs it
        raise _invalid("JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise _invalid("a manifest is a JSON object")
    if doc.get("schemaVersion") != 2:
        raise _invalid("schemaVersion must be 2 (schema 1 manifests are not supported)")

    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise _invalid("mediaType must be a string")
    header_type = media_type_of(content_type)
    if header_type in _GENERIC_TYPES:
        header_type = ""
    if declared and header_type and declared != header_type:
        raise _invalid(f"mediaType {declared!r} does not match Content-Type {header_type!r}")
    media_type = declared or header_type or guess_media_type(doc)
    if media_type not in SUPPORTED:
        raise _invalid(f"unsupported manifest media type {media_type!r}")

    parsed = ParsedManifest(media_type)
    if media_type in IMAGE_MANIFESTS:
        _parse_image(doc, parsed)
    else:
        _parse_index(doc, parsed)

    if "subject" in doc:
        parsed.subject = _descriptor(doc["subject"], "subject").digest
    annotations = doc.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            raise _invalid("annotations must map strings to strings")
        parsed.annotations = annotations
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise _invalid("artifactType must be a string")
    parsed.artifact_type = artifact_type or parsed.artifact_type
    return parsed


def guess_media_type(doc: dict[str, Any]) -> str:
    """For manifests without a mediaType field, which only OCI allows (Docker's types require it):
    an index lists manifests, an image has a config."""
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc or "layers" in doc:
        return OCI_MANIFEST
    return ""


def stored_media_type(payload: bytes) -> str:
    """The media type to serve a stored manifest with (it was validated on the way in)."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return OCI_MANIFEST
    declared = doc.get("mediaType") if isinstance(doc, dict) else None
    return declared if isinstance(declared, str) and declared else guess_media_type(doc) or OCI_MANIFEST


def _parse_image(doc: dict[str, Any], parsed: ParsedManifest) -> None:
    config = _descriptor(doc.get("config"), "config")
    layers = doc.get("layers", [])
    if not isinstance(layers, list):
        raise _invalid("layers must be a list")
    parsed.blobs.append(config.digest)
    parsed.blob_sizes[config.digest] = config.size
    for i, raw in enumerate(layers):
        layer = _descriptor(raw, f"layers[{i}]")
        if layer.media_type in _FOREIGN_LAYER_TYPES or layer.urls:
            continue
        parsed.blobs.append(layer.digest)
        parsed.blob_sizes[layer.digest] = layer.size
    # The referrers API names an image by its artifactType, or else by its config's media type.
    parsed.artifact_type = config.media_type


def _parse_index(doc: dict[str, Any], parsed: ParsedManifest) -> None:
    children = doc.get("manifests")
    if not isinstance(children, list):
        raise _invalid("manifests must be a list")
    for i, raw in enumerate(children):
        digest = _descriptor(raw, f"manifests[{i}]").digest
        parsed.manifests.append(digest)
        platform = raw.get("platform")
        if platform is not None:
            if not isinstance(platform, dict) or not all(isinstance(platform.get(k, ""), str) for k in ("os", "architecture", "variant")):
                raise _invalid(f"manifests[{i}].platform must be an object with string os, architecture and variant")
            parsed.platforms[digest] = (platform.get("os", ""), platform.get("architecture", ""), platform.get("variant", ""))


def required(parsed: ParsedManifest, policy: ManifestValidationSettings) -> tuple[list[str], list[str]]:
    """The blobs and child manifests that must exist before this manifest is accepted.

    Strict by default (everything it references); ``sparse`` requires nothing, and an index's
    ``platforms`` policy picks which children must exist (registry:2 3.x's semantics: ``none``, or
    ``list`` for the children whose platform is listed, a listed platform without a variant
    matching every variant)."""
    if policy.sparse:
        return [], []
    indexes = policy.indexes
    if indexes.platforms == "none":
        return parsed.blobs, []
    if indexes.platforms == "list":
        wanted = [(p.os, p.architecture, p.variant) for p in indexes.platformlist]
        children = [d for d in parsed.manifests if d in parsed.platforms and _listed(parsed.platforms[d], wanted)]
        return parsed.blobs, children
    return parsed.blobs, parsed.manifests


def _listed(platform: tuple[str, str, str], wanted: list[tuple[str, str, str]]) -> bool:
    os_, arch, variant = platform
    return any(os_ == w_os and arch == w_arch and (not w_variant or variant == w_variant) for w_os, w_arch, w_variant in wanted)


def _descriptor(raw: Any, where: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise _invalid(f"{where} must be a descriptor object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise _invalid(f"{where}.mediaType is required")
    if not isinstance(digest, str):
        raise _invalid(f"{where}.digest is required")
    try:
        digests.parse(digest)
    except RegistryError:
        raise _invalid(f"{where}.digest {digest[:200]!r} is not a valid digest") from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _invalid(f"{where}.size must be a non-negative integer")
    urls = raw.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise _invalid(f"{where}.urls must be a list of strings")
    return Descriptor(media_type, digest, size, tuple(urls))
