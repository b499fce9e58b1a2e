"""The Kubernetes manifests: `kubectl kustomize compose/kubernetes` renders, and the rendered
objects refer to each other correctly (Services to pods and ports, pods to ConfigMaps, Secrets and
claims, probes to ports, autoscalers and budgets to Deployments, the Ingress to Services), and the
ConfigMap's berth.yml loads with Berth's own loader in every Berth pod's environment.

kubectl is $KUBECTL, else `kubectl` (CI may have Debian's 1.20 with kustomize v2, so the
manifests use nothing newer); skipped, saying so, when it is not installed.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from services.common import config, search_security
from services.gateway.events import configured_endpoints
from tests.deploy.support import (
    BERTH_SERVICES,
    KUBERNETES_DIR,
    host_of,
    listen_addresses,
    port_of,
    tool,
    url_host_port,
)

Obj = dict[str, Any]
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


@pytest.fixture(scope="module")
def objects() -> list[Obj]:
    kubectl = tool("KUBECTL", "kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (apt-get install kubernetes-client, or set KUBECTL)")
    result = subprocess.run([*kubectl, "kustomize", str(KUBERNETES_DIR)], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize failed:\n{result.stderr}"
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert docs, "kustomize rendered nothing"
    return docs


def of_kind(objects: list[Obj], *kinds: str) -> list[Obj]:
    return [o for o in objects if o["kind"] in kinds]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def pod_spec(workload: Obj) -> Obj:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: Obj) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"].get("labels") or {}


def containers(workload: Obj, *, init: bool = True) -> Iterator[Obj]:
    spec = pod_spec(workload)
    if init:
        yield from spec.get("initContainers") or []
    yield from spec["containers"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def workloads_selected(objects: list[Obj], selector: dict[str, str]) -> list[Obj]:
    return [w for w in of_kind(objects, *WORKLOAD_KINDS) if selects(selector, pod_labels(w))]


def port_exists(container: Obj, port: int | str) -> bool:
    return any(p.get("name") == port or p["containerPort"] == port for p in container.get("ports") or [])


def berth_workloads(objects: list[Obj]) -> dict[str, tuple[Obj, Obj]]:
    """Berth service name -> (its Deployment, its main container), found by the container's
    `berth <service>` command."""
    found = {}
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        for container in containers(workload, init=False):
            args = container.get("args") or container.get("command") or []
            if args and args[0] in BERTH_SERVICES:
                found[args[0]] = (workload, container)
    return found


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of an env value (only variables defined before it)."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def container_env(container: Obj, objects: list[Obj]) -> dict[str, str]:
    """The container's environment: literal values as written, Secret and ConfigMap values
    replaced by fake ones (the test does not trust or need the example values), $(VAR) expanded."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
        else:
            ref = item["valueFrom"].get("secretKeyRef") or item["valueFrom"].get("configMapKeyRef")
            assert ref, f"{item['name']}: unsupported valueFrom"
            env[item["name"]] = f"fake-{ref['key']}-0123456789abcdef"
    return env


def loaded_settings(workload: Obj, container: Obj, objects: list[Obj], tmp_path: Path) -> config.Settings:
    """Berth's settings as the container gets them: the ConfigMap's file at the mounted path."""
    env = container_env(container, objects)
    config_path = env.get("DOCKER_REGISTRY_CONFIG", "/etc/berth/berth.yml")
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        if config_path.startswith(mount["mountPath"].rstrip("/") + "/"):
            volume = volumes[mount["name"]]
            assert "configMap" in volume, f"{config_path} is not on a ConfigMap volume"
            key = config_path[len(mount["mountPath"].rstrip("/")) + 1 :]
            data = named(objects, "ConfigMap", volume["configMap"]["name"])["data"]
            assert key in data, f"ConfigMap {volume['configMap']['name']} has no {key}"
            path = tmp_path / f"{container['name']}-{key}"
            path.write_text(data[key])
            return config.load(path, environ=env)
    raise AssertionError(f"{container['name']}: nothing mounted at {config_path}")


# --- rendering and references --------------------------------------------------------------------


def test_renders_the_expected_objects(objects: list[Obj]) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for name in BERTH_SERVICES:
        assert ("Deployment", name) in kinds and ("Service", name) in kinds
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert {(kind, "gateway"), (kind, "blobstore")} <= kinds
    assert ("Service", "redis") in kinds and ("Service", "postgres") in kinds
    assert any(kind == "Namespace" for kind, _ in kinds)
    assert of_kind(objects, "Ingress") and of_kind(objects, "ConfigMap")
    (namespace,) = of_kind(objects, "Namespace")
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {namespace["metadata"]["name"]}


def test_services_select_pods_and_target_declared_ports(objects: list[Obj]) -> None:
    for service in of_kind(objects, "Service"):
        name = service["metadata"]["name"]
        selected = workloads_selected(objects, service["spec"].get("selector") or {})
        assert selected, f"Service {name} selects no Deployment/StatefulSet pods"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for workload in selected:
                assert any(port_exists(c, target) for c in containers(workload, init=False)), (
                    f"Service {name} targets port {target!r}, which {workload['metadata']['name']}'s pods do not declare"
                )


def test_pods_refer_only_to_rendered_configmaps_secrets_and_claims(objects: list[Obj]) -> None:
    configmaps = {o["metadata"]["name"]: o for o in of_kind(objects, "ConfigMap")}
    secrets = {o["metadata"]["name"]: o for o in of_kind(objects, "Secret")}
    claims = {o["metadata"]["name"] for o in of_kind(objects, "PersistentVolumeClaim")}
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        templates = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates") or []}
        volumes = pod_spec(workload).get("volumes") or []
        for volume in volumes:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, f"{where}: ConfigMap {volume['configMap']['name']}"
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, f"{where}: Secret {volume['secret']['secretName']}"
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, (
                    f"{where}: claim {volume['persistentVolumeClaim']['claimName']}"
                )
        declared = {v["name"] for v in volumes} | templates
        for container in containers(workload):
            for mount in container.get("volumeMounts") or []:
                assert mount["name"] in declared, f"{where}/{container['name']}: mounts unknown volume {mount['name']}"
            for item in container.get("env") or []:
                source = item.get("valueFrom") or {}
                if "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    assert ref["name"] in secrets, f"{where}: Secret {ref['name']}"
                    assert ref["key"] in (secrets[ref["name"]].get("data") or {}), f"{where}: Secret {ref['name']} lacks {ref['key']}"
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    assert ref["name"] in configmaps and ref["key"] in configmaps[ref["name"]]["data"], f"{where}: {ref}"
            for source in container.get("envFrom") or []:
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, f"{where}: Secret {source['secretRef']['name']}"
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps, f"{where}: ConfigMap {source['configMapRef']['name']}"


def test_probes_use_declared_ports_and_the_health_endpoints(objects: list[Obj]) -> None:
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        for container in containers(workload, init=False):
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert container.get("readinessProbe") and container.get("livenessProbe"), f"{where}: probes"
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(kind)
                if not probe:
                    continue
                for handler in ("httpGet", "tcpSocket", "grpc"):
                    if handler in probe:
                        assert port_exists(container, probe[handler]["port"]), f"{where} {kind}: port {probe[handler]['port']}"
                if "httpGet" in probe and workload["metadata"]["name"] in BERTH_SERVICES:
                    wanted = "/_ready" if kind == "readinessProbe" else "/_ping"
                    assert probe["httpGet"]["path"] == wanted, f"{where} {kind}: {probe['httpGet']['path']}"


def test_every_container_has_requests_and_limits(objects: list[Obj]) -> None:
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        for container in containers(workload):
            resources = container.get("resources") or {}
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(part) or {}), f"{workload['metadata']['name']}/{container['name']}: {part}"


def test_pods_run_as_non_root_on_read_only_roots(objects: list[Obj]) -> None:
    for workload in of_kind(objects, *WORKLOAD_KINDS):
        spec = pod_spec(workload)
        assert (spec.get("securityContext") or {}).get("runAsNonRoot") is True, workload["metadata"]["name"]
        assert spec.get("automountServiceAccountToken") is False, workload["metadata"]["name"]
        for container in containers(workload):
            context = container.get("securityContext") or {}
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert "ALL" in ((context.get("capabilities") or {}).get("drop") or []), where


def test_autoscalers_and_disruption_budgets_target_deployments(objects: list[Obj]) -> None:
    deployments = {o["metadata"]["name"]: o for o in of_kind(objects, "Deployment")}
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        assert hpa["apiVersion"] == "autoscaling/v2"
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["name"] in deployments, ref
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # An HPA owns the replica count: a `replicas` in the Deployment would fight it on every apply.
        assert "replicas" not in deployments[ref["name"]]["spec"], f"{ref['name']}: replicas set beside an HPA"
        for container in containers(deployments[ref["name"]], init=False):
            assert container["resources"]["requests"]["cpu"], "CPU utilization needs CPU requests"
    for pdb in of_kind(objects, "PodDisruptionBudget"):
        selected = workloads_selected(objects, pdb["spec"]["selector"]["matchLabels"])
        assert [w["metadata"]["name"] for w in selected] == [pdb["metadata"]["name"]], pdb["metadata"]["name"]
        assert selected[0]["kind"] == "Deployment"


def test_the_ingress_reaches_existing_service_ports_over_tls(objects: list[Obj]) -> None:
    services = {o["metadata"]["name"]: o for o in of_kind(objects, "Service")}
    for ingress in of_kind(objects, "Ingress"):
        hosts = set()
        for rule in ingress["spec"]["rules"]:
            hosts.add(rule["host"])
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] in services, f"Ingress backend {backend['name']}"
                ports = services[backend["name"]]["spec"]["ports"]
                wanted = backend["port"]
                assert any(p.get("name") == wanted.get("name") or p["port"] == wanted.get("number") for p in ports), backend
        tls_hosts = {h for entry in ingress["spec"]["tls"] for h in entry["hosts"]}
        assert hosts <= tls_hosts and all(entry.get("secretName") for entry in ingress["spec"]["tls"])
        assert ingress["metadata"]["annotations"].get("nginx.ingress.kubernetes.io/proxy-body-size") == "0"


def test_berth_pods_share_one_image(objects: list[Obj]) -> None:
    found = berth_workloads(objects)
    assert set(found) == set(BERTH_SERVICES)
    images = {container["image"] for _, container in found.values()}
    assert len(images) == 1, images


# --- Berth's configuration in the pods -------------------------------------------------------------


def test_the_configmap_loads_in_every_berth_pod_and_matches_the_manifests(objects: list[Obj], tmp_path: Path) -> None:
    found = berth_workloads(objects)
    settings = {}
    for name, (workload, container) in found.items():
        try:
            settings[name] = loaded_settings(workload, container, objects, tmp_path)
        except config.ConfigError as exc:
            pytest.fail(f"{name}: berth.yml does not load with the pod's environment: {exc}")
        # Listening on every interface, on ports the container declares under the names the
        # Service and the probes use.
        for role, addr in listen_addresses(name, settings[name]).items():
            assert host_of(addr) == "0.0.0.0", f"{name} listens on {addr}"
            ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
            assert ports.get(role) == port_of(addr), f"{name}: {role} on {addr}, container port {ports.get(role)}"

    services = {o["metadata"]["name"]: o for o in of_kind(objects, "Service")}

    def reachable(host: str, port: int) -> None:
        assert host in services, f"no Service {host}"
        assert port in {p["port"] for p in services[host]["spec"]["ports"]}, f"Service {host} has no port {port}"

    gateway, blobstore, auth, search = (settings[n] for n in ("gateway", "blobstore", "auth", "search"))
    # gRPC target syntax: dns:///<name>:<port>, resolved to every pod of a headless Service.
    target = gateway.blobstore.connect_to.removeprefix("dns:///")
    reachable(host_of(target), port_of(target))
    if gateway.blobstore.connect_to.startswith("dns:///"):
        assert services[host_of(target)]["spec"].get("clusterIP") == "None", "dns:/// balancing needs a headless Service"
    reachable(*url_host_port(gateway.search.base_url))
    reachable(*url_host_port(gateway.auth.token.jwks))
    reachable(*url_host_port(gateway.auth.token.authorize_url))
    reachable(*url_host_port(search.search.registry))
    reachable(gateway.cache_lru.host, gateway.cache_lru.port)
    reachable(auth.cache.host, auth.cache.port)
    for database in (auth.token_service.database, search.search.database):
        parts = urlsplit(database)
        assert parts.scheme.startswith("postgresql"), database
        reachable(parts.hostname or "", parts.port or 5432)
        assert "$(" not in database, f"unexpanded variable in {database}"

    # The shared secrets come from one Secret key each, in every pod that needs them.
    assert gateway.blobstore.effective_security == blobstore.blobstore.effective_security == "token"
    assert gateway.blobstore.token == blobstore.blobstore.token
    assert len(gateway.http.secret) >= 16
    assert auth.blobstore.effective_security == search.blobstore.effective_security == "none", (
        "auth and search never call the blobstore: they should not need its token"
    )
    # The search service, beyond loopback, asks POST /events for the token the gateways send.
    assert search.search.effective_security == "token"
    assert search_security.required_token(search) == gateway.blobstore.token
    sent = next(e for e in configured_endpoints(gateway) if e.url == f"{gateway.search.base_url}/events")
    assert sent.headers == {"Authorization": [f"Bearer {gateway.blobstore.token}"]}
    assert gateway.auth.token.issuer == auth.token_service.issuer
    assert gateway.auth.token.service in auth.token_service.services

    # What clients see: the Ingress host is the gateway's public URL and the token realm, and the
    # realm's path goes to the token service.
    ingress_paths = {
        (rule["host"], path["path"]): path["backend"]["service"]["name"]
        for ingress in of_kind(objects, "Ingress")
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    public = urlsplit(gateway.http.host)
    realm = urlsplit(gateway.auth.token.realm)
    assert public.scheme == realm.scheme == "https"
    assert ingress_paths.get((public.hostname, "/")) == "gateway"
    assert ingress_paths.get((realm.hostname, realm.path)) == "auth"

    # Storage: the filesystem root is on the shared claim, and the claim is ReadWriteMany.
    workload, container = found["blobstore"]
    if blobstore.storage.driver == "filesystem":
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volume = {v["name"]: v for v in pod_spec(workload)["volumes"]}[mounts[blobstore.storage.filesystem.rootdirectory]]
        claim = named(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
        assert "ReadWriteMany" in claim["spec"]["accessModes"]

    # The signing key: the path auth uses is where the init container puts the Secret's key.
    workload, container = found["auth"]
    key_dir = str(Path(auth.token_service.key).parent)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert key_dir in mounts, f"nothing mounted at {key_dir}"
    init = pod_spec(workload).get("initContainers") or []
    assert any(
        any(m["mountPath"] == key_dir and m["name"] == mounts[key_dir] for m in c.get("volumeMounts") or [])
        and auth.token_service.key in (c.get("command") or []) + (c.get("args") or [])
        for c in init
    ), "no init container writes the signing key where auth reads it"
