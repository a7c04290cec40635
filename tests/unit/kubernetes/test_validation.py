"""Manifests the API server would refuse are reported with file, document, object and field, and
the rest keep serving (the API server's rules: k8s.io/kubernetes pkg/apis/networking/validation,
and the Ingress reference: "IngressRule", "HTTPIngressPath", "IngressBackend")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.kubernetes.manifests import (
    backend,
    build,
    ingress,
    path,
    pick,
    rule,
    service,
    write,
)


def broken(**change: Any) -> dict[str, Any]:
    path_doc: dict[str, Any] = {**path("/", "web"), **change}
    return ingress("broken", rule("broken.example.com", {k: v for k, v in path_doc.items()
                                                       if v is not None}))  # fmt: skip


@pytest.mark.parametrize(
    ("document", "field", "message"),
    [
        (broken(pathType="Regex"), "spec.rules[0].http.paths[0].pathType", 'Unsupported value: "Regex"'),
        (broken(pathType=None), "spec.rules[0].http.paths[0].pathType", "pathType must be specified"),
        (broken(path="foo"), "spec.rules[0].http.paths[0].path", "must be an absolute path"),
        (broken(path="/a//b"), "spec.rules[0].http.paths[0].path", "must not contain '//'"),
        (broken(path="/a/.."), "spec.rules[0].http.paths[0].path", "cannot end with '/..'"),
        (broken(path="/a(", pathType="ImplementationSpecific"), "spec.rules[0].http.paths[0].path",
         "invalid regular expression"),
        (ingress("broken", rule("Bad_Host", path("/", "web"))), "spec.rules[0].host",
         "RFC 1123 subdomain"),
        (ingress("broken", rule("10.0.0.1", path("/", "web"))), "spec.rules[0].host",
         "must be a DNS name, not an IP address"),
        (ingress("broken", rule("*.*.example.com", path("/", "web"))), "spec.rules[0].host",
         "wildcard"),
        (ingress("broken", rule("a.example.com:80", path("/", "web"))), "spec.rules[0].host",
         "RFC 1123"),
        (broken(backend={"service": {"name": "web", "port": {"number": 80, "name": "http"}}}),
         "spec.rules[0].http.paths[0].backend.service.port", "cannot set both port name & port"),
        (broken(backend={"service": {"name": "web"}}),
         "spec.rules[0].http.paths[0].backend.service.port", "port name or number is required"),
        (broken(backend={"service": {"name": "web", "port": {"number": 70000}}}),
         "spec.rules[0].http.paths[0].backend.service.port.number", "between 1 and 65535"),
        (broken(backend={"service": backend("web")["service"],
                         "resource": {"kind": "Bucket", "name": "b"}}),
         "spec.rules[0].http.paths[0].backend", "cannot set both resource and service"),
        (broken(backend={"service": {"name": "Web_1", "port": {"number": 80}}}),
         "spec.rules[0].http.paths[0].backend.service.name", "DNS-1035"),
        (ingress("broken"), "spec", "either `defaultBackend` or `rules` must be specified"),
        (ingress("Broken!", rule(None, path("/", "web"))), "metadata.name", "RFC 1123"),
        ({**ingress("broken", rule(None, path("/", "web"))), "apiVersion": "extensions/v1beta1"},
         "apiVersion", "is not served for Ingress"),
    ],
)  # fmt: skip
def test_invalid_ingresses_are_reported_and_the_others_serve(
    tmp_path: Path, document: dict[str, Any], field: str, message: str
) -> None:
    good = ingress("good", rule("good.example.com", path("/", "web")))
    folder = write(tmp_path / "m", good, document)
    config, report = build(folder)
    matching = [i for i in report.errors if i.field == field and message in i.message]
    assert matching, report.issues
    issue = matching[0]
    assert (Path(issue.file).name, issue.document, issue.kind) == ("manifests.yaml", 1, "Ingress")
    assert issue.name.startswith("default/")
    assert pick(config, "good.example.com/") == "default.web.80"
    assert pick(config, "broken.example.com/") is None


def test_a_file_that_does_not_parse_is_reported_with_its_line_and_others_load(
    tmp_path: Path,
) -> None:
    folder = write(tmp_path / "m", ingress("good", rule("good.example.com", path("/", "web"))))
    (folder / "bad.yaml").write_text("kind: Ingress\nmetadata:\n  name: [unclosed\n")
    (folder / "bad.json").write_text('{"kind": "Ingress",\n "metadata": }')
    (folder / "notes.txt").write_text("not a manifest: never read")
    config, report = build(folder)
    by_file = {Path(i.file).name: i for i in report.errors}
    assert set(by_file) == {"bad.yaml", "bad.json"}
    assert by_file["bad.yaml"].line == 4 and "invalid YAML" in by_file["bad.yaml"].message
    assert by_file["bad.json"].line == 2 and "invalid JSON" in by_file["bad.json"].message
    assert by_file["bad.yaml"].document is None
    assert pick(config, "good.example.com/") == "default.web.80"


def test_multi_document_yaml_json_lists_and_nested_folders(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write(folder / "team-a", ingress("a", rule("a.example.com", path("/", "a"))),
          service("a"), name="a.yml")  # fmt: skip
    listing = {"apiVersion": "v1", "kind": "List", "items": [
        ingress("b", rule("b.example.com", path("/", "b"))),
        ingress("c", rule("c.example.com", path("/", "c")), cls="other"),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ignored"}},
    ]}  # fmt: skip
    (folder / "b.json").write_text(json.dumps(listing))
    write(folder / ".hidden", ingress("h", rule("h.example.com", path("/", "h"))))
    config, report = build(folder)
    hosts = {host for route in config.routes for host in route.hosts}
    assert hosts == {"a.example.com", "b.example.com"}
    assert report.objects == 4  # two Ingresses, a Service, and the other class's Ingress


def test_a_duplicate_object_is_reported_and_the_first_is_used(tmp_path: Path) -> None:
    folder = write(tmp_path / "m", ingress("x", rule("first.example.com", path("/", "web"))),
                   name="a.yaml")  # fmt: skip
    write(folder, ingress("x", rule("second.example.com", path("/", "web"))), name="b.yaml")
    config, report = build(folder)
    [duplicate] = report.errors
    assert Path(duplicate.file).name == "b.yaml" and "duplicate" in duplicate.message
    assert {h for r in config.routes for h in r.hosts} == {"first.example.com"}


def test_service_and_endpoint_slice_validation(tmp_path: Path) -> None:
    bad_service = service("web", ports=[{"name": "http", "port": 80}, {"port": 81}])
    bad_slice = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                 "metadata": {"name": "s"}, "addressType": "IPv5",
                 "endpoints": [{"addresses": [], "conditions": {"ready": "yes"}}]}  # fmt: skip
    _, report = build(write(tmp_path / "m", bad_service, bad_slice))
    fields = sorted((i.kind, i.field) for i in report.errors)
    assert fields == [
        ("EndpointSlice", "addressType"),
        ("EndpointSlice", "endpoints[0].addresses"),
        ("Service", "spec.ports[1].name"),
    ]
