"""deploy/kubernetes/: valid for the API server (the official schemas, offline, strict: an unknown
field is an error), and least privilege: a controller session against the fake API server makes
requests that the RBAC there allows, every one, and every rule there is used by one of them (no
wildcard, no verb or resource more). The Deployment runs ``portway controller`` with arguments its
parser accepts, non-root with a read-only root filesystem, probed on the admin /healthz and
/readyz."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer
import yaml

from portway.cli import app
from portway.kubernetes.objects import CONTROLLER
from portway.kubernetes.status import Publish
from tests.support.fake_apiserver import PATH, FakeApiServer, Recorded
from tests.unit.kubernetes.cluster_support import Harness, eventually
from tests.unit.kubernetes.manifests import ingress, path, rule

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes"
MINIMUM = "1.30.0"  # the oldest Kubernetes the manifests are for (preStop sleep is GA in 1.30)
Permission = tuple[str, str, str, str, str]  # namespace ("" any), group, resource, verb, name


def documents() -> list[dict[str, Any]]:
    found = []
    for file in sorted(DEPLOY.glob("*.yaml")):
        found += [d for d in yaml.safe_load_all(file.read_text()) if d is not None]
    return found


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [d for d in documents() if d["kind"] == kind
                and (name is None or d["metadata"]["name"] == name)]  # fmt: skip
    return found


@pytest.mark.parametrize("version", [MINIMUM, kubernetes_validate.latest_version()])
def test_every_manifest_is_valid_for_the_api_server(version: str) -> None:
    kinds = []
    for document in documents():
        kubernetes_validate.validate(document, version, strict=True)
        kinds.append(document["kind"])
    assert sorted(kinds) == sorted(["Namespace", "ServiceAccount", "ClusterRole", "Role",
                                    "ClusterRoleBinding", "RoleBinding", "Deployment", "Service",
                                    "IngressClass", "PodDisruptionBudget"])  # fmt: skip


def granted() -> set[Permission]:
    permissions: set[Permission] = set()
    for kind in ("ClusterRole", "Role"):
        role = one(kind)
        namespace = role["metadata"].get("namespace", "")
        for item in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in item.get(field, []), f"{kind}: a wildcard in {field}"
            for group in item["apiGroups"]:
                for resource in item["resources"]:
                    for verb in item["verbs"]:
                        for name in item.get("resourceNames", [""]):
                            permissions.add((namespace, group, resource, verb, name))
    return permissions


def needed(request: Recorded) -> Permission:
    match = PATH.match(request.path)
    assert match is not None, request.path
    group = match["group"] or ""
    resource = match["plural"] + ("/status" if match["sub"] else "")
    named = match["name"] is not None
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
        request.method, "get" if named else ("watch" if request.query.get("watch") else "list"))
    return (match["ns"] or "", group, resource, verb, match["name"] or "")


def allowed(permission: Permission, grants: set[Permission]) -> Permission | None:
    namespace, group, resource, verb, name = permission
    for grant in grants:
        g_namespace, g_group, g_resource, g_verb, g_name = grant
        if (g_group, g_resource, g_verb) == (group, resource, verb) and \
                g_namespace in ("", namespace) and g_name in ("", name):  # fmt: skip
            return grant
    return None


def test_the_rbac_allows_exactly_what_a_controller_session_does(
    fake: FakeApiServer, tmp_path: Path
) -> None:
    args = container()["args"]
    publish = next(a.split("=", 1)[1] for a in args if a.startswith("--publish-service="))
    election = next(a.split("=", 1)[1] for a in args if a.startswith("--election-id="))
    namespace, service = publish.split("/")
    fake.apply({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": service, "namespace": namespace},
                "spec": {"ports": [{"port": 80}], "clusterIP": "127.0.0.30"}})  # fmt: skip
    fake.apply(ingress("shop", rule("shop.example.com", path("/", "web")), namespace="shop"),
               ingress("bad", rule("bad.example.com", path("/(", "web", "ImplementationSpecific")),
                       namespace="shop"))  # fmt: skip
    with Harness(fake, tmp_path, publish=Publish(service=(namespace, service)),
                 election_id=election, retry_period=0.05) as harness:  # fmt: skip
        eventually(lambda: fake.requests("POST", "/events") and fake.requests("PATCH"))
        eventually(lambda: len(fake.requests("PUT", "/leases")) >= 1)  # renewed once at least
        harness.live.stop()  # releases the Lease too
    grants = granted()
    used = set()
    for request in fake.requests():
        permission = needed(request)
        grant = allowed(permission, grants)
        assert grant is not None, f"{request.method} {request.path}: {permission} not granted"
        used.add(grant)
    assert grants - used == set(), "granted but never needed"


def container() -> dict[str, Any]:
    (found,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(found)


def test_the_deployment_runs_the_controller_hardened_and_probed() -> None:
    deployment = one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    box = container()
    assert box["command"] == ["portway"] and box["args"][0] == "controller"
    command = typer.main.get_command(app)
    commands: dict[str, Any] = command.commands  # type: ignore[attr-defined]
    context = commands["controller"].make_context("controller", list(box["args"][1:]))
    params = context.params
    assert params["admin"] == "127.0.0.1:9901" and params["state_dir"] == Path("/var/run/portway")

    assert pod["serviceAccountName"] == one("ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = box["securityContext"]
    assert security == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]}}  # fmt: skip
    mounts = {m["mountPath"] for m in box["volumeMounts"]}
    assert "/var/run/portway" in mounts  # the state directory is writable
    assert set(box["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in box["resources"]["limits"]
    for probe, endpoint in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        script = shlex.join(box[probe]["exec"]["command"])
        assert f"http://{params['admin']}{endpoint}" in script

    ports = {p["name"]: p["containerPort"] for p in box["ports"]}
    assert params["listen"] == [f"0.0.0.0:{ports['http']}"]
    assert params["listen_tls"] == f"0.0.0.0:{ports['https']}"
    service = one("Service")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"][
        "labels"].items()  # fmt: skip
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    assert params["publish_service"] == f"{service['metadata']['namespace']}/" \
        f"{service['metadata']['name']}"  # fmt: skip
    assert one("Role")["metadata"]["namespace"] == deployment["metadata"]["namespace"]


def test_two_replicas_a_disruption_budget_and_a_load_balancer() -> None:
    deployment = one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    budget = one("PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert one("Service")["spec"]["type"] == "LoadBalancer"


def test_the_ingress_class_names_portways_controller() -> None:
    assert one("IngressClass")["spec"]["controller"] == CONTROLLER
