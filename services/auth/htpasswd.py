"""The htpasswd user store: ``name:bcrypt-hash`` lines, as ``htpasswd -B`` writes them.

Reading is ``services.common.htpasswd``'s, the same reader as the gateway's htpasswd auth: the file
is re-read whenever it changes, so editing it with ``htpasswd`` takes effect at the next login, and
entries that are not bcrypt are skipped with a warning. htpasswd accounts have no groups. Writes
(``add``/``remove``/``set_password``) rewrite the file atomically and keep lines they do not touch
(comments, skipped entries) as they were.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from services.auth.user_store import (
    InvalidUser,
    User,
    UserExists,
    UserNotFound,
    UserStore,
    check_new_user,
    hash_new_password,
)
from services.common.htpasswd import HtpasswdFile, name_of


class HtpasswdStore(UserStore):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.file = HtpasswdFile(self.path)
        self._write_lock = threading.Lock()

    def password_hash(self, name: str) -> str | None:
        return self.file.hash_of(name)

    def groups(self, name: str) -> tuple[str, ...]:
        return ()

    def list_users(self) -> list[User]:
        return [User(name, (), "htpasswd") for name in sorted(self.file.entries())]

    def add(self, name: str, password: str, groups: Iterable[str] = ()) -> None:
        if tuple(groups):
            raise InvalidUser("htpasswd accounts have no groups")
        hashed, _ = check_new_user(name, password, ())

        def edit(lines: list[str]) -> list[str]:
            if any(name_of(line) == name for line in lines):
                raise UserExists(f"user {name!r} already exists")
            return [*lines, f"{name}:{hashed}"]

        self._rewrite(edit)

    def remove(self, name: str) -> None:
        def edit(lines: list[str]) -> list[str]:
            kept = [line for line in lines if name_of(line) != name]
            if len(kept) == len(lines):
                raise UserNotFound(f"no user {name[:130]!r}")
            return kept

        self._rewrite(edit)

    def set_password(self, name: str, password: str) -> None:
        hashed = hash_new_password(password)

        def edit(lines: list[str]) -> list[str]:
            if not any(name_of(line) == name for line in lines):
                raise UserNotFound(f"no user {name[:130]!r}")
            return [f"{name}:{hashed}" if name_of(line) == name else line for line in lines]

        self._rewrite(edit)

    def _read_lines(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def _rewrite(self, edit: Callable[[list[str]], list[str]]) -> None:
        with self._write_lock:
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
            self.file.forget()  # the next lookup reads what was written
