"""The scope grammar: type from the left, actions from the right, names with a host:port."""

from __future__ import annotations

import pytest

from services.auth.scopes import (
    MAX_SCOPE_LENGTH,
    MAX_SCOPES,
    Scope,
    parse,
    parse_one,
    scope_string,
)
from services.common.errors import RegistryError


@pytest.mark.parametrize(
    "text,expected",
    [
        ("repository:samalba/my-app:pull,push", Scope("repository", "samalba/my-app", ("pull", "push"))),
        ("repository:a:pull,pull,push", Scope("repository", "a", ("pull", "push"))),
        ("repository:localhost:5000/a/b:pull", Scope("repository", "localhost:5000/a/b", ("pull",))),
        ("repository:Registry.Example.com:443/x:push", Scope("repository", "Registry.Example.com:443/x", ("push",))),
        ("repository(plugin):vieux/sshfs:pull", Scope("repository", "vieux/sshfs", ("pull",))),
        ("registry:catalog:*", Scope("registry", "catalog", ("*",))),
        ("repository:a__b.c--d/e_f:delete", Scope("repository", "a__b.c--d/e_f", ("delete",))),
        ("repository:a:", Scope("repository", "a", ())),
        ("repository:a:,pull,", Scope("repository", "a", ("pull",))),
        ("repository:a:metadata*", Scope("repository", "a", ("metadata*",))),
    ],
)
def test_valid(text: str, expected: Scope) -> None:
    assert parse_one(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "repository",
        "repository:a",
        "repository::pull",
        ":a:pull",
        "Repository:a:pull",
        "repo-sitory:a:pull",
        "repository(:a:pull",
        "repository()",
        "repository:a/:pull",
        "repository:/a:pull",
        "repository:a//b:pull",
        "repository:a:Pull",
        "repository:a:pull push",
        "repository:a.:pull",
        "repository:-a:pull",
        "repository:a:pu-ll",
        "repository:host:port/a:pull",
        "repository:a:b:c:pull",
        "repository:a\t:pull",
        "repository:é:pull",
        "x" * (MAX_SCOPE_LENGTH + 1),
    ],
)
def test_invalid(text: str) -> None:
    with pytest.raises(RegistryError) as caught:
        parse_one(text)
    assert caught.value.code.name == "SCOPE_INVALID" and caught.value.status == 400
    assert len(caught.value.detail or "") < 200  # the echo of the input is bounded


def test_parameters_and_spaces_merge() -> None:
    scopes = parse(["repository:a:pull  repository:b:push", "repository:a:push,pull", "", "registry:catalog:*"])
    assert scopes == [Scope("repository", "a", ("pull", "push")), Scope("repository", "b", ("push",)), Scope("registry", "catalog", ("*",))]


def test_the_count_is_capped_after_splitting() -> None:
    assert len(parse([" ".join(f"repository:r{i}:pull" for i in range(MAX_SCOPES))])) == MAX_SCOPES
    with pytest.raises(RegistryError, match="more than"):
        parse([f"repository:r{i}:pull" for i in range(MAX_SCOPES + 1)])


def test_scope_string_lists_granted_scopes_only() -> None:
    granted = [Scope("repository", "a", ("pull", "push")), Scope("repository", "b", ()), Scope("registry", "catalog", ("*",))]
    assert scope_string(granted) == "repository:a:pull,push registry:catalog:*"
    assert granted[0].as_claim() == {"type": "repository", "name": "a", "actions": ["pull", "push"]}
