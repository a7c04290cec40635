"""Raw manifest documents -> validated objects, refusing what the API server would refuse.

The rules are the API server's (``pkg/apis/networking/validation`` and ``core/validation``) for
the fields Portway reads: names are DNS-1123 (Services DNS-1035), an Ingress has rules or a
defaultBackend, ``pathType`` is required, Exact and Prefix paths are absolute and free of ``//``,
``/./``, ``/../`` and ``%2F``, a backend is exactly one of service and resource, a service port
is exactly one of number and name, a host is a DNS name or ``*.`` and one, never an IP address.
An object that breaks one is not served at all (in a cluster it would not exist): the caller
keeps that object's last valid version when there is one. Values of the wrong type (``true``
where a string is expected, a common slip in annotations) are reported the same way.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
from collections.abc import Callable

from portway.kubernetes import names
from portway.kubernetes.issues import ManifestIssue, Source, issue_at
from portway.kubernetes.objects import (
    LEGACY_CLASS_ANNOTATION,
    SERVICE_NAME_LABEL,
    Backend,
    Endpoint,
    EndpointPort,
    Endpoints,
    EndpointSlice,
    EndpointsSubset,
    Ingress,
    IngressClass,
    IngressPath,
    IngressRule,
    IngressTls,
    KubeObject,
    Meta,
    ObjectKey,
    PathType,
    Secret,
    Service,
    ServicePort,
)
from portway.kubernetes.reader import Reader

log = logging.getLogger("portway.kubernetes")

API_VERSIONS = {
    "Ingress": "networking.k8s.io/v1",
    "IngressClass": "networking.k8s.io/v1",
    "Service": "v1",
    "Endpoints": "v1",
    "Secret": "v1",
    "EndpointSlice": "discovery.k8s.io/v1",
}
CLUSTER_SCOPED = frozenset({"IngressClass"})
PATH_TYPES: tuple[PathType, ...] = ("Exact", "Prefix", "ImplementationSpecific")
_BAD_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
_BAD_SUFFIXES = ("/..", "/.")
Parsed = tuple[KubeObject | None, ObjectKey | None, list[ManifestIssue]]


def parse_object(raw: object, source: Source) -> Parsed:
    """One document -> (object or None when invalid, its key when known, problems)."""
    if raw is None:
        return None, None, []
    if not isinstance(raw, dict):
        message = f"a manifest is a mapping with apiVersion and kind, not {type(raw).__name__}"
        return None, None, [issue_at(source, "", "", "", message)]
    kind = raw.get("kind")
    if not isinstance(kind, str) or not kind:
        return None, None, [issue_at(source, "", "", "kind", "Required value")]
    parser = _PARSERS.get(kind)
    if parser is None:
        log.debug("%s document %s: kind %s is not read", source.file, source.document, kind)
        return None, None, []
    reader = Reader(source, kind)
    meta = _meta(reader, raw)
    key: ObjectKey = (kind, meta.namespace, meta.name)
    if raw.get("apiVersion") != API_VERSIONS[kind]:
        reader.error(
            "apiVersion",
            f"{raw.get('apiVersion')!r} is not served for {kind}; use {API_VERSIONS[kind]}",
        )
        return None, key, reader.issues
    obj = parser(reader, meta, raw)
    if reader.issues:
        return None, key, reader.issues
    return obj, key, []


def _meta(reader: Reader, raw: dict[str, object]) -> Meta:
    metadata = reader.mapping(raw.get("metadata"), "metadata")
    name = reader.text(metadata.get("name"), "metadata.name", required=True) or ""
    cluster_scoped = reader.kind in CLUSTER_SCOPED
    namespace = (
        "" if cluster_scoped else reader.text(metadata.get("namespace"), "metadata.namespace")
    )
    namespace = "" if cluster_scoped else namespace or "default"
    reader.name = f"{namespace}/{name}" if namespace else name
    if name:
        rule = names.dns1035_label if reader.kind == "Service" else names.dns1123_subdomain
        reader.check(rule(name), "metadata.name", name)
    if namespace:
        reader.check(names.dns1123_label(namespace), "metadata.namespace", namespace)
    created = metadata.get("creationTimestamp")
    timestamp: dt.datetime | None = None
    if isinstance(created, dt.datetime):
        timestamp = created
    elif isinstance(created, str):
        try:
            timestamp = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            reader.error("metadata.creationTimestamp", f"not an RFC 3339 time: {created!r}")
    elif created is not None:
        reader.error("metadata.creationTimestamp", f"not an RFC 3339 time: {created!r}")
    if timestamp is not None and timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=dt.UTC)
    return Meta(
        name=name,
        namespace=namespace,
        annotations=reader.strings(metadata.get("annotations"), "metadata.annotations"),
        labels=reader.strings(metadata.get("labels"), "metadata.labels"),
        created=timestamp,
    )


# ---------------------------------------------------------------------------------------- Ingress


def _ingress(reader: Reader, meta: Meta, raw: dict[str, object]) -> Ingress:
    spec = reader.mapping(raw.get("spec"), "spec")
    class_name = reader.text(spec.get("ingressClassName"), "spec.ingressClassName")
    if class_name is not None:
        reader.check(names.dns1123_subdomain(class_name), "spec.ingressClassName", class_name)
        legacy = meta.annotations.get(LEGACY_CLASS_ANNOTATION)
        if legacy is not None and legacy != class_name:
            reader.error(
                f"metadata.annotations[{LEGACY_CLASS_ANNOTATION}]",
                f"Invalid value: {legacy!r}: must match `ingressClassName` when both are set",
            )
    default = None
    if spec.get("defaultBackend") is not None:
        default = _backend(reader, spec["defaultBackend"], "spec.defaultBackend")
    rules = []
    for i, item in enumerate(reader.items(spec.get("rules"), "spec.rules")):
        rules.append(_rule(reader, reader.mapping(item, f"spec.rules[{i}]"), f"spec.rules[{i}]"))
    if not rules and default is None and not reader.issues:
        reader.error("spec", "Invalid value: either `defaultBackend` or `rules` must be specified")
    tls = []
    for i, item in enumerate(reader.items(spec.get("tls"), "spec.tls")):
        at = f"spec.tls[{i}]"
        entry = reader.mapping(item, at)
        hosts = []
        for j, host in enumerate(reader.items(entry.get("hosts"), f"{at}.hosts")):
            text = reader.text(host, f"{at}.hosts[{j}]")
            if text is not None:
                reader.check(names.ingress_host(text), f"{at}.hosts[{j}]", text)
                hosts.append(text)
        secret = reader.text(entry.get("secretName"), f"{at}.secretName")
        if secret:
            reader.check(names.dns1123_subdomain(secret), f"{at}.secretName", secret)
        tls.append(IngressTls(tuple(hosts), secret or None))
    return Ingress(meta, reader.source, class_name, default, tuple(rules), tuple(tls))


def _rule(reader: Reader, rule: dict[str, object], at: str) -> IngressRule:
    host = reader.text(rule.get("host"), f"{at}.host")
    if host:
        reader.check(names.ingress_host(host), f"{at}.host", host)
    paths = []
    if rule.get("http") is not None:
        http = reader.mapping(rule["http"], f"{at}.http")
        items = reader.items(http.get("paths"), f"{at}.http.paths")
        if not items:
            reader.error(f"{at}.http.paths", "Required value")
        for j, item in enumerate(items):
            path = _path(
                reader, reader.mapping(item, f"{at}.http.paths[{j}]"), f"{at}.http.paths[{j}]"
            )
            if path is not None:
                paths.append(path)
    return IngressRule(host or None, tuple(paths))


def _path(reader: Reader, raw: dict[str, object], at: str) -> IngressPath | None:
    path = reader.text(raw.get("path"), f"{at}.path") or ""
    path_type = reader.text(raw.get("pathType"), f"{at}.pathType")
    backend = _backend(reader, raw.get("backend"), f"{at}.backend")
    if path_type is None:
        reader.error(f"{at}.pathType", "Required value: pathType must be specified")
        return None
    if path_type not in PATH_TYPES:
        supported = ", ".join(f'"{t}"' for t in PATH_TYPES)
        reader.error(f"{at}.pathType", f'Unsupported value: "{path_type}": supported: {supported}')
        return None
    if (path_type != "ImplementationSpecific" or path) and not path.startswith("/"):
        reader.error(f"{at}.path", f"Invalid value: {path!r}: must be an absolute path")
    if path_type != "ImplementationSpecific":
        for sequence in _BAD_SEQUENCES:
            if sequence in path:
                reader.error(
                    f"{at}.path", f"Invalid value: {path!r}: must not contain {sequence!r}"
                )
        for suffix in _BAD_SUFFIXES:
            if path.endswith(suffix):
                reader.error(f"{at}.path", f"Invalid value: {path!r}: cannot end with {suffix!r}")
    return IngressPath(path, path_type, backend)


def _backend(reader: Reader, value: object, at: str) -> Backend:
    raw = reader.mapping(value, at)
    service, resource = raw.get("service"), raw.get("resource")
    if service is not None and resource is not None:
        reader.error(at, "Invalid value: cannot set both resource and service backends")
        return Backend()
    if resource is not None:
        ref = reader.mapping(resource, f"{at}.resource")
        kind = reader.text(ref.get("kind"), f"{at}.resource.kind", required=True)
        name = reader.text(ref.get("name"), f"{at}.resource.name", required=True)
        return Backend(resource=f"{kind}/{name}")
    if service is None:
        reader.error(at, "Invalid value: resource or service backend is required")
        return Backend()
    svc = reader.mapping(service, f"{at}.service")
    name = reader.text(svc.get("name"), f"{at}.service.name", required=True)
    if name:
        reader.check(names.dns1035_label(name), f"{at}.service.name", name)
    port = reader.mapping(svc.get("port"), f"{at}.service.port")
    number = reader.integer(port.get("number"), f"{at}.service.port.number")
    port_name = reader.text(port.get("name"), f"{at}.service.port.name")
    if number and port_name:
        reader.error(f"{at}.service.port", "Invalid value: cannot set both port name & port number")
    elif port_name:
        reader.check(names.port_name(port_name), f"{at}.service.port.name", port_name)
    elif number:
        reader.check(names.port_number(number), f"{at}.service.port.number", number)
    else:
        reader.error(f"{at}.service.port", "Required value: port name or number is required")
    return Backend(service=name, port_number=number or None, port_name=port_name or None)


def _ingress_class(reader: Reader, meta: Meta, raw: dict[str, object]) -> IngressClass:
    spec = reader.mapping(raw.get("spec"), "spec")
    controller = reader.text(spec.get("controller"), "spec.controller", required=True) or ""
    if len(controller) > 250:
        reader.error("spec.controller", "Too long: must have at most 250 bytes")
    return IngressClass(meta, reader.source, controller)


# ------------------------------------------------------------------------------ Service and co.


def _service(reader: Reader, meta: Meta, raw: dict[str, object]) -> Service:
    spec = reader.mapping(raw.get("spec"), "spec")
    service_type = reader.text(spec.get("type"), "spec.type") or "ClusterIP"
    if service_type not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        reader.error("spec.type", f'Unsupported value: "{service_type}"')
    external = reader.text(spec.get("externalName"), "spec.externalName")
    if service_type == "ExternalName":
        if not external:
            reader.error("spec.externalName", "Required value")
        else:
            reader.check(
                names.dns1123_subdomain(external.rstrip(".")), "spec.externalName", external
            )
    ports: list[ServicePort] = []
    items = reader.items(spec.get("ports"), "spec.ports")
    headless = spec.get("clusterIP") == "None"  # a headless Service may have no ports
    if not items and service_type != "ExternalName" and not headless:
        reader.error("spec.ports", "Required value")
    for i, item in enumerate(items):
        at = f"spec.ports[{i}]"
        port = reader.mapping(item, at)
        name = reader.text(port.get("name"), f"{at}.name") or ""
        if len(items) > 1 and not name:
            reader.error(f"{at}.name", "Required value")
        elif name:
            reader.check(names.dns1123_label(name), f"{at}.name", name)
            if any(p.name == name for p in ports):
                reader.error(f"{at}.name", f'Duplicate value: "{name}"')
        number = reader.integer(port.get("port"), f"{at}.port")
        if number is None:
            reader.error(f"{at}.port", "Required value")
            continue
        reader.check(names.port_number(number), f"{at}.port", number)
        target = port.get("targetPort")
        if isinstance(target, str) and not target.isdigit():
            reader.check(names.port_name(target), f"{at}.targetPort", target)
        elif isinstance(target, int | str) and not isinstance(target, bool):
            target = int(target)
            reader.check(names.port_number(target), f"{at}.targetPort", target)
        elif target is not None:
            reader.error(f"{at}.targetPort", f"expected a port number or name, got {target!r}")
            target = None
        ports.append(ServicePort(name, number, target))
    return Service(meta, reader.source, service_type, tuple(ports), external or None)


def _endpoint_ports(reader: Reader, value: object, at: str) -> tuple[EndpointPort, ...]:
    ports = []
    for i, item in enumerate(reader.items(value, at)):
        port = reader.mapping(item, f"{at}[{i}]")
        number = reader.integer(port.get("port"), f"{at}[{i}].port")
        if number is not None:
            reader.check(names.port_number(number), f"{at}[{i}].port", number)
        ports.append(EndpointPort(reader.text(port.get("name"), f"{at}[{i}].name") or "", number))
    return tuple(ports)


def _endpoint_slice(reader: Reader, meta: Meta, raw: dict[str, object]) -> EndpointSlice:
    address_type = reader.text(raw.get("addressType"), "addressType", required=True) or ""
    if address_type and address_type not in ("IPv4", "IPv6", "FQDN"):
        reader.error("addressType", f'Unsupported value: "{address_type}"')
    endpoints = []
    for i, item in enumerate(reader.items(raw.get("endpoints"), "endpoints")):
        at = f"endpoints[{i}]"
        endpoint = reader.mapping(item, at)
        addresses = [
            reader.text(a, f"{at}.addresses[{j}]")
            for j, a in enumerate(reader.items(endpoint.get("addresses"), f"{at}.addresses"))
        ]
        if not addresses or not addresses[0]:
            reader.error(f"{at}.addresses", "Required value")
            continue
        conditions = reader.mapping(endpoint.get("conditions"), f"{at}.conditions")
        flags = [
            reader.flag(conditions.get(c), f"{at}.conditions.{c}")
            for c in ("ready", "serving", "terminating")
        ]
        endpoints.append(Endpoint(addresses[0], *flags))
    ports = _endpoint_ports(reader, raw.get("ports"), "ports")
    service = meta.labels.get(SERVICE_NAME_LABEL)
    return EndpointSlice(meta, reader.source, service, address_type, tuple(endpoints), ports)


def _endpoints(reader: Reader, meta: Meta, raw: dict[str, object]) -> Endpoints:
    subsets = []
    for i, item in enumerate(reader.items(raw.get("subsets"), "subsets")):
        at = f"subsets[{i}]"
        subset = reader.mapping(item, at)
        addresses = []
        for j, address in enumerate(reader.items(subset.get("addresses"), f"{at}.addresses")):
            ip = reader.text(reader.mapping(address, f"{at}.addresses[{j}]").get("ip"), f"{at}.ip")
            if ip:
                addresses.append(ip)
        ports = _endpoint_ports(reader, subset.get("ports"), f"{at}.ports")
        subsets.append(EndpointsSubset(tuple(addresses), ports))
    return Endpoints(meta, reader.source, tuple(subsets))


def _secret(reader: Reader, meta: Meta, raw: dict[str, object]) -> Secret:
    secret_type = reader.text(raw.get("type"), "type") or "Opaque"
    data: dict[str, bytes] = {}
    for key, value in reader.mapping(raw.get("data"), "data").items():
        text = reader.text(value, f"data[{key}]")
        try:
            data[str(key)] = base64.b64decode(text or "", validate=True)
        except (binascii.Error, ValueError):
            reader.error(f"data[{key}]", "illegal base64 data")
    for key, value in reader.mapping(raw.get("stringData"), "stringData").items():
        text = reader.text(value, f"stringData[{key}]")
        data[str(key)] = (text or "").encode("utf-8")
    if secret_type == "kubernetes.io/tls":
        for key in ("tls.crt", "tls.key"):
            if key not in data:
                reader.error(f"data[{key}]", "Required value")
    return Secret(meta, reader.source, secret_type, data)


_PARSERS: dict[str, Callable[[Reader, Meta, dict[str, object]], KubeObject]] = {
    "Ingress": _ingress,
    "IngressClass": _ingress_class,
    "Service": _service,
    "EndpointSlice": _endpoint_slice,
    "Endpoints": _endpoints,
    "Secret": _secret,
}
