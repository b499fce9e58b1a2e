"""The one htpasswd reader (the token service's htpasswd store and the gateway's htpasswd auth):
what counts as an entry, what is skipped and warned of, and reading again when the file changes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import bcrypt
import pytest

from services.common import htpasswd
from services.common.htpasswd import HtpasswdFile

HASH = bcrypt.hashpw(b"pw", bcrypt.gensalt(10)).decode()
OTHER = bcrypt.hashpw(b"other", bcrypt.gensalt(10)).decode()


def test_entries_and_what_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    text = "\n".join(
        [
            "# a comment",
            "   # an indented comment",
            "",
            "   ",
            f"alice:{HASH}",
            f"  bob:{HASH.replace('$2b$', '$2y$')}  ",  # surrounding blanks are no part of the entry
            f"carol:{HASH.replace('$2b$', '$2a$')}",
            "md5:$apr1$abcdefgh$0123456789abcdefghijkl",
            "sha:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
            "plain:pw",
            f"spaced: {HASH}",  # the hash is what follows ':' untrimmed, as registry:2 reads it
            "no colon line",
            f":{HASH}",  # no name
        ]
    )
    with caplog.at_level(logging.WARNING, "berth.htpasswd"):
        entries = htpasswd.parse(text, "f")
    assert entries == {"alice": HASH, "bob": HASH.replace("$2b$", "$2y$"), "carol": HASH.replace("$2b$", "$2a$")}
    assert "line 12: not name:hash" in caplog.text and "line 13: not name:hash" in caplog.text
    assert "4 entries are not bcrypt and were ignored: 'md5', 'sha', 'plain', 'spaced'" in caplog.text
    assert "comment" not in caplog.text


def test_a_name_given_twice_counts_with_its_last_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "berth.htpasswd"):
        assert htpasswd.parse(f"alice:{HASH}\nalice:{OTHER}\n", "f") == {"alice": OTHER}
    assert "line 2: 'alice' again" in caplog.text


def test_weak_hashes_are_warned_of(caplog: pytest.LogCaptureFixture) -> None:
    weak = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    with caplog.at_level(logging.WARNING, "berth.htpasswd"):
        htpasswd.parse(f"alice:{weak}\nbob:{HASH}\n", "f")
    assert "1 entries use a bcrypt cost below 10" in caplog.text


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("alice:x", "alice"),
        ("  alice:x:y", "alice"),
        ("# alice:x", None),
        ("", None),
        ("alice", None),
        (":x", None),
    ],
)
def test_name_of(line: str, name: str | None) -> None:
    assert htpasswd.name_of(line) == name


def test_the_file_is_read_again_when_it_changes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "htpasswd"
    file = HtpasswdFile(path)
    with caplog.at_level(logging.WARNING, "berth.htpasswd"):
        assert file.entries() == {}  # no file yet: no accounts, a warning, no error
    assert "does not exist" in caplog.text
    path.write_text(f"alice:{HASH}\n")
    assert file.hash_of("alice") == HASH and file.hash_of("bob") is None
    path.write_text(f"alice:{OTHER}\nbob:{HASH}\n")
    assert file.hash_of("alice") == OTHER and file.hash_of("bob") == HASH
    # Same size, same mtime, same inode: unseen until forget() (what a writer calls).
    stat = path.stat()
    path.write_text(f"alice:{HASH}\nbob:{OTHER}\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file.hash_of("alice") == OTHER
    file.forget()
    assert file.hash_of("alice") == HASH
    path.unlink()
    assert file.entries() == {}


def test_a_file_that_cannot_be_read_holds_no_accounts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "htpasswd").mkdir()  # reading a directory fails (IsADirectoryError)
    with caplog.at_level(logging.WARNING, "berth.htpasswd"):
        assert HtpasswdFile(tmp_path / "htpasswd").entries() == {}
    assert "no htpasswd accounts" in caplog.text
