"""Which Ingresses are served (Ingress docs: "Ingress class", "Default IngressClass", "Deprecated
annotation"), default backends ("Default backend", "DefaultBackend"), and how a Service becomes
instances (EndpointSlice API: "Conditions"; Services: "Port definitions", "ExternalName").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from portway.kubernetes.objects import CONTROLLER
from tests.e2e.gateway import GatewayThread
from tests.support.client import request
from tests.unit.kubernetes.manifests import (
    backend,
    backend_service,
    build,
    endpoint,
    endpoint_slice,
    ingress,
    instances,
    issues_about,
    path,
    pick,
    rule,
    service,
    write,
)


def ingress_class(name: str, controller: str = CONTROLLER, default: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if default:
        meta["annotations"] = {"ingressclass.kubernetes.io/is-default-class": "true"}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": meta,
            "spec": {"controller": controller}}  # fmt: skip


def served_hosts(folder: Path, **options: Any) -> set[str]:
    config, _ = build(folder, **options)
    return {host for route in config.routes for host in route.hosts}


def test_the_four_ways_an_ingress_is_ours_and_other_classes_are_ignored(tmp_path: Path) -> None:
    legacy = {"kubernetes.io/ingress.class": "edge"}
    folder = write(
        tmp_path / "m",
        ingress_class("edge"),  # controller portway.io/ingress-controller, another name
        ingress_class("nginx", controller="k8s.io/ingress-nginx", default=True),
        ingress("by-name", rule("a.example.com", path("/", "a")), cls="portway"),
        ingress("by-class", rule("b.example.com", path("/", "b")), cls="edge"),
        ingress("by-annotation", rule("c.example.com", path("/", "c")), cls=None,
                annotations=legacy),
        ingress("classless", rule("d.example.com", path("/", "d")), cls=None),
        ingress("theirs", rule("e.example.com", path("/", "e")), cls="nginx"),
    )  # fmt: skip
    # The default class is nginx's: the class-less Ingress is not Portway's.
    assert served_hosts(folder) == {"a.example.com", "b.example.com", "c.example.com"}
    write(folder, ingress_class("edge-default", default=True), name="z-default.yaml")
    config, report = build(folder)
    assert len(issues_about(report, "is-default-class", kind="IngressClass")) == 2
    assert "d.example.com" not in {host for route in config.routes for host in route.hosts}
    write(tmp_path / "n", ingress_class("edge", default=True),
          ingress("classless", rule("d.example.com", path("/", "d")), cls=None))  # fmt: skip
    assert served_hosts(tmp_path / "n") == {"d.example.com"}  # the default class is ours


def test_a_class_named_like_ours_but_of_another_controller_wins(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "m",
        ingress_class("portway", controller="example.com/other"),
        ingress("x", rule("a.example.com", path("/", "a"))),
    )
    assert served_hosts(folder) == set()
    assert served_hosts(folder, ingress_class="other-name") == set()


def test_default_backends_per_ingress_and_controller_wide(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "m",
        ingress("shop", rule("shop.example.com", path("/api", "api")), default=backend("shop-home"),
                created="2024-02-01T00:00:00Z"),
        ingress("fallback", default=backend("catch"), created="2024-01-01T00:00:00Z"),
        ingress("late", default=backend("late"), created="2024-03-01T00:00:00Z"),
    )  # fmt: skip
    config, report = build(folder, default_backend="ops/errors:8080")
    assert pick(config, "shop.example.com/api/x") == "default.api.80"
    assert pick(config, "shop.example.com/other") == "default.shop-home.80"  # its own hosts
    assert pick(config, "elsewhere.example.com/") == "default.catch.80"  # the oldest catch-all
    assert issues_about(report, "spec.defaultBackend", name="default/late")
    assert "ops.errors.8080" not in config.services  # Ingresses took the catch-all
    config, _ = build(write(tmp_path / "n", ingress("only", rule("a.example.com", path("/a", "a")))),
                      default_backend="ops/errors:8080")  # fmt: skip
    assert pick(config, "other.example.com/x") == "ops.errors.8080"


def test_missing_service_or_port_answers_503_and_is_reported(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "m",
        service("web", ports=[{"name": "http", "port": 80}]),
        ingress("x", rule(None, path("/gone", "gone"), path("/port", "web", port=81),
                          path("/named", "web", port="https"))),
    )  # fmt: skip
    config, report = build(folder, listen=("127.0.0.1:0",))
    assert instances(config, "default.gone.80") == []
    assert instances(config, "default.web.81") == []
    messages = [i.message for i in issues_about(report, "backend.service", severity="warning")]
    assert messages == [
        "Service default/gone not found: requests answer 503",
        "Service default/web has no port 81 (ports: http): requests answer 503",
        "Service default/web has no port https (ports: http): requests answer 503",
    ]
    with GatewayThread(config) as gateway:
        response = request(gateway.port, "GET", "/gone/x")
        assert response.status == 503
        assert response.header("portway-error") == "backend_not_found"
        assert b"Service default/gone not found (a backend of Ingress" in response.body


def test_endpoint_slice_conditions_decide_who_gets_traffic(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "m",
        service("web"),
        endpoint_slice(
            "web",
            endpoint("127.0.0.1"),  # no conditions: ready
            endpoint("127.0.0.2", ready=True, serving=True, terminating=False),
            endpoint("127.0.0.3", ready=False),
            endpoint("127.0.0.4", ready=False, serving=True, terminating=True),  # draining
            endpoint("127.0.0.5", serving=False),
            name="web-a",
        ),
        endpoint_slice("web", endpoint("127.0.0.1"), endpoint("127.0.0.6"), name="web-b"),
        ingress("x", rule(None, path("/", "web"))),
    )
    config, _ = build(folder)
    assert instances(config, "default.web.80") == ["127.0.0.1:8080", "127.0.0.2:8080",
                                                  "127.0.0.6:8080"]  # fmt: skip


def test_ports_by_name_target_ports_and_endpoints_v1(tmp_path: Path) -> None:
    ports = [{"name": "http", "port": 80, "targetPort": "web"},
             {"name": "admin", "port": 9000, "targetPort": 9001}]  # fmt: skip
    endpoints_v1 = {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "legacy"},
        "subsets": [{"addresses": [{"ip": "127.0.0.7"}], "notReadyAddresses": [{"ip": "127.0.0.8"}],
                     "ports": [{"name": "http", "port": 3000}]}],
    }  # fmt: skip
    folder = write(
        tmp_path / "m",
        service("web", ports=ports),
        endpoint_slice("web", endpoint("127.0.0.1"),
                       ports=[{"name": "http", "port": 8080}, {"name": "admin", "port": 9001}]),
        service("portless", ports=[{"port": 80, "targetPort": 8081}]),
        endpoint_slice("portless", endpoint("127.0.0.2"), ports=[]),
        service("legacy", ports=[{"name": "http", "port": 80}]),
        endpoints_v1,
        ingress("x", rule(None, path("/http", "web", port="http"), path("/admin", "web", port=9000),
                          path("/portless", "portless"), path("/legacy", "legacy"))),
    )  # fmt: skip
    config, report = build(folder)
    assert instances(config, "default.web.http") == ["127.0.0.1:8080"]
    assert instances(config, "default.web.9000") == ["127.0.0.1:9001"]
    assert instances(config, "default.portless.80") == ["127.0.0.2:8081"]
    assert instances(config, "default.legacy.80") == ["127.0.0.7:3000"]
    assert not report.issues


def test_external_name_services_resolve_to_their_dns_name(tmp_path: Path) -> None:
    external = service("ext", ports=[{"name": "https", "port": 443}], type="ExternalName",
                       externalName="api.example.net")  # fmt: skip
    config, _ = build(write(tmp_path / "m", external,
                            ingress("x", rule(None, path("/", "ext", port="https")))))  # fmt: skip
    assert instances(config, "default.ext.https") == ["api.example.net:443"]


@pytest.mark.parametrize("missing", ["slice", "all"])
def test_a_service_without_endpoints_is_reported(tmp_path: Path, missing: str) -> None:
    documents = [service("web"), ingress("x", rule(None, path("/", "web")))]
    if missing == "slice":
        documents += backend_service("other", "127.0.0.1")
    config, report = build(write(tmp_path / "m", *documents))
    assert instances(config, "default.web.80") == []
    [issue] = issues_about(report, "backend.service")
    assert "has no EndpointSlice or Endpoints" in issue.message
