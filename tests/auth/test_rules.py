"""Access rules: first match wins, intersections, account and group patterns, ${account}, the
default, the sample file, errors that name the rule, and reloading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from services.auth import rules
from services.auth.scopes import Scope, parse
from tests.support.processes import ROOT


def grant(ruleset: rules.Rules, account: str, *scopes: str, groups: tuple[str, ...] = ()) -> dict[str, set[str]]:
    return {f"{s.type}:{s.name}": set(s.actions) for s in ruleset.grant(account, groups, parse(scopes))}


def ruleset(text: str) -> rules.Rules:
    return rules.parse(yaml.safe_load(text))


def test_first_matching_rule_decides_even_if_a_later_one_allows_more() -> None:
    r = ruleset("""
- {account: alice, name: "lib/*", actions: [pull]}
- {account: "*", name: "*", actions: ["*"]}
""")
    assert grant(r, "alice", "repository:lib/x:pull,push") == {"repository:lib/x": {"pull"}}
    assert grant(r, "alice", "repository:other:pull,push") == {"repository:other": {"pull", "push"}}
    assert grant(r, "bob", "repository:lib/x:pull,push,delete") == {"repository:lib/x": {"pull", "push", "delete"}}


def test_a_rule_for_the_account_but_another_resource_does_not_stop_the_search() -> None:
    r = ruleset("""
- {account: alice, name: "mine/*", actions: [push]}
- {account: alice, name: "*", actions: [pull]}
""")
    assert grant(r, "alice", "repository:mine/a:pull,push", "repository:x:pull,push") == {
        "repository:mine/a": {"push"},
        "repository:x": {"pull"},
    }


def test_anonymous_and_star() -> None:
    r = ruleset("""
- {account: anonymous, name: "anon/*", actions: [pull]}
- {account: "*", name: "users/*", actions: [pull]}
- {account: [anonymous, "*"], name: "all/*", actions: [pull]}
""")
    scopes = ("repository:anon/a:pull", "repository:users/a:pull", "repository:all/a:pull")
    assert grant(r, "", *scopes) == {"repository:anon/a": {"pull"}, "repository:users/a": set(), "repository:all/a": {"pull"}}
    assert grant(r, "bob", *scopes) == {"repository:anon/a": set(), "repository:users/a": {"pull"}, "repository:all/a": {"pull"}}


def test_group_patterns() -> None:
    r = ruleset("""
- {account: "group:team-*", name: "teams/*", actions: [pull, push]}
- {account: group:admins, name: "*", actions: ["*"]}
""")
    assert grant(r, "a", "repository:teams/x:push", groups=("team-red",)) == {"repository:teams/x": {"push"}}
    assert grant(r, "a", "repository:teams/x:push", groups=("teamless",)) == {"repository:teams/x": set()}
    assert grant(r, "a", "repository:teams/x:delete", groups=("admins",)) == {"repository:teams/x": {"delete"}}
    assert grant(r, "", "repository:teams/x:pull", groups=("admins",)) == {"repository:teams/x": set()}


def test_account_expansion_is_literal() -> None:
    r = ruleset('- {account: "*", name: "${account}/*", actions: [pull, push]}\n')
    assert grant(r, "alice", "repository:alice/x/y:push") == {"repository:alice/x/y": {"push"}}
    assert grant(r, "alice", "repository:alicex/y:push", "repository:alice:push") == {
        "repository:alicex/y": set(),
        "repository:alice": set(),
    }
    # An htpasswd account named with glob characters matches only itself.
    assert grant(r, "a*", "repository:abc/x:pull") == {"repository:abc/x": set()}
    assert grant(r, "", "repository:x/y:pull") == {"repository:x/y": set()}  # never for anonymous


def test_types_and_catalog() -> None:
    r = ruleset("""
- {account: "*", type: registry, name: catalog, actions: ["*"]}
- {account: "*", name: "*", actions: [pull]}
""")
    assert grant(r, "a", "registry:catalog:*", "repository:catalog:pull,push") == {
        "registry:catalog": {"*"},
        "repository:catalog": {"pull"},
    }
    assert grant(r, "a", "unknowntype:thing:pull") == {"unknowntype:thing": set()}


def test_star_in_a_rule_allows_any_action_but_listed_actions_are_exact() -> None:
    r = ruleset('- {account: "*", name: "*", actions: [pull, push]}\n')
    assert grant(r, "a", "repository:x:pull,push,delete,*") == {"repository:x": {"pull", "push"}}


def test_default_rules_are_admins_only() -> None:
    r = rules.DEFAULT
    assert grant(r, "root", "repository:x:pull,push,delete", "registry:catalog:*", groups=("admins",)) == {
        "repository:x": {"pull", "push", "delete"},
        "registry:catalog": {"*"},
    }
    assert grant(r, "alice", "repository:alice/x:pull", "registry:catalog:*") == {"repository:alice/x": set(), "registry:catalog": set()}
    assert grant(r, "", "repository:x:pull") == {"repository:x": set()}
    assert rules.RuleFile("").current() is rules.DEFAULT


def test_sample_rules_file() -> None:
    r = rules.RuleFile(str(ROOT / "config" / "auth_rules_sample.yml")).current()
    assert grant(r, "alice", "repository:alice/app:push", "repository:public/x:pull,push", "repository:ci/b:push") == {
        "repository:alice/app": {"push"},
        "repository:public/x": {"pull"},
        "repository:ci/b": set(),
    }
    assert grant(r, "bot", "repository:ci/b:push", groups=("ci",)) == {"repository:ci/b": {"push"}}
    assert grant(r, "", "repository:public/x:pull", "registry:catalog:*") == {"repository:public/x": {"pull"}, "registry:catalog": set()}


@pytest.mark.parametrize(
    "text,message",
    [
        ("{a: 1}", "expected a list of rules"),
        ("- just a string", r"rules\[0\]: a rule is a mapping"),
        ('- {account: "*", name: x, actions: [pull], acount: y}', r"rules\[0\]: unknown key 'acount'"),
        ('- {account: "*", actions: [pull]}', r"rules\[0\]: 'name' is required"),
        (
            '- {account: "*", name: x, actions: [pull]}\n- {account: "*", name: x, actions: [fly]}',
            r"rules\[1\]\.actions: unknown action 'fly'",
        ),
        ('- {account: "*", name: x, type: namespace, actions: [pull]}', r"rules\[0\]\.type"),
        ("- {account: [], name: x, actions: [pull]}", r"rules\[0\]\.account"),
        ('- {account: "group:", name: x, actions: [pull]}', r"rules\[0\]\.account: 'group:' needs"),
        ('- {account: "*", name: "${user}/*", actions: [pull]}', r"rules\[0\]\.name: only \$\{account\}"),
        ('- {account: "*", name: "", actions: [pull]}', r"rules\[0\]\.name"),
    ],
)
def test_errors_name_the_rule_and_key(text: str, message: str) -> None:
    with pytest.raises(rules.RulesError, match=message):
        rules.parse(yaml.safe_load(text), "rules")


def test_mapping_form_and_empty_file() -> None:
    assert len(rules.parse({"rules": [{"account": "*", "name": "*", "actions": ["pull"]}]}).rules) == 1
    assert rules.parse(None).rules == ()


def test_rule_file_is_reloaded_and_a_broken_edit_keeps_the_old_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text('- {account: "*", name: "*", actions: [pull]}\n')
    rule_file = rules.RuleFile(str(path))
    assert grant(rule_file.current(), "a", "repository:x:pull,push") == {"repository:x": {"pull"}}
    path.write_text('- {account: "*", name: "*", actions: [pull, push]}\n')
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse clocks
    assert grant(rule_file.current(), "a", "repository:x:pull,push") == {"repository:x": {"pull", "push"}}
    path.write_text("- {account: [broken\n")
    assert grant(rule_file.current(), "a", "repository:x:pull,push") == {"repository:x": {"pull", "push"}}


def test_unusable_rule_file_at_startup(tmp_path: Path) -> None:
    with pytest.raises(rules.RulesError, match="cannot read"):
        rules.RuleFile(str(tmp_path / "missing.yml"))
    (tmp_path / "bad.yml").write_text("- {account: [broken\n")
    with pytest.raises(rules.RulesError, match="not valid YAML"):
        rules.RuleFile(str(tmp_path / "bad.yml"))


def test_granted_scopes_keep_the_request_order() -> None:
    r = ruleset('- {account: "*", name: "*", actions: ["*"]}\n')
    granted = r.grant("a", (), parse(["repository:b:push,pull", "repository:a:pull"]))
    assert granted == [Scope("repository", "b", ("push", "pull")), Scope("repository", "a", ("pull",))]
