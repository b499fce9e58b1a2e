"""The key-by-key tables of docs/migrating.md, generated from the dialect tables and defaults.yml.

    python -m services.common.config.reference           rewrite the tables in docs/migrating.md
    python -m services.common.config.reference --check   exit 1 if they differ from the code

The tests run the check, so the document cannot drift from the translation.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

from services.common.config import classic, registry2
from services.common.config.loader import BUILT_IN, pick_flavor
from services.common.config.translation import Key, walk

DOC = Path(__file__).resolve().parents[3] / "docs" / "migrating.md"
_WHAT = {
    "same": "same key in Berth",
    "renamed": "moved to",
    "converted": "converted to",
    "warned": "accepted, warning at start",
    "refused": "refused: start stops (exit 2)",
}


def key_table(keys: Iterable[Key]) -> str:
    rows = ["| key | Berth | what Berth does |", "|---|---|---|"]
    for key in keys:
        target = f"`{key.target}`" if key.target else ""
        what = _WHAT[key.treatment] + (f" {target}" if target and key.treatment in ("renamed", "converted") else "")
        if key.treatment == "same":
            target = f"`{key.target}`"
            what = _WHAT["same"]
        note = f": {key.note}" if key.note else ""
        rows.append(f"| `{key.source}` | {target} | {what}{note} |")
    return "\n".join(rows)


def variable_table() -> str:
    """Each variable defaults.yml reads: the classic key it sets, and its default in each flavor."""
    document = yaml.safe_load(BUILT_IN.read_text())
    keys: dict[str, list[str]] = {}
    defaults: dict[str, dict[str, str]] = {}
    for flavor in (f for f in document if f != "common"):
        for key, value in walk(pick_flavor(document, flavor, explicit=True)):
            text = str(value)
            while match := re.fullmatch(r"_env:([A-Z0-9_]+)(?::(.*))?", text):
                var, text = match.group(1), match.group(2) or ""
                keys.setdefault(var, [])
                if key not in keys[var]:
                    keys[var].append(key)
                defaults.setdefault(var, {})[flavor] = "" if text.startswith("_env:") else text
    rows = ["| variable | classic key | flavors: default |", "|---|---|---|"]
    for var, by_flavor in defaults.items():
        values = set(by_flavor.values())
        if len(by_flavor) == len(document) - 1 and len(values) == 1:
            shown = f"all: `{values.pop()}`" if by_flavor[next(iter(by_flavor))] else "all: (unset)"
        else:
            shown = "; ".join(f"{f}: `{d}`" if d else f"{f}: (unset)" for f, d in by_flavor.items())
        rows.append(f"| `{var}` | {', '.join(f'`{k}`' for k in keys[var])} | {shown} |")
    return "\n".join(rows)


SECTIONS: dict[str, Callable[[], str]] = {
    "classic-keys": lambda: key_table(classic.KEYS),
    "classic-variables": variable_table,
    "registry2-keys": lambda: key_table(registry2.KEYS),
}


def render(text: str) -> str:
    """``text`` with every generated section replaced by what the code says now."""
    for name, build in SECTIONS.items():
        begin, end = f"<!-- generated: {name} -->", f"<!-- end: {name} -->"
        if begin not in text or end not in text:
            raise ValueError(f"{DOC}: markers for {name} are missing")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{build()}\n{end}{tail}"
    return text


def main(argv: list[str]) -> int:
    current = DOC.read_text()
    wanted = render(current)
    if "--check" in argv:
        if current != wanted:
            print(f"{DOC} is out of date: run python -m services.common.config.reference", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
