"""The index on SQLite and PostgreSQL alike: what is found, in which order, for any query text."""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa

from services.common.search_query import SearchQuery, clean_text
from services.search.index import Index
from tests.search.helpers import digest, names, push, total


def test_a_pushed_tag_makes_the_repository_searchable_until_its_last_tag_goes(index: Index) -> None:
    assert names(index, "webapp") == []
    push(index, "team/webapp", tag="v1")
    push(index, "team/webapp", tag="v2")
    assert names(index, "webapp") == ["team/webapp"]
    with index.writing() as conn:
        index.tag_deleted(conn, "team/webapp", "v1")
    assert names(index, "webapp") == ["team/webapp"]  # v2 is left
    with index.writing() as conn:
        index.tag_deleted(conn, "team/webapp", "v2")
    assert names(index, "webapp") == [] and total(index, "webapp") == 0
    assert names(index, "") == []
    push(index, "team/webapp", tag="v3")
    assert names(index, "webapp") == ["team/webapp"]


def test_deleting_a_manifest_removes_every_tag_pointing_at_it(index: Index) -> None:
    shared = push(index, "team/app", tag="latest", image="one")
    push(index, "team/app", tag="stable", image="one")
    push(index, "team/app", tag="old", image="two")
    with index.writing() as conn:
        index.manifest_deleted(conn, "team/app", shared)
    found = index.repository("team/app")
    assert found is not None and found.tags == {"old": digest("two")}
    assert names(index, "team/app") == ["team/app"]
    with index.writing() as conn:
        index.manifest_deleted(conn, "team/app", digest("two"))
        index.manifest_deleted(conn, "team/unknown", digest("two"))  # unknown repository: no error
    assert names(index, "team/app") == []


def test_ranking_exact_then_prefix_then_name_contains_then_description(index: Index) -> None:
    push(index, "zz/redis-tools", "helpers")
    push(index, "redis", "the server")
    push(index, "aa/cache", "A fast REDIS clone")
    push(index, "redis-exporter", "metrics")
    push(index, "bb/myredis", "")
    push(index, "redis/cli", "")
    push(index, "other", "nothing to see")
    assert names(index, "redis") == [
        "redis",  # exact
        "redis-exporter",
        "redis/cli",  # prefix, by name
        "bb/myredis",
        "zz/redis-tools",  # name contains, by name
        "aa/cache",  # description only
    ]
    assert total(index, "redis") == 6


def test_matching_is_case_insensitive_for_any_script(index: Index) -> None:
    push(index, "team/unicode", "Ünïcode STRASSE café Ελληνικά")
    for query in ("ünïcode", "ÜNÏCODE", "straße", "CAFÉ", "ελληνικά", "ΕΛΛΗΝΙΚΆ", "TEAM/UNI"):
        assert names(index, query) == ["team/unicode"], query
    assert names(index, "cafe") == []  # accents are not ignored


@pytest.mark.parametrize(
    "query",
    [
        "%",
        "_",
        "%_%",
        "\\",
        "/",
        "'",
        '"',
        "''",
        "*",
        "a*",
        "^x",
        "name : x",
        'a" OR "b',
        "NEAR(a b)",
        "'; DROP TABLE repositories; --",
        "\x00",
        "🐳",
        "a" * 300,
        "-",
        "(",
        ")",
        "[a-z]",
        "?",
    ],
)
def test_any_query_text_is_literal_and_harmless(index: Index, query: str) -> None:
    push(index, "plain/name", "nothing special here")
    push(index, "lib/a_b", "has an underscore")
    push(index, "lib/axb", "100% pure, a/b/c path, say \"hi\" and 'bye', back\\slash, star* caret^ 🐳")
    found = index.search(SearchQuery(clean_text(query)[:255], 25, 1))
    expected = {
        "%": ["lib/axb"],
        "_": ["lib/a_b"],
        "%_%": [],
        "\\": ["lib/axb"],
        "/": ["lib/a_b", "lib/axb", "plain/name"],
        "'": ["lib/axb"],
        '"': ["lib/axb"],
        "''": [],
        "*": ["lib/axb"],
        "a*": [],
        "^x": [],
        "name : x": [],
        'a" OR "b': [],
        "NEAR(a b)": [],
        "'; DROP TABLE repositories; --": [],
        "\x00": ["lib/a_b", "lib/axb", "plain/name"],
        "🐳": ["lib/axb"],
        "a" * 300: [],
        "-": [],
        "(": [],
        ")": [],
        "[a-z]": [],
        "?": [],
    }[query]
    assert sorted(name for name, _ in found[1]) == expected
    assert found[0] == len(expected)
    assert names(index, "plain") == ["plain/name"]  # the table is still there


def test_literal_wildcards_of_three_characters_and_more(index: Index) -> None:
    push(index, "lib/a_b_c", "")
    push(index, "lib/axbxc", "discount 50%_off")
    assert names(index, "a_b") == ["lib/a_b_c"]
    assert names(index, "0%_") == ["lib/axbxc"]
    assert names(index, "t 50") == ["lib/axbxc"]
    assert names(index, "a/b") == []


def test_pages_split_the_ranked_list_exactly(index: Index) -> None:
    for i in range(23):
        push(index, f"team/svc-{i:02d}", "a service")
    push(index, "svc", "")
    push(index, "svc-first", "")
    full = names(index, "svc", n=100)
    assert full[:2] == ["svc", "svc-first"] and len(full) == 25
    pages = [names(index, "svc", n=7, page=p) for p in range(1, 6)]
    assert [len(p) for p in pages] == [7, 7, 7, 4, 0]
    assert [entry for page in pages for entry in page] == full
    answer = index.search(SearchQuery("svc", 7, 2))
    assert answer[0] == 25


def test_pull_counts_and_last_push_time(index: Index) -> None:
    push(index, "team/pulled", at=2000.0)
    push(index, "team/pulled", tag="old", at=1000.0)  # an event that arrived late
    with index.writing() as conn:
        index.pulled(conn, "team/pulled")
        index.pulled(conn, "team/pulled")
    found = index.repository("team/pulled")
    assert found is not None and found.pull_count == 2 and found.last_push == 2000.0


def test_a_late_description_from_an_older_push_does_not_replace_a_newer_one(index: Index) -> None:
    push(index, "team/described", "new words", at=2000.0)
    with index.writing() as conn:
        assert not index.set_description(conn, "team/described", "old words", 1000.0)
    assert names(index, "new words") == ["team/described"] and names(index, "old words") == []
    with index.writing() as conn:
        assert index.set_description(conn, "team/described", "newest words", 3000.0)
    assert names(index, "newest") == ["team/described"] and names(index, "new words") == []


def test_replace_tags_and_forget_others_mirror_a_registry(index: Index) -> None:
    push(index, "keep/me", tag="a")
    push(index, "keep/me", tag="b")
    push(index, "gone/away", tag="x")
    with index.writing() as conn:
        index.replace_tags(conn, "keep/me", {"b": digest("new-b"), "c": digest("c")})
        assert index.forget_others(conn, ["keep/me"]) == 1
    found = index.repository("keep/me")
    assert found is not None and found.tags == {"b": digest("new-b"), "c": digest("c")}
    assert names(index, "") == ["keep/me"]


def _reference(repos: dict[str, str], q: str) -> list[str]:
    """What search must answer, computed the slow and obvious way."""
    q = clean_text(q)[:255].casefold()

    def rank(name: str) -> int:
        folded = name.casefold()
        return 0 if folded.startswith(q) else 1 if q in folded else 2

    found = [n for n, d in repos.items() if q in f"{n}\n{d}".casefold()]
    return sorted(found, key=lambda n: (rank(n), n))


WORDS = ["alpine", "nginx", "redis", "web", "api", "server", "tools", "Ünïcode", "straße", "100%", "a_b", "x/y", "ngin", "ap"]


def test_results_match_a_reference_implementation_on_random_data(index: Index) -> None:
    """Exercises every tier, both page plans (walking the name index, sorting candidates) and
    pages that cross tiers, against the obvious implementation."""
    rnd = random.Random(7)
    repos: dict[str, str] = {}
    for i in range(1500):
        name = f"{rnd.choice(WORDS[:7]).lower()}{rnd.randint(0, 40)}/{rnd.choice(WORDS[:7])}-{i}".replace("ü", "u")
        repos[name] = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(0, 6)))
    bulk = list(repos.items())
    with index.writing() as conn:
        for name, description in bulk:
            index.tag_pushed(conn, name, "latest", digest(name), 1000.0)
            if description:
                index.set_description(conn, name, description, 1000.0)
    queries = [
        "a",
        "ng",
        "nginx",
        "nginx1",
        "api",
        "ap",
        "web-1",
        "redis3/",
        "STRASSE",
        "ünï",
        "100%",
        "a_b",
        "x/y",
        "zzz",
        "server tools",
        "s",
        "/",
        "-12",
        "alpine0/nginx-",
        "",
    ]
    queries += [n[rnd.randint(0, 3) : rnd.randint(5, 12)] for n in rnd.sample(list(repos), 15)]
    for q in queries:
        expected = _reference(repos, q)
        first = index.search(SearchQuery(q, 100, 1))
        assert first[0] == len(expected), q
        got: list[str] = []
        for page in range(1, 200):
            rows = index.search(SearchQuery(q, 41, page))[1]
            if not rows:
                break
            got += [name for name, _ in rows]
        assert got == expected, q


def test_the_schema_has_the_indexes_searches_rely_on(index: Index) -> None:
    inspector = sa.inspect(index.engine)
    assert "repositories_visible_names" in {i["name"] for i in inspector.get_indexes("repositories")}
    with index.engine.connect() as conn:
        if index.engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("SELECT count(*) FROM sqlite_master WHERE name = 'repository_text'").scalar() == 1
        else:
            trigram = conn.execute(sa.text("SELECT count(*) FROM pg_indexes WHERE indexname LIKE :p"), {"p": "%trgm"}).scalar()
            assert trigram == 2
