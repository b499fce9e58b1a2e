"""Reading an htpasswd file of bcrypt hashes (``htpasswd -B``), for the token service and the gateway.

Lines are ``name:hash``. Blank lines and ``#`` comments are skipped; so is a line without ``:`` or
without a name (with a warning naming its number), and an entry whose hash is not bcrypt (MD5,
SHA1, crypt, plain text: one warning lists them), as registry:2 does. The hash is what follows the
first ``:``, untrimmed, as registry:2 reads it: ``alice: $2y$...`` is no bcrypt hash. A name given
twice counts with its last line, again as registry:2 reads the file (with a warning). Entries of a
bcrypt cost below 10 are warned of: their logins answer measurably faster than failures.

The file is read again whenever it changes (mtime, size or inode), so accounts edited with
``htpasswd`` count from the next check without a restart. A file that does not exist or cannot be
read holds no accounts (with a warning), never an error.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger("berth.htpasswd")

BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
# Below this cost a known account answers measurably faster than an unknown one (timing).
WEAK_COST = 10


def name_of(line: str) -> str | None:
    """The account a line is about; None for blank lines, comments and lines without a name."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    name, sep, _ = stripped.partition(":")
    return name if sep and name else None


def parse(text: str, source: str = "htpasswd") -> dict[str, str]:
    """name -> bcrypt hash of the file's usable entries; ``source`` names the file in warnings."""
    entries: dict[str, str] = {}
    skipped: list[str] = []
    weak = 0
    for number, line in enumerate(text.splitlines(), 1):
        name = name_of(line)
        if name is None:
            if line.strip() and not line.lstrip().startswith("#"):
                log.warning("htpasswd %s line %d: not name:hash; ignored", source, number)
            continue
        hashed = line.strip().partition(":")[2]
        if not hashed.startswith(BCRYPT_PREFIXES):
            skipped.append(name)
            continue
        if name in entries:
            log.warning("htpasswd %s line %d: %r again; its last line counts", source, number, name[:64])
        entries[name] = hashed
    for hashed in entries.values():
        cost = hashed.split("$")[2] if hashed.count("$") >= 3 else ""
        weak += cost.isdigit() and int(cost) < WEAK_COST
    if skipped:
        log.warning(
            "htpasswd %s: %d entries are not bcrypt and were ignored: %s",
            source,
            len(skipped),
            ", ".join(repr(n[:64]) for n in skipped[:20]),
        )
    if weak:
        log.warning(
            "htpasswd %s: %d entries use a bcrypt cost below %d, which makes logins of "
            "those accounts faster than failures (recreate them with htpasswd -B -C 12)",
            source,
            weak,
            WEAK_COST,
        )
    return entries


class HtpasswdFile:
    """The accounts of one htpasswd file, read again when the file changes. Thread-safe: the
    token service checks logins in its thread pool."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._loaded = False
        self._entries: dict[str, str] = {}

    def entries(self) -> dict[str, str]:
        """name -> bcrypt hash, as the file is now."""
        try:
            st = os.stat(self.path)
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        with self._lock:
            if not self._loaded or stamp != self._stamp:
                self._entries = self._read() if stamp is not None else {}
                if stamp is None:
                    log.warning("htpasswd file %s does not exist: no htpasswd accounts", self.path)
                self._stamp, self._loaded = stamp, True
            return self._entries

    def hash_of(self, name: str) -> str | None:
        """The account's bcrypt hash; None if the file has no usable entry of that name."""
        return self.entries().get(name)

    def forget(self) -> None:
        """Read the file again at the next lookup (after writing it)."""
        with self._lock:
            self._loaded = False

    def _read(self) -> dict[str, str]:
        try:
            text = self.path.read_bytes().decode("utf-8", "replace")
        except OSError as exc:
            log.warning("htpasswd %s: %s; no htpasswd accounts", self.path, exc.strerror)
            return {}
        entries = parse(text, str(self.path))
        log.info("htpasswd %s: %d accounts", self.path, len(entries))
        return entries
