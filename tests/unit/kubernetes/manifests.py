"""Builders of Kubernetes manifests (plain dicts, as YAML would give them) and of one-shot builds.

``build`` writes the documents as real files and runs the same controller ``portway run
--manifests`` runs; ``pick`` then routes a request through the native router compiled from the
result, so a test checks which backend a request reaches, not how the routes happen to be written.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from portway.config.model import Config
from portway.kubernetes import ManifestIssue, Options, Report, one_shot
from portway.messages import Request
from portway.routing import compile_routes

Doc = dict[str, Any]


def backend(service: str, port: int | str = 80) -> Doc:
    ref = {"number": port} if isinstance(port, int) else {"name": port}
    return {"service": {"name": service, "port": ref}}


def path(value: str, service: str, path_type: str = "Prefix", port: int | str = 80) -> Doc:
    return {"path": value, "pathType": path_type, "backend": backend(service, port)}


def rule(host: str | None, *paths: Doc) -> Doc:
    result: Doc = {"http": {"paths": list(paths)}}
    if host is not None:
        result["host"] = host
    return result


def ingress(
    name: str,
    *rules: Doc,
    namespace: str = "default",
    cls: str | None = "portway",
    default: Doc | None = None,
    tls: list[Doc] | None = None,
    annotations: dict[str, str] | None = None,
    created: str | None = None,
) -> Doc:
    meta: Doc = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = annotations
    if created:
        meta["creationTimestamp"] = created
    spec: Doc = {}
    if cls is not None:
        spec["ingressClassName"] = cls
    if rules:
        spec["rules"] = list(rules)
    if default is not None:
        spec["defaultBackend"] = default
    if tls is not None:
        spec["tls"] = tls
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def service(
    name: str,
    ports: list[Doc] | None = None,
    namespace: str = "default",
    **spec: Any,
) -> Doc:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": ports if ports is not None else [{"port": 80}], **spec},
    }


def endpoint(address: str, **conditions: bool) -> Doc:
    result: Doc = {"addresses": [address]}
    if conditions:
        result["conditions"] = conditions
    return result


def endpoint_slice(
    service_name: str,
    *endpoints: Doc,
    ports: list[Doc] | None = None,
    name: str | None = None,
    namespace: str = "default",
) -> Doc:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name or f"{service_name}-slice",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "endpoints": list(endpoints),
        "ports": ports if ports is not None else [{"name": "", "port": 8080}],
    }


def backend_service(
    name: str, address: str = "127.0.0.1", port: int = 8080, namespace: str = "default"
) -> list[Doc]:
    """A Service on port 80 and its one ready endpoint at ``address``:``port``."""
    return [
        service(name, namespace=namespace),
        endpoint_slice(
            name, endpoint(address), ports=[{"name": "", "port": port}], namespace=namespace
        ),
    ]


def tls_secret(name: str, cert_pem: bytes, key_pem: bytes, namespace: str = "default") -> Doc:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode(cert_pem).decode(),
            "tls.key": base64.b64encode(key_pem).decode(),
        },
    }


def write(folder: Path, *documents: Doc, name: str = "manifests.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return folder


def build(folder: Path, **options: Any) -> tuple[Config, Report]:
    state = folder.parent / f"{folder.name}-state"
    config, report = one_shot(folder, Options(**options), state)
    assert config is not None, report.issues
    return config, report


def pick(config: Config, target: str) -> str | None:
    """The native service a GET of ``host/path`` (``target``) is routed to; None: 404."""
    host, _, rest = target.partition("/")
    table = compile_routes(config.routes, {name: name for name in config.services})
    assert not table.diagnostics, table.diagnostics
    request = Request("GET", host, "/" + rest, "", [(b"host", host.encode())], "127.0.0.1")
    route = table.select(request)
    return route.target if route is not None else None


def issues_about(report: Report, field: str = "", **match: Any) -> list[ManifestIssue]:
    return [
        issue
        for issue in report.issues
        if field in issue.field and all(getattr(issue, k) == v for k, v in match.items())
    ]


def instances(config: Config, name: str) -> list[str]:
    return [instance.address for instance in config.services[name].instances]
