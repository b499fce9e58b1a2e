"""The image and the docker-compose deployment: the Dockerfile's shape, and what
`docker-compose config` renders from compose/docker-compose.yml (alone and with the S3 override),
checked for consistency and against Berth's own configuration loader.

The compose command is `docker-compose` (Debian's 1.29), or $DOCKER_COMPOSE (e.g.
"docker compose"); the tests that need it are skipped, saying so, when it is not installed.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from services.common import config, search_security
from services.gateway.events import configured_endpoints
from tests.deploy.support import (
    BERTH_SERVICES,
    COMPOSE_DIR,
    DOCKERFILE,
    ROOT,
    dockerfile_stages,
    dockerignore_excludes,
    host_of,
    listen_addresses,
    port_of,
    stage_variables,
    substitute,
    tool,
)

BASE = COMPOSE_DIR / "docker-compose.yml"
S3 = COMPOSE_DIR / "docker-compose.s3.yml"
# The secrets .env.example asks for; fake, for rendering only.
REQUIRED_ENV = {
    "BERTH_HTTP_SECRET": "fake-http-secret-for-tests",
    "BERTH_BLOBSTORE_TOKEN": "fake-blobstore-token-for-tests",
    "POSTGRES_PASSWORD": "fake-postgres-password",
}
S3_ENV = {"MINIO_ROOT_PASSWORD": "fake-minio-password"}
VARIANTS = {"filesystem": ([BASE], REQUIRED_ENV), "s3": ([BASE, S3], {**REQUIRED_ENV, **S3_ENV})}


def compose_command() -> list[str]:
    command = tool("DOCKER_COMPOSE", "docker-compose")
    if command is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose, or set DOCKER_COMPOSE)")
    return command


def run_config(files: list[Path], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # An empty env file: a developer's compose/.env must not change what the test sees.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    args = [*compose_command(), "--env-file", str(empty)]
    for path in files:
        args += ["-f", str(path)]
    clean_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), **env}
    return subprocess.run([*args, "config"], env=clean_env, cwd=COMPOSE_DIR, check=False, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    files, env = VARIANTS[request.param]
    result = run_config(files, env, tmp_path_factory.mktemp("compose"))
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return request.param, yaml.safe_load(result.stdout)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """Volumes in one shape, whichever form the compose version printed (short or long)."""
    out = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            mode = parts[2] if len(parts) > 2 else "rw"
            out.append({"source": parts[0], "target": parts[1], "read_only": "ro" in mode.split(",")})
        else:
            out.append({"source": volume.get("source", ""), "target": volume["target"], "read_only": bool(volume.get("read_only"))})
    return out


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def one_shots(services: dict[str, Any]) -> set[str]:
    """Services others wait for to finish (service_completed_successfully): jobs, not servers."""
    return {
        name
        for service in services.values()
        for name, condition in depends_on(service).items()
        if condition == "service_completed_successfully"
    }


def config_mount(service: dict[str, Any]) -> dict[str, Any]:
    target = environment(service)["DOCKER_REGISTRY_CONFIG"]
    found = [m for m in mounts(service) if m["target"] == target]
    assert found, f"nothing mounted at DOCKER_REGISTRY_CONFIG={target}"
    return found[0]


def settings_of(service: dict[str, Any]) -> config.Settings:
    """The service's configuration as Berth would load it inside the container: the mounted file
    (its source on this machine) with exactly the container's environment."""
    source = Path(config_mount(service)["source"])
    return config.load(source, environ=environment(service))


def healthcheck_url(service: dict[str, Any]) -> str | None:
    test = service["healthcheck"]["test"]
    text = test if isinstance(test, str) else " ".join(test)
    found = re.search(r"https?://[^'\" ]+", text)
    return found.group(0) if found else None


# --- the Dockerfile ------------------------------------------------------------------------------


def test_the_image_runs_as_a_fixed_non_root_user() -> None:
    _, stages = dockerfile_stages()
    runtime = stages[-1]
    users = [substitute(rest, stage_variables(runtime)) for keyword, rest in runtime.instructions if keyword == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit() and int(user) >= 1000, f"USER {users[-1]}"


def test_the_image_is_multi_stage_on_python_slim_with_an_entrypoint_per_service() -> None:
    _, stages = dockerfile_stages()
    assert len(stages) >= 2
    builder, runtime = stages[0], stages[-1]
    assert runtime.base.startswith("python:3.11-slim"), runtime.base
    assert builder.base == runtime.base, "the virtualenv's interpreter must be the same in both stages"
    instructions = dict(runtime.instructions)
    assert json.loads(instructions["ENTRYPOINT"]) == ["berth"]
    assert json.loads(instructions["CMD"]) == ["run"]
    assert json.loads(instructions["VOLUME"]) == ["/var/lib/berth"]
    assert {5000, 5001, 5002, 5003, 5004} <= {int(p.split("/")[0]) for p in instructions["EXPOSE"].split()}
    # The runtime stage installs nothing: it only copies the builder's virtualenv (no compiler,
    # no pip download, no test dependencies).
    runs = " ".join(rest for keyword, rest in runtime.instructions if keyword == "RUN")
    assert "pip" not in runs and "apt-get" not in runs
    copies = [rest for keyword, rest in runtime.instructions if keyword == "COPY"]
    assert any(c.startswith("--from=builder ") for c in copies)
    assert "[test]" not in DOCKERFILE.read_text()


def test_the_image_generates_the_grpc_code_as_make_does() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"\$\(PY\) (-m grpc_tools\.protoc .*) \$\(PROTOS\)", makefile)
    assert recipe, "the Makefile's protoc recipe moved; update this test"
    builder = dockerfile_stages()[1][0]
    runs = " ".join(rest for keyword, rest in builder.instructions if keyword == "RUN")
    assert f"python {recipe.group(1)} protos/*.proto" in runs


def test_the_build_context_holds_what_the_dockerfile_copies_and_no_generated_code() -> None:
    _, stages = dockerfile_stages()
    for stage in stages:
        for keyword, rest in stage.instructions:
            if keyword != "COPY" or rest.startswith("--from="):
                continue
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert not dockerignore_excludes(source.rstrip("/")), f"COPY {source}: excluded by .dockerignore"
    for path in ("services/cli/__main__.py", "protos/blobstore.proto", "pyproject.toml"):
        assert not dockerignore_excludes(path), path
    for path in (
        ".venv/bin/python",
        ".git/config",
        "data/registry/x",
        "tests/conftest.py",
        "compose/.env",
        "services/common/rpc/blobstore_pb2.py",
        "services/common/__pycache__/config.cpython-311.pyc",
    ):
        assert dockerignore_excludes(path), f"{path} would be sent to the Docker daemon"


def test_the_image_configuration_loads() -> None:
    """compose/standalone.yml, baked into the image for `berth run`: valid with no environment,
    and the gateway reachable from outside the container."""
    settings = config.load(COMPOSE_DIR / "standalone.yml", environ={})
    assert host_of(settings.http.addr) == "0.0.0.0"
    assert settings.blobstore.effective_security == "none"  # everything else stays on loopback
    for path in (settings.storage.filesystem.rootdirectory, settings.token_service.key):
        assert path.startswith("/var/lib/berth/"), path


# --- docker-compose ------------------------------------------------------------------------------


def test_compose_config_refuses_to_render_without_the_secrets(tmp_path: Path) -> None:
    result = run_config([BASE], {}, tmp_path)
    assert result.returncode != 0
    assert "BERTH_HTTP_SECRET" in result.stderr or "BERTH_BLOBSTORE_TOKEN" in result.stderr or "POSTGRES_PASSWORD" in result.stderr
    result = run_config([BASE, S3], REQUIRED_ENV, tmp_path)
    assert result.returncode != 0 and "MINIO_ROOT_PASSWORD" in result.stderr


def test_every_service_restarts_and_every_server_has_a_healthcheck(rendered: tuple[str, dict[str, Any]]) -> None:
    _, doc = rendered
    services = doc["services"]
    assert set(BERTH_SERVICES) | {"redis", "postgres"} <= set(services)
    jobs = one_shots(services)
    for name, service in services.items():
        assert service.get("restart") in ("unless-stopped", "always", "on-failure"), f"{name}: restart policy"
        if name in jobs:
            assert service["restart"] == "on-failure", f"{name} is a one-shot job"
            continue
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name}: no healthcheck"


def test_depends_on_targets_exist_and_wait_for_health(rendered: tuple[str, dict[str, Any]]) -> None:
    _, doc = rendered
    services = doc["services"]
    jobs = one_shots(services)
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            wanted = "service_completed_successfully" if target in jobs else "service_healthy"
            assert condition == wanted, f"{name} -> {target}: {condition}"
    assert {"blobstore", "auth", "search", "redis"} <= set(depends_on(services["gateway"]))
    assert "postgres" in depends_on(services["auth"]) and "postgres" in depends_on(services["search"])


def test_berth_services_share_one_image_and_one_config_file(rendered: tuple[str, dict[str, Any]]) -> None:
    _, doc = rendered
    services = doc["services"]
    images = {services[name]["image"] for name in BERTH_SERVICES}
    assert len(images) == 1, images
    targets, sources = set(), set()
    for name in BERTH_SERVICES:
        service = services[name]
        build = service.get("build")
        assert build, f"{name}: no build section (docker-compose up --build must be able to make the image)"
        context = Path(build["context"] if isinstance(build, dict) else build)
        assert (
            context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
        ).resolve() == DOCKERFILE.resolve()
        assert service["command"] in ([name], name), f"{name}: command {service['command']}"
        mount = config_mount(service)
        assert mount["read_only"], f"{name}: the config file must be mounted read-only"
        targets.add(mount["target"])
        sources.add(Path(mount["source"]).resolve())
    assert targets == {"/etc/berth/berth.yml"}
    assert sources == {(COMPOSE_DIR / "berth.yml").resolve()}


def test_named_volumes_hold_the_data(rendered: tuple[str, dict[str, Any]]) -> None:
    _, doc = rendered
    services = doc["services"]
    declared = set(doc.get("volumes") or {})
    for name, service in services.items():
        for mount in mounts(service):
            if not mount["source"].startswith(("/", ".")):
                assert mount["source"] in declared, f"{name}: volume {mount['source']} is not declared"
    by_target = {m["target"]: m["source"] for m in mounts(services["blobstore"])}
    storage = settings_of(services["blobstore"]).storage
    if storage.driver == "filesystem":
        assert by_target.get(storage.filesystem.rootdirectory) in declared, "blob storage must be a named volume"
    auth = settings_of(services["auth"])
    key_dir = str(Path(auth.token_service.key).parent)
    assert {m["target"]: m["source"] for m in mounts(services["auth"])}.get(key_dir) in declared
    assert any(m["target"] == "/var/lib/postgresql/data" and m["source"] in declared for m in mounts(services["postgres"]))


def test_each_berth_service_loads_its_configuration_and_listens_where_it_is_checked(rendered: tuple[str, dict[str, Any]]) -> None:
    variant, doc = rendered
    services = doc["services"]
    for name in BERTH_SERVICES:
        service = services[name]
        try:
            settings = settings_of(service)
        except config.ConfigError as exc:
            pytest.fail(f"{name}: compose/berth.yml does not load with its environment: {exc}")
        addrs = listen_addresses(name, settings)
        for role, addr in addrs.items():
            assert host_of(addr) == "0.0.0.0", f"{name} {role} listens on {addr}: unreachable from other containers"
        url = healthcheck_url(service)
        assert url, f"{name}: the healthcheck asks no URL"
        assert urlsplit(url).path in ("/_ready", "/_ping"), url
        assert urlsplit(url).port == port_of(addrs["http"]), f"{name}: healthcheck {url} but HTTP on {addrs['http']}"
    gateway = settings_of(services["gateway"])
    blobstore = settings_of(services["blobstore"])
    # Gateways and blobstores agree on how gateways prove themselves.
    assert gateway.blobstore.effective_security == blobstore.blobstore.effective_security == "token"
    assert gateway.blobstore.token == blobstore.blobstore.token == REQUIRED_ENV["BERTH_BLOBSTORE_TOKEN"]
    assert gateway.http.secret == REQUIRED_ENV["BERTH_HTTP_SECRET"]
    # The gateway reaches the other services by their compose names and configured ports.
    target_host, target_port = host_of(gateway.blobstore.connect_to), port_of(gateway.blobstore.connect_to)
    assert target_host == "blobstore" and target_port == port_of(blobstore.blobstore.addr)
    search = settings_of(services["search"])
    assert urlsplit(gateway.search.base_url).hostname == "search"
    assert urlsplit(gateway.search.base_url).port == port_of(search.search.addr)
    # The search service, beyond loopback, asks POST /events for the token the gateway sends.
    assert search.search.effective_security == "token"
    assert search_security.required_token(search) == REQUIRED_ENV["BERTH_BLOBSTORE_TOKEN"]
    sent = next(e for e in configured_endpoints(gateway) if e.url == f"{gateway.search.base_url}/events")
    assert sent.headers == {"Authorization": [f"Bearer {REQUIRED_ENV['BERTH_BLOBSTORE_TOKEN']}"]}
    auth = settings_of(services["auth"])
    assert gateway.auth.type == "token"
    assert urlsplit(gateway.auth.token.jwks).hostname == "auth"
    assert urlsplit(gateway.auth.token.jwks).port == port_of(auth.token_service.addr)
    assert gateway.auth.token.issuer == auth.token_service.issuer
    assert gateway.auth.token.service in auth.token_service.services
    # PostgreSQL for users and the search index, with the password .env gives.
    for database in (auth.token_service.database, search.search.database):
        assert database.startswith("postgresql") and "@postgres:5432/" in database
        assert REQUIRED_ENV["POSTGRES_PASSWORD"] in database
    assert gateway.cache_lru.host == "redis" and auth.cache.host == "redis"
    # Published ports are the ones the services listen on.
    for name, role in (("gateway", "http"), ("auth", "http")):
        published = services[name].get("ports") or []
        container_ports = {int(str(p["target"] if isinstance(p, dict) else p.split(":")[-1]).split("/")[0]) for p in published}
        assert port_of(listen_addresses(name, settings_of(services[name]))[role]) in container_ports, name
    if variant == "s3":
        assert blobstore.storage.driver == "s3" and blobstore.storage.s3.bucket
        assert blobstore.storage.s3.regionendpoint.startswith("http://minio:")
        assert gateway.storage_redirect is True
        assert "minio" in services and "minio-bucket" in one_shots(services)
    else:
        assert blobstore.storage.driver == "filesystem"


def test_the_env_example_lists_every_required_variable() -> None:
    example = (COMPOSE_DIR / ".env.example").read_text()
    required = set()
    for path in (BASE, S3):
        required |= set(re.findall(r"\$\{(\w+):\?", path.read_text()))
    assert required == set(REQUIRED_ENV) | set(S3_ENV)
    for name in required:
        assert re.search(rf"^{name}=$", example, re.MULTILINE), f".env.example lacks {name}= (left empty: no secret committed)"
