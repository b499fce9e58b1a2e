"""One suite for both user stores (the SQL table and the htpasswd file), plus what is particular to
each and to the composite the service uses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest

from services.auth import database, passwords
from services.auth.htpasswd import HtpasswdStore
from services.auth.user_store import InvalidUser, UserExists, UserNotFound, UserStore
from services.auth.user_table import SqlUserStore
from services.auth.users import CompositeStore

FAST_COST = 4  # the stores' own hashing, made cheap for the suite; timing checks restore the default


@pytest.fixture(autouse=True)
def fast_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "DEFAULT_COST", FAST_COST)


def sql_store(tmp_path: Path) -> SqlUserStore:
    return SqlUserStore(database.connect(f"sqlite:///{tmp_path / 'users.db'}"))


def htpasswd_store(tmp_path: Path) -> HtpasswdStore:
    return HtpasswdStore(tmp_path / "htpasswd")


STORES: dict[str, Callable[[Path], UserStore]] = {"sql": sql_store, "htpasswd": htpasswd_store}


@pytest.fixture(params=list(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[UserStore]:
    yield STORES[request.param](tmp_path)


def stored_bytes(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())


def count_bcrypt_checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(passwords.bcrypt, "checkpw", counting)
    return calls


def test_add_and_verify(store: UserStore) -> None:
    store.add("alice", "correct horse")
    assert store.verify("alice", "correct horse")
    assert not store.verify("alice", "correct horse ")
    assert not store.verify("alice", "")
    assert not store.verify("Alice", "correct horse")  # names are case-sensitive
    assert not store.verify("nobody", "correct horse")
    assert store.exists("alice") and not store.exists("nobody")


def test_passwords_are_stored_as_bcrypt_only(store: UserStore, tmp_path: Path) -> None:
    store.add("alice", "plain-text-never-stored")
    assert b"plain-text-never-stored" not in stored_bytes(tmp_path)
    stored = store.password_hash("alice")
    assert stored is not None and stored.startswith("$2b$") and bcrypt.checkpw(b"plain-text-never-stored", stored.encode())


def test_duplicate_add_is_refused(store: UserStore) -> None:
    store.add("alice", "one")
    with pytest.raises(UserExists):
        store.add("alice", "two")
    assert store.verify("alice", "one")


def test_remove(store: UserStore) -> None:
    store.add("alice", "pw")
    store.add("bob", "pw")
    store.remove("alice")
    assert not store.verify("alice", "pw") and not store.exists("alice")
    assert store.verify("bob", "pw")
    with pytest.raises(UserNotFound):
        store.remove("alice")


def test_set_password(store: UserStore) -> None:
    store.add("alice", "old")
    store.set_password("alice", "new")
    assert store.verify("alice", "new") and not store.verify("alice", "old")
    with pytest.raises(UserNotFound):
        store.set_password("nobody", "x")


def test_list_users_sorted(store: UserStore) -> None:
    for name in ("carol", "alice", "bob"):
        store.add(name, "pw")
    assert [u.name for u in store.list_users()] == ["alice", "bob", "carol"]


@pytest.mark.parametrize(
    "name,password",
    [
        ("", "pw"),
        ("has space", "pw"),
        ("colon:name", "pw"),
        ("-dash-first", "pw"),
        ("x" * 129, "pw"),
        ("alice", ""),
        ("alice", "x" * 73),
        ("alice", "nul\x00byte"),
    ],
)
def test_invalid_accounts_are_refused(store: UserStore, name: str, password: str) -> None:
    with pytest.raises(InvalidUser):
        store.add(name, password)
    assert store.list_users() == []


def test_unknown_accounts_cost_one_bcrypt_check_of_the_default_cost(store: UserStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.add("alice", "pw")
    monkeypatch.setattr(passwords, "DEFAULT_COST", 12)
    calls = count_bcrypt_checks(monkeypatch)
    for name, password in [("nobody", "pw"), ("alice", "wrong"), ("alice", "x" * 100), ("n" * 300, "pw")]:
        assert not store.verify(name, password)
    assert len(calls) == 4  # one comparison per check, whether or not the account exists
    assert [passwords.hash_cost(h.decode()) for h in calls] == [12, FAST_COST, 12, 12]


def test_groups(store: UserStore) -> None:
    if isinstance(store, HtpasswdStore):
        with pytest.raises(InvalidUser):
            store.add("alice", "pw", ["admins"])
        store.add("alice", "pw")
        assert store.groups("alice") == ()
        return
    store.add("alice", "pw", ["devs", "admins", "devs"])
    store.add("bob", "pw")
    assert store.groups("alice") == ("admins", "devs")
    assert store.groups("bob") == () and store.groups("nobody") == ()
    assert [(u.name, u.groups) for u in store.list_users()] == [("alice", ("admins", "devs")), ("bob", ())]
    with pytest.raises(InvalidUser):
        store.add("carol", "pw", ["bad group"])
    store.remove("alice")
    store.add("alice", "pw")
    assert store.groups("alice") == ()  # a re-created account does not inherit groups


def write_htpasswd(path: Path, entries: dict[str, str], cost: int = FAST_COST) -> None:
    path.write_text("".join(f"{n}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(cost)).decode()}\n" for n, p in entries.items()))


def test_htpasswd_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    store = HtpasswdStore(path)
    assert not store.verify("alice", "one")  # no file yet: no accounts
    write_htpasswd(path, {"alice": "one"})
    assert store.verify("alice", "one")
    write_htpasswd(path, {"alice": "two", "bob": "three"})
    assert store.verify("alice", "two") and not store.verify("alice", "one")
    assert store.verify("bob", "three")
    path.unlink()
    assert not store.exists("bob")


def test_htpasswd_accepts_bcrypt_variants_and_ignores_other_schemes(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(FAST_COST)).decode()
    path.write_text(
        "\n".join(
            [
                "# a comment",
                "",
                f"two-y:{hashed.replace('$2b$', '$2y$')}",
                f"two-a:{hashed.replace('$2b$', '$2a$')}",
                "md5:$apr1$abcdefgh$0123456789abcdefghijkl",
                "sha:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
                "crypt:rqXexS6ZhobKA",
                "plain:pw",
                "no colon line",
            ]
        )
        + "\n"
    )
    store = HtpasswdStore(path)
    assert store.verify("two-y", "pw") and store.verify("two-a", "pw")
    for name in ("md5", "sha", "crypt", "plain"):
        assert not store.exists(name) and not store.verify(name, "pw")
    store.add("new", "pw")  # writes keep lines they do not touch
    text = path.read_text()
    assert "# a comment" in text and "md5:$apr1$" in text and "no colon line" in text


def composite(tmp_path: Path) -> tuple[CompositeStore, SqlUserStore, HtpasswdStore]:
    sql, htpasswd = sql_store(tmp_path), htpasswd_store(tmp_path)
    return CompositeStore(sql, htpasswd), sql, htpasswd


def test_composite_asks_sql_first_then_htpasswd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    both, sql, htpasswd = composite(tmp_path)
    sql.add("alice", "sql-password", ["admins"])
    htpasswd.add("alice", "file-password")
    htpasswd.add("bob", "file-password")
    assert both.verify("alice", "sql-password") and not both.verify("alice", "file-password")
    assert both.groups("alice") == ("admins",)
    assert both.verify("bob", "file-password") and both.groups("bob") == ()
    assert [(u.name, u.source) for u in both.list_users()] == [("alice", "sql"), ("bob", "htpasswd")]
    both.add("carol", "pw")
    assert sql.exists("carol") and not htpasswd.exists("carol")
    calls = count_bcrypt_checks(monkeypatch)
    assert not both.verify("nobody", "pw")
    assert len(calls) == 1
