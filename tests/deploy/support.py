"""Helpers of the deployment tests: reading the Dockerfile and .dockerignore, finding tools, and
checking what a Berth service's configuration says about where it listens."""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from services.common.config import Settings
from tests.support.processes import ROOT

COMPOSE_DIR = ROOT / "compose"
KUBERNETES_DIR = COMPOSE_DIR / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
# The Berth services, each a `berth <name>` command of the one image.
BERTH_SERVICES = ("gateway", "blobstore", "auth", "search")


def tool(variable: str, default: str) -> list[str] | None:
    """The command named by an environment variable (may hold arguments, e.g. "docker compose"),
    else the default; None when its program is not installed."""
    command = shlex.split(os.environ.get(variable) or default)
    if not command:
        return None
    found = shutil.which(command[0])
    return [found, *command[1:]] if found else None


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def dockerfile_stages(path: Path = DOCKERFILE) -> tuple[dict[str, str], list[Stage]]:
    """(ARGs declared before the first FROM with their defaults, the stages with their
    instructions as (KEYWORD, arguments), continuation lines joined, comments dropped)."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            base = substitute(words[0], global_args)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(base, name))
        elif not stages:
            if keyword == "ARG":
                key, _, default = rest.partition("=")
                global_args[key] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return global_args, stages


def substitute(text: str, variables: dict[str, str]) -> str:
    """$VAR and ${VAR} as the Dockerfile's ARG/ENV defaults give them."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), text)


def stage_variables(stage: Stage) -> dict[str, str]:
    """ARG defaults and ENV values of a stage (the simple KEY=VALUE forms the Dockerfile uses)."""
    variables: dict[str, str] = {}
    for keyword, rest in stage.instructions:
        if keyword == "ARG":
            key, _, default = rest.partition("=")
            variables[key.strip()] = default.strip()
        elif keyword == "ENV":
            for item in shlex.split(rest):
                key, sep, value = item.partition("=")
                if sep:
                    variables[key] = substitute(value, variables)
    return variables


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match plus `**`) as a regex over slash paths."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):  # any number of folders, none included
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def dockerignore_excludes(path: str, ignore_file: Path = DOCKERIGNORE) -> bool:
    """Whether Docker leaves `path` (relative to the context root) out of the build context:
    patterns in order, the last one matching the path or one of its parent folders wins."""
    rules = []
    for raw in ignore_file.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line[1:] if negated else line).lstrip("/")
        rules.append((negated, _pattern_regex(pattern)))
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def port_of(addr: str) -> int:
    return int(addr.rpartition(":")[2])


def host_of(addr: str) -> str:
    return addr.rpartition(":")[0].strip("[]")


def listen_addresses(service: str, settings: Settings) -> dict[str, str]:
    """Where a Berth service listens, by role (the blobstore has its gRPC and its HTTP port)."""
    if service == "gateway":
        return {"http": settings.http.addr}
    if service == "blobstore":
        addrs = {"grpc": settings.blobstore.addr}
        if settings.blobstore.http_addr:
            addrs["http"] = settings.blobstore.http_addr
        return addrs
    if service == "auth":
        return {"http": settings.token_service.addr}
    if service == "search":
        return {"http": settings.search.addr}
    raise AssertionError(f"not a Berth service: {service}")


def url_host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname, url
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
