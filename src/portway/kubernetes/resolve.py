"""A Service port -> the instances that receive its traffic, as kube-proxy would pick them.

The Ingress backend names a Service port by number or by name; the Service port is matched to
the ports of its EndpointSlices by the Service port's *name* (the endpoint controller copies it),
and the slice port carries the resolved target port number. Slices without ports fall back to
the Service's numeric ``targetPort`` (or its ``port`` when none is set); a named ``targetPort``
needs a slice port of that name. Only endpoints that are ready (a missing condition means ready),
serving and not terminating are instances: an endpoint going away stops receiving new requests
as soon as its slice says so, which is what makes rollouts free of 502s. When a Service has no
EndpointSlice, its Endpoints (v1) are read instead, ``notReadyAddresses`` excluded. An
ExternalName Service resolves to its DNS name and the Service port.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from portway.config.types import format_host_port
from portway.kubernetes.objects import (
    Backend,
    EndpointPort,
    Endpoints,
    EndpointSlice,
    Objects,
    Service,
    ServicePort,
)


@dataclass(frozen=True, slots=True)
class Resolved:
    instances: tuple[str, ...]
    problem: str | None = None  # why there are no instances, when that looks like a mistake
    service: Service | None = None


@dataclass(slots=True)
class Resolver:
    services: dict[tuple[str, str], Service] = field(default_factory=dict)
    slices: dict[tuple[str, str], list[EndpointSlice]] = field(default_factory=dict)
    endpoints: dict[tuple[str, str], Endpoints] = field(default_factory=dict)

    @classmethod
    def of(cls, objects: Objects) -> Resolver:
        resolver = cls()
        for service in objects.services:
            resolver.services[(service.meta.namespace, service.meta.name)] = service
        for piece in objects.slices:
            if piece.service is not None:
                key = (piece.meta.namespace, piece.service)
                resolver.slices.setdefault(key, []).append(piece)
        for item in objects.endpoints:
            resolver.endpoints[(item.meta.namespace, item.meta.name)] = item
        return resolver

    def resolve(self, namespace: str, backend: Backend) -> Resolved:
        assert backend.service is not None
        service = self.services.get((namespace, backend.service))
        if service is None:
            return Resolved((), f"Service {namespace}/{backend.service} not found")
        port = _service_port(service, backend)
        if port is None:
            ports = ", ".join(p.name or str(p.port) for p in service.ports) or "none"
            return Resolved(
                (), f"Service {service.meta.ref} has no port {backend.port} (ports: {ports})"
            )
        if service.type == "ExternalName":
            assert service.external_name is not None
            return Resolved((format_host_port(service.external_name.rstrip("."), port.port),))
        slices = self.slices.get((namespace, service.meta.name))
        if slices:
            return _from_slices(service, port, slices)
        endpoints = self.endpoints.get((namespace, service.meta.name))
        if endpoints is not None:
            return _from_endpoints(service, port, endpoints)
        return Resolved((), f"Service {service.meta.ref} has no EndpointSlice or Endpoints")


def _service_port(service: Service, backend: Backend) -> ServicePort | None:
    for port in service.ports:
        if backend.port_name is not None and port.name == backend.port_name:
            return port
        if backend.port_number is not None and port.port == backend.port_number:
            return port
    if service.type == "ExternalName" and backend.port_number is not None:
        return ServicePort("", backend.port_number, None)  # the client's port, unproxied
    return None


def _endpoint_port(port: ServicePort, ports: tuple[EndpointPort, ...]) -> int | None:
    for candidate in ports:
        if candidate.name == port.name:
            return candidate.port
    if isinstance(port.target_port, str):
        return next((c.port for c in ports if c.name == port.target_port), None)
    if not ports:
        return port.target_port if port.target_port is not None else port.port
    return None


def _from_slices(service: Service, port: ServicePort, slices: list[EndpointSlice]) -> Resolved:
    instances: dict[str, None] = {}  # ordered and without repeats: a set keeping slice order
    unresolved = 0
    for piece in sorted(slices, key=lambda s: s.meta.name):
        number = _endpoint_port(port, piece.ports)
        if number is None:
            unresolved += 1
            continue
        for endpoint in piece.endpoints:
            if endpoint.receives_traffic:
                instances[format_host_port(endpoint.address, number)] = None
    problem = None
    if unresolved == len(slices):
        problem = (
            f"Service {service.meta.ref} port {port.name or port.port}: no EndpointSlice has a "
            f"port named {port.name!r}"
        )
    return Resolved(tuple(instances), problem, service)


def _from_endpoints(service: Service, port: ServicePort, endpoints: Endpoints) -> Resolved:
    instances: dict[str, None] = {}
    for subset in endpoints.subsets:
        number = _endpoint_port(port, subset.ports)
        if number is None and len(subset.ports) == 1:
            number = subset.ports[0].port  # one unnamed port: the only one there is
        if number is not None:
            for address in subset.addresses:
                instances[format_host_port(address, number)] = None
    return Resolved(tuple(instances), None, service)
