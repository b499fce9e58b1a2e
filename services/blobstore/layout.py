"""Where everything lives in a driver: the reference registry's (registry:2) storage layout.

Keeping its layout means a Berth data folder and a registry:2 data folder are interchangeable for
blobs, manifests, tags and repository links. Referrer entries are Berth's own addition.

Names, tags and digests are checked here as well as at the gateway: nothing reaches a driver path
that did not pass the grammar.
"""

from __future__ import annotations

import re

from services.common import digests, names
from services.common.errors import BLOB_UPLOAD_UNKNOWN, RegistryError

ROOT = "/docker/registry/v2"
REPOSITORIES = f"{ROOT}/repositories"


def _split(digest: str) -> tuple[str, str]:
    d = digests.parse(digest)
    return d.algorithm, d.hex


def blob_data(digest: str) -> str:
    alg, hex_ = _split(digest)
    return f"{ROOT}/blobs/{alg}/{hex_[:2]}/{hex_}/data"


def repository(name: str) -> str:
    return f"{REPOSITORIES}/{names.check_name(name)}"


def layer_link_dir(name: str, digest: str) -> str:
    alg, hex_ = _split(digest)
    return f"{repository(name)}/_layers/{alg}/{hex_}"


def layer_link(name: str, digest: str) -> str:
    return f"{layer_link_dir(name, digest)}/link"


def revision_dir(name: str, digest: str) -> str:
    alg, hex_ = _split(digest)
    return f"{repository(name)}/_manifests/revisions/{alg}/{hex_}"


def revision_link(name: str, digest: str) -> str:
    return f"{revision_dir(name, digest)}/link"


def tags_dir(name: str) -> str:
    return f"{repository(name)}/_manifests/tags"


def tag_dir(name: str, tag: str) -> str:
    return f"{tags_dir(name)}/{names.check_tag(tag)}"


def tag_current_link(name: str, tag: str) -> str:
    return f"{tag_dir(name, tag)}/current/link"


def tag_index_link(name: str, tag: str, digest: str) -> str:
    alg, hex_ = _split(digest)
    return f"{tag_dir(name, tag)}/index/{alg}/{hex_}/link"


_UPLOAD_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def upload_dir(name: str, upload_id: str) -> str:
    if not _UPLOAD_ID_RE.fullmatch(upload_id):
        raise RegistryError(BLOB_UPLOAD_UNKNOWN, {"upload": upload_id[:100]})
    return f"{repository(name)}/_uploads/{upload_id}"


def upload_data(name: str, upload_id: str) -> str:
    return f"{upload_dir(name, upload_id)}/data"


def upload_started_at(name: str, upload_id: str) -> str:
    return f"{upload_dir(name, upload_id)}/startedat"


def upload_staging(name: str, staging_id: str) -> str:
    """Where a whole blob written in one call waits for its verification: a file next to the
    session folders (none to make and remove), which upload purging removes by its age if a
    killed process left it."""
    return f"{upload_dir(name, staging_id)}.data"


def upload_ended(name: str, upload_id: str) -> str:
    """Left when a session is committed or cancelled, so that its first URL (a fresh one:
    services/blobstore/uploads.py) cannot bring it back. Next to the session folders, not in one
    (no folder to make); upload purging removes it by its age, as it does folders."""
    return f"{upload_dir(name, upload_id)}.ended"


_UPLOAD_LEFTOVERS = (".ended", ".data")


def is_upload_leftover(entry: str) -> bool:
    """Whether an entry of ``_uploads`` is an ended session's marker or a store's staging file,
    not a session: neither keeps a repository in use."""
    return entry.endswith(_UPLOAD_LEFTOVERS)


def referrers_dir(name: str, subject: str) -> str:
    alg, hex_ = _split(subject)
    return f"{repository(name)}/_referrers/{alg}/{hex_}"


def referrer_entry(name: str, subject: str, digest: str) -> str:
    alg, hex_ = _split(digest)
    return f"{referrers_dir(name, subject)}/{alg}-{hex_}"


def mirror_dir(name: str, kind: str) -> str:
    """The pull-through cache's records of a repository: ``kind`` is manifests, blobs or tags."""
    assert kind in ("manifests", "blobs", "tags")
    return f"{repository(name)}/_mirror/{kind}"


def mirror_record(name: str, kind: str, key: str) -> str:
    """One record: a digest (manifests, blobs) or a tag (tags)."""
    if kind == "tags":
        return f"{mirror_dir(name, kind)}/{names.check_tag(key)}"
    alg, hex_ = _split(key)
    return f"{mirror_dir(name, kind)}/{alg}-{hex_}"


# Garbage collection's records (Berth's own, next to blobs/ and repositories/; registry:2 ignores
# them): while a collection runs, ``state`` exists and manifest pushes name what they reference in
# ``live/`` (see services/blobstore/gc.py). The locks are lock names, not files.
GC_DIR = f"{ROOT}/_gc"
GC_STATE = f"{GC_DIR}/state"
GC_LIVE = f"{GC_DIR}/live"
GC_RUN_LOCK = f"{GC_DIR}/run"
GC_SWEEP_LOCK = f"{GC_DIR}/sweep"


def gc_live(digest: str) -> str:
    alg, hex_ = _split(digest)
    return f"{GC_LIVE}/{alg}-{hex_}"
