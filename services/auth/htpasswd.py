"""The htpasswd user store: ``name:bcrypt-hash`` lines, as ``htpasswd -B`` writes them.

The file is re-read whenever it changes (size, mtime or inode), so editing it with ``htpasswd``
takes effect at the next login. Only bcrypt hashes are accepted; entries with other schemes (MD5,
SHA1, crypt) are skipped with a warning, as registry:2 does. htpasswd accounts have no groups.
Writes (``add``/``remove``/``set_password``) rewrite the file atomically and keep lines they do not
touch (comments, skipped entries) as they were.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from services.auth import passwords
from services.auth.users import (
    InvalidUser,
    User,
    UserExists,
    UserNotFound,
    UserStore,
    check_new_user,
    hash_new_password,
)

log = logging.getLogger("berth.auth.htpasswd")

# Below this cost a known account answers measurably faster than an unknown one (timing).
_WEAK_COST = 10


class HtpasswdStore(UserStore):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._loaded = False
        self._entries: dict[str, str] = {}

    def password_hash(self, name: str) -> str | None:
        return self._current().get(name)

    def groups(self, name: str) -> tuple[str, ...]:
        return ()

    def list_users(self) -> list[User]:
        return [User(name, (), "htpasswd") for name in sorted(self._current())]

    def add(self, name: str, password: str, groups: Iterable[str] = ()) -> None:
        if tuple(groups):
            raise InvalidUser("htpasswd accounts have no groups")
        hashed, _ = check_new_user(name, password, ())

        def edit(lines: list[str]) -> list[str]:
            if any(_name_of(line) == name for line in lines):
                raise UserExists(f"user {name!r} already exists")
            return [*lines, f"{name}:{hashed}"]

        self._rewrite(edit)

    def remove(self, name: str) -> None:
        def edit(lines: list[str]) -> list[str]:
            kept = [line for line in lines if _name_of(line) != name]
            if len(kept) == len(lines):
                raise UserNotFound(f"no user {name[:130]!r}")
            return kept

        self._rewrite(edit)

    def set_password(self, name: str, password: str) -> None:
        hashed = hash_new_password(password)

        def edit(lines: list[str]) -> list[str]:
            if not any(_name_of(line) == name for line in lines):
                raise UserNotFound(f"no user {name[:130]!r}")
            return [f"{name}:{hashed}" if _name_of(line) == name else line for line in lines]

        self._rewrite(edit)

    def _current(self) -> dict[str, str]:
        try:
            st = self.path.stat()
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if not self._loaded or stamp != self._stamp:
                self._entries = self._parse(self._read_lines()) if stamp is not None else {}
                if stamp is None:
                    log.warning("htpasswd file %s does not exist: no htpasswd accounts", self.path)
                self._stamp, self._loaded = stamp, True
            return self._entries

    def _read_lines(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def _parse(self, lines: list[str]) -> dict[str, str]:
        entries: dict[str, str] = {}
        skipped: list[str] = []
        weak = 0
        for number, line in enumerate(lines, 1):
            name = _name_of(line)
            if name is None:
                if line.strip() and not line.lstrip().startswith("#"):
                    log.warning("htpasswd %s line %d: not name:hash; ignored", self.path, number)
                continue
            hashed = line.split(":", 1)[1].strip()
            if not passwords.is_bcrypt_hash(hashed):
                skipped.append(name)
                continue
            weak += (passwords.hash_cost(hashed) or 0) < _WEAK_COST
            entries.setdefault(name, hashed)
        if skipped:
            log.warning("htpasswd %s: %d entries are not bcrypt and were ignored: %s",
                        self.path, len(skipped), ", ".join(repr(n[:64]) for n in skipped[:20]))
        if weak:
            log.warning("htpasswd %s: %d entries use a bcrypt cost below %d, which makes logins of "
                        "those accounts faster than failures (recreate them with htpasswd -B -C 12)",
                        self.path, weak, _WEAK_COST)
        log.info("htpasswd %s: %d accounts", self.path, len(entries))
        return entries

    def _rewrite(self, edit: Callable[[list[str]], list[str]]) -> None:
        with self._lock:
            lines = edit(self._read_lines())
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                mode = self.path.stat().st_mode & 0o777
            except FileNotFoundError:
                mode = 0o600
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write("".join(f"{line}\n" for line in lines))
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, mode)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._loaded = False  # the next lookup reads what was written


def _name_of(line: str) -> str | None:
    """The account a line is about; None for blank lines, comments and lines without a ':'."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#") or ":" not in stripped:
        return None
    name = stripped.split(":", 1)[0]
    return name or None
