"""Typed views of the Kubernetes kinds Portway reads, once ``parse`` has validated them.

Only the fields Portway uses are kept. Every object carries its ``Source`` so that a problem found
later (a missing Service, a certificate that does not cover a host) still names the file and the
document it came from.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

from portway.kubernetes.issues import Source

PathType = Literal["Exact", "Prefix", "ImplementationSpecific"]
CONTROLLER = "portway.io/ingress-controller"  # the IngressClass spec.controller Portway serves
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # names an EndpointSlice's Service


@dataclass(frozen=True, slots=True)
class Meta:
    name: str
    namespace: str  # "" for cluster-scoped kinds (IngressClass)
    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    created: dt.datetime | None = None  # metadata.creationTimestamp

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True, slots=True)
class Backend:
    """An IngressBackend: a Service port (by number or by name), or a resource reference."""

    service: str | None = None
    port_number: int | None = None
    port_name: str | None = None
    resource: str | None = None  # "Kind/name" of a resource backend (not served)

    @property
    def port(self) -> str:
        return self.port_name if self.port_name is not None else str(self.port_number)


@dataclass(frozen=True, slots=True)
class IngressPath:
    path: str
    path_type: PathType
    backend: Backend


@dataclass(frozen=True, slots=True)
class IngressRule:
    host: str | None
    paths: tuple[IngressPath, ...]


@dataclass(frozen=True, slots=True)
class IngressTls:
    hosts: tuple[str, ...]
    secret_name: str | None


@dataclass(frozen=True, slots=True)
class Ingress:
    meta: Meta
    source: Source
    class_name: str | None
    default_backend: Backend | None
    rules: tuple[IngressRule, ...]
    tls: tuple[IngressTls, ...]
    kind: str = "Ingress"


@dataclass(frozen=True, slots=True)
class IngressClass:
    meta: Meta
    source: Source
    controller: str
    kind: str = "IngressClass"

    @property
    def is_default(self) -> bool:
        return self.meta.annotations.get(DEFAULT_CLASS_ANNOTATION, "").lower() == "true"


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str  # "" when the Service has a single unnamed port
    port: int
    target_port: int | str | None


@dataclass(frozen=True, slots=True)
class Service:
    meta: Meta
    source: Source
    type: str  # ClusterIP, NodePort, LoadBalancer or ExternalName
    ports: tuple[ServicePort, ...]
    external_name: str | None = None
    kind: str = "Service"


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str  # the first of the endpoint's addresses: the API says they are fungible
    ready: bool | None
    serving: bool | None
    terminating: bool | None

    @property
    def receives_traffic(self) -> bool:
        """Ready (nil means ready), serving (nil means serving) and not terminating."""
        return (
            self.ready is not False and self.serving is not False and self.terminating is not True
        )


@dataclass(frozen=True, slots=True)
class EndpointPort:
    name: str
    port: int | None


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    meta: Meta
    source: Source
    service: str | None  # the kubernetes.io/service-name label
    address_type: str
    endpoints: tuple[Endpoint, ...]
    ports: tuple[EndpointPort, ...]
    kind: str = "EndpointSlice"


@dataclass(frozen=True, slots=True)
class EndpointsSubset:
    addresses: tuple[str, ...]  # ready addresses only; notReadyAddresses are not kept
    ports: tuple[EndpointPort, ...]


@dataclass(frozen=True, slots=True)
class Endpoints:
    meta: Meta
    source: Source
    subsets: tuple[EndpointsSubset, ...]
    kind: str = "Endpoints"


@dataclass(frozen=True, slots=True)
class Secret:
    meta: Meta
    source: Source
    type: str
    data: dict[str, bytes]
    kind: str = "Secret"


KubeObject = Ingress | IngressClass | Service | EndpointSlice | Endpoints | Secret
ObjectKey = tuple[str, str, str]  # kind, namespace, name


def key_of(obj: KubeObject) -> ObjectKey:
    return (obj.kind, obj.meta.namespace, obj.meta.name)


@dataclass(frozen=True, slots=True)
class Objects:
    """Every object read, by kind; what ``translate`` works on."""

    ingresses: tuple[Ingress, ...] = ()
    classes: tuple[IngressClass, ...] = ()
    services: tuple[Service, ...] = ()
    slices: tuple[EndpointSlice, ...] = ()
    endpoints: tuple[Endpoints, ...] = ()
    secrets: tuple[Secret, ...] = ()

    @classmethod
    def of(cls, objects: list[KubeObject]) -> Objects:
        return cls(
            ingresses=tuple(o for o in objects if isinstance(o, Ingress)),
            classes=tuple(o for o in objects if isinstance(o, IngressClass)),
            services=tuple(o for o in objects if isinstance(o, Service)),
            slices=tuple(o for o in objects if isinstance(o, EndpointSlice)),
            endpoints=tuple(o for o in objects if isinstance(o, Endpoints)),
            secrets=tuple(o for o in objects if isinstance(o, Secret)),
        )

    def __len__(self) -> int:
        return sum(
            len(group)
            for group in (
                self.ingresses, self.classes, self.services, self.slices, self.endpoints,
                self.secrets,
            )
        )  # fmt: skip
