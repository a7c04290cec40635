"""What the leader writes back: each served Ingress's address, and Events about invalid ones.

**Status.** ``status.loadBalancer.ingress`` of every Ingress Portway serves says where it is
reachable (``kubectl get ingress`` shows it as ADDRESS; external-dns and Argo CD read it). The
address is ``--publish-address`` (IPs as ``ip``, names as ``hostname``), or Portway's own Service
(``--publish-service NAMESPACE/NAME``): its load balancer's addresses, else its external IPs,
else its cluster IP. A write happens only when the Ingress's status differs from the address,
never twice for one version of the object: the write comes back through the watch, and an
Ingress whose status the store still shows as old but which was written at that version is left
alone (no write storms, no ping-pong with a lagging watch). An Ingress that stops being served
(another class, refused) has its status emptied, if it is still the address written.

**Events.** An error about an Ingress (the API server's rules, Portway's: a bad regex, a snippet
annotation) becomes one ``Warning`` Event ``InvalidIngress`` on that Ingress with the problem as
its message, so ``kubectl describe ingress`` shows why it is not served as written. One Event per
problem and object (uid), while it lasts: a problem that goes away and comes back is posted again.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Service
from lightkube.resources.networking_v1 import IngressStatus
from lightkube.types import PatchType

from portway.kubernetes.informer import RawObject, StoreKey, version_of
from portway.kubernetes.issues import Report

log = logging.getLogger("portway.kubernetes")

Address = dict[str, str]  # {"ip": "..."} or {"hostname": "..."}
REASON = "InvalidIngress"
COMPONENT = "portway-controller"
MAX_MESSAGE = 1024  # the API server refuses longer Event messages


def address_entry(value: str) -> Address:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return {"hostname": value}
    return {"ip": value}


def current_status(raw: RawObject) -> list[Address]:
    """The Ingress's ``status.loadBalancer.ingress`` as ip/hostname entries."""
    entries = ((raw.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    found = []
    for entry in entries:
        if isinstance(entry, dict):
            kept = {k: str(entry[k]) for k in ("ip", "hostname") if entry.get(k)}
            if kept:
                found.append(kept)
    return found


def same(one: list[Address], other: list[Address]) -> bool:
    """Equal as sets: the order of the entries carries no meaning."""
    return sorted(sorted(e.items()) for e in one) == sorted(sorted(e.items()) for e in other)


def parse_service_ref(value: str) -> tuple[str, str]:
    """``NAMESPACE/NAME`` -> (namespace, name); raises ValueError."""
    namespace, _, name = value.partition("/")
    if not namespace or not name or "/" in name:
        raise ValueError(f"expected NAMESPACE/NAME, got {value!r}")
    return namespace, name


@dataclass(frozen=True, slots=True)
class Publish:
    addresses: tuple[str, ...] = ()  # --publish-address
    service: tuple[str, str] | None = None  # --publish-service NAMESPACE/NAME

    @property
    def enabled(self) -> bool:
        return bool(self.addresses) or self.service is not None


class StatusWriter:
    def __init__(self, client: AsyncClient, publish: Publish) -> None:
        self.client, self.publish = client, publish
        self.writes = 0
        self._written: dict[StoreKey, tuple[list[Address], set[str | None]]] = {}

    async def address(self) -> list[Address] | None:
        """The addresses to publish; None when they cannot be known now (write nothing)."""
        if self.publish.addresses:
            return [address_entry(a) for a in self.publish.addresses]
        if self.publish.service is None:
            return None
        namespace, name = self.publish.service
        try:
            service = await self.client.get(Service, name, namespace=namespace)
        except (ApiError, httpx2.HTTPError) as exc:
            log.warning("--publish-service %s/%s: %s", namespace, name, exc)
            return None
        entries: list[Address] = []
        balancer = service.status.loadBalancer if service.status else None
        for item in (balancer.ingress if balancer else None) or []:
            if item.ip:
                entries.append({"ip": item.ip})
            elif item.hostname:
                entries.append({"hostname": item.hostname})
        spec = service.spec
        if not entries and spec is not None:
            external = spec.externalIPs or []
            cluster = [spec.clusterIP] if spec.clusterIP and spec.clusterIP != "None" else []
            entries = [address_entry(a) for a in external or cluster]
        return entries

    async def sync(
        self,
        served: set[StoreKey],
        ingresses: dict[StoreKey, RawObject],
        allowed: Callable[[], bool] = lambda: True,
    ) -> None:
        """Bring every Ingress's status to what it should be (module docstring), as long as
        ``allowed`` says so (a leader that lost its Lease stops in the middle)."""
        desired = await self.address()
        if desired is None:
            return
        for key in list(self._written):
            if key not in ingresses:
                del self._written[key]
        for key, raw in sorted(ingresses.items()):
            current = current_status(raw)
            want = desired if key in served else ([] if same(current, desired) else None)
            if want is None or same(current, want):
                continue
            memo = self._written.get(key)
            if memo is not None and memo[0] == want and version_of(raw) in memo[1]:
                continue  # written at this version; the watch has not caught up yet
            if not allowed():
                return
            await self._write(key, raw, want)

    async def _write(self, key: StoreKey, raw: RawObject, want: list[Address]) -> None:
        namespace, name = key
        patch: dict[str, Any] = {"status": {"loadBalancer": {"ingress": want}}}
        try:
            written = await self.client.patch(IngressStatus, name, patch, namespace=namespace,
                                              patch_type=PatchType.MERGE)  # fmt: skip
        except (ApiError, httpx2.HTTPError) as exc:
            if not (isinstance(exc, ApiError) and exc.status.code == 404):  # deleted meanwhile
                log.warning("status of Ingress %s/%s: %s", namespace, name, exc)
            return
        self.writes += 1
        version = written.metadata.resourceVersion if written.metadata else None
        self._written[key] = (want, {version_of(raw), version})
        shown = ", ".join(e.get("ip") or e.get("hostname", "") for e in want) or "(none)"
        log.info("status of Ingress %s/%s: address %s", namespace, name, shown)


class EventRecorder:
    def __init__(self, client: AsyncClient, identity: str) -> None:
        self.client, self.identity = client, identity
        self.posted = 0
        self._done: set[tuple[str, str, str, str]] = set()  # namespace, name, uid, message

    async def sync(self, report: Report, ingresses: dict[StoreKey, RawObject]) -> None:
        """Post an Event for each current error about an Ingress not posted yet."""
        current: dict[tuple[str, str, str, str], RawObject] = {}
        for issue in report.errors:
            if issue.kind != "Ingress" or "/" not in issue.name:
                continue
            namespace, _, name = issue.name.partition("/")
            raw = ingresses.get((namespace, name))
            if raw is None:
                continue
            message = f"{issue.field}: {issue.message}" if issue.field else issue.message
            if f"Ingress {issue.name}" in report.kept:
                message += " (its last valid version keeps serving)"
            uid = str((raw.get("metadata") or {}).get("uid") or "")
            current[(namespace, name, uid, message)] = raw
        self._done &= set(current)  # resolved problems: posted again if they come back
        for identity, raw in sorted(current.items(), key=lambda item: item[0]):
            if identity not in self._done and await self._post(raw, identity[3]):
                self._done.add(identity)

    async def _post(self, raw: RawObject, message: str) -> bool:
        metadata = raw.get("metadata") or {}
        namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        event = Event(
            metadata=ObjectMeta(name=f"{name}.{secrets.token_hex(8)}", namespace=namespace),
            involvedObject=ObjectReference(
                apiVersion="networking.k8s.io/v1",
                kind="Ingress",
                name=name,
                namespace=namespace,
                uid=metadata.get("uid"),
                resourceVersion=metadata.get("resourceVersion"),
            ),
            reason=REASON,
            message=message[:MAX_MESSAGE],
            type="Warning",
            source=EventSource(component=COMPONENT),
            reportingComponent=COMPONENT,
            reportingInstance=self.identity,
            firstTimestamp=now,
            lastTimestamp=now,
            count=1,
        )
        try:
            await self.client.create(event)
        except (ApiError, httpx2.HTTPError) as exc:
            log.warning("Event on Ingress %s/%s: %s", namespace, name, exc)
            return False
        self.posted += 1
        return True
