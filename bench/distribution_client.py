"""The OCI Distribution API calls the benchmark makes, the same for every registry under test: blob
uploads (chunked, single POST, POST + PUT), image pushes and verified pulls. Any answer the spec
does not allow raises BenchError, with enough of the body to tell a missing feature from a broken
one.
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urljoin

import httpx

from bench.image_content import OCI_MANIFEST, RandomBlob, SmallImage, sha256_digest

OCTET = "application/octet-stream"


class BenchError(Exception):
    """A registry answered something the Distribution spec does not allow."""


def expect(resp: httpx.Response, *codes: int, what: str) -> None:
    """Fail with the status and a bit of the body, which is what one needs
    to tell a missing feature from a broken one."""
    if resp.status_code in codes:
        return
    try:
        body = " ".join(resp.read()[:400].decode("utf-8", "replace").split())[:160]
    except httpx.HTTPError:
        body = "<unreadable>"
    raise BenchError(f"{what}: HTTP {resp.status_code} (wanted {codes}) {body!r}")


def location(resp: httpx.Response, base: str) -> str:
    """Absolute upload URL; the spec lets registries answer a relative one."""
    loc: str | None = resp.headers.get("Location")
    if not loc:
        raise BenchError(f"{resp.request.method} {resp.request.url}: no Location header")
    return urljoin(base + "/", loc)


def with_digest(url: str, digest: str) -> httpx.URL:
    """Add ?digest= while keeping the registry's own state parameters."""
    return httpx.URL(url).copy_merge_params({"digest": digest})


def check_reachable(client: httpx.Client, base: str) -> None:
    """GET /v2/ first, so a dead target gives one clear error, not nine."""
    resp = client.get(f"{base}/v2/")
    expect(resp, 200, 401, what="GET /v2/")
    if resp.status_code == 401:
        raise BenchError("GET /v2/ wants authentication; this benchmark sends none")


def push_chunked(client: httpx.Client, base: str, repo: str, blob: RandomBlob, chunk: int) -> None:
    """POST, then PATCH each chunk (Content-Range, explicit Content-Length
    so no chunked transfer encoding is needed), then PUT ?digest=."""
    resp = client.post(f"{base}/v2/{repo}/blobs/uploads/", content=b"")
    expect(resp, 202, what="POST blob upload")
    url = location(resp, base)
    for start in range(0, blob.size, chunk):
        end = min(start + chunk, blob.size)
        headers = {
            "Content-Type": OCTET,
            "Content-Length": str(end - start),
            "Content-Range": f"{start}-{end - 1}",
        }
        resp = client.patch(url, content=blob.pieces(start, end), headers=headers)
        expect(resp, 202, what=f"PATCH chunk {start}-{end - 1}")
        url = location(resp, base)
    resp = client.put(with_digest(url, blob.digest), content=b"")
    expect(resp, 201, what="PUT ?digest= (close upload)")


def head_blob_size(client: httpx.Client, base: str, repo: str, digest: str) -> int:
    """Size the registry reports for a blob; checks the push really landed."""
    resp = client.head(f"{base}/v2/{repo}/blobs/{digest}")
    expect(resp, 200, what="HEAD blob")
    return int(resp.headers.get("Content-Length", "-1"))


def pull_verified(client: httpx.Client, base: str, repo: str, digest: str, size: int) -> None:
    """Streaming GET with sha256 on the fly, so memory stays bounded."""
    h = hashlib.sha256()
    got = 0
    with client.stream("GET", f"{base}/v2/{repo}/blobs/{digest}") as resp:
        expect(resp, 200, what="GET blob")
        for part in resp.iter_bytes():
            h.update(part)
            got += len(part)
    if got != size or "sha256:" + h.hexdigest() != digest:
        raise BenchError(f"pulled blob differs: {got} bytes, sha256:{h.hexdigest()}")


def upload_single_post(client: httpx.Client, base: str, repo: str, data: bytes, digest: str) -> bool:
    """POST ?digest= with the body.  Returns False when the registry does not
    do single-POST uploads (it answers 202 and ignores the body), after
    finishing that upload with a PUT so nothing is left dangling."""
    headers = {"Content-Type": OCTET}
    resp = client.post(f"{base}/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data, headers=headers)
    if resp.status_code == 201:
        return True
    expect(resp, 202, what="POST ?digest= blob upload")
    resp = client.put(with_digest(location(resp, base), digest), content=data, headers=headers)
    expect(resp, 201, what="PUT ?digest= after POST")
    return False


def upload_post_put(client: httpx.Client, base: str, repo: str, data: bytes, digest: str) -> None:
    """Monolithic upload every registry supports: empty POST, PUT ?digest=."""
    resp = client.post(f"{base}/v2/{repo}/blobs/uploads/", content=b"")
    expect(resp, 202, what="POST blob upload")
    resp = client.put(with_digest(location(resp, base), digest), content=data, headers={"Content-Type": OCTET})
    expect(resp, 201, what="PUT ?digest= blob")


def upload_blob(client: httpx.Client, base: str, repo: str, data: bytes, mode: str) -> None:
    """Monolithic upload in the mode chosen for this target."""
    digest = sha256_digest(data)
    if mode == "single-post":
        upload_single_post(client, base, repo, data, digest)
    else:
        upload_post_put(client, base, repo, data, digest)


def push_image(client: httpx.Client, base: str, repo: str, img: SmallImage, mode: str) -> None:
    """Blobs first, then the manifest that references them."""
    for data in img.blobs:
        upload_blob(client, base, repo, data, mode)
    resp = client.put(
        f"{base}/v2/{repo}/manifests/{img.tag}",
        content=img.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    expect(resp, 201, what=f"PUT manifest {img.tag}")


def get_verified(client: httpx.Client, url: str, digest: str, headers: dict[str, str] | None = None) -> bytes:
    """GET that must return exactly the content named by `digest`."""
    resp = client.get(url, headers=headers)
    expect(resp, 200, what=f"GET {url}")
    if sha256_digest(resp.content) != digest:
        raise BenchError(f"GET {url}: content does not match {digest}")
    return resp.content


def pull_image(client: httpx.Client, base: str, repo: str, img: SmallImage) -> None:
    """Manifest by tag, then every blob it names, as a client would."""
    body = get_verified(
        client,
        f"{base}/v2/{repo}/manifests/{img.tag}",
        sha256_digest(img.manifest),
        headers={"Accept": OCI_MANIFEST},
    )
    manifest = json.loads(body)
    for desc in [manifest["config"], *manifest["layers"]]:
        get_verified(client, f"{base}/v2/{repo}/blobs/{desc['digest']}", desc["digest"])
