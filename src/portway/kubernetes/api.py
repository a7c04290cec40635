"""The connection to the API server: where it is, how to authenticate, and the kinds read.

lightkube does the parts that are easy to get subtly wrong: the kubeconfig (contexts, CA and
client certificates inline or as files, bearer tokens, exec credential plugins) and the in-cluster
service account (token file re-read when the kubelet rotates it, the cluster CA,
``KUBERNETES_SERVICE_HOST``/``PORT``). Two clients share that configuration:

* ``client``, lightkube's typed ``AsyncClient``, for the few writes (Lease, Event, Ingress status)
  and single reads, with its models and its ``ApiError`` (409 on a stale ``resourceVersion``);
* ``http``, the authenticated ``httpx2`` client lightkube configures, for list and watch. The
  informers need the wire protocol itself: raw objects (translated exactly as manifest mode
  translates files), the list's ``resourceVersion``, ``allowWatchBookmarks`` and BOOKMARK events,
  and 410 Gone told apart from other failures; lightkube's watch hides or lacks each of these.

Where the configuration comes from, first match wins: ``--kubeconfig``; in a pod, the service
account; ``$KUBECONFIG`` (its first path); ``~/.kube/config``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import httpx2
from lightkube import AsyncClient
from lightkube.config.client_adapter import AsyncClient as adapter_client
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.kubeconfig import SERVICE_ACCOUNT, KubeConfig, SingleConfig
from lightkube.core.exceptions import ConfigError as LightkubeConfigError

FIELD_MANAGER = "portway"
REQUEST_TIMEOUT = 10.0


class ApiConfigError(Exception):
    """No usable connection configuration: the message says which source failed and why."""


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind the controller lists and watches, and where the API serves it."""

    name: str  # "Ingress"
    api_version: str  # "networking.k8s.io/v1", or "v1" for the core group
    plural: str  # "ingresses"
    namespaced: bool = True
    field_selector: str | None = None

    def path(self, namespace: str | None) -> str:
        """The collection's URL path: one namespace's, or every namespace's."""
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"


INGRESS = Kind("Ingress", "networking.k8s.io/v1", "ingresses")
INGRESS_CLASS = Kind("IngressClass", "networking.k8s.io/v1", "ingressclasses", namespaced=False)
SERVICE = Kind("Service", "v1", "services")
ENDPOINT_SLICE = Kind("EndpointSlice", "discovery.k8s.io/v1", "endpointslices")
# Helm keeps every release in a Secret and service-account tokens are Secrets too: neither is ever
# a TLS certificate or a CA bundle, and Helm's can be large. The API server filters them out.
SECRET = Kind(
    "Secret",
    "v1",
    "secrets",
    field_selector="type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token",
)
KINDS = (INGRESS, INGRESS_CLASS, SERVICE, ENDPOINT_SLICE, SECRET)


def load_config(
    kubeconfig: Path | None = None,
    context: str | None = None,
    service_account: Path = Path(SERVICE_ACCOUNT),
) -> SingleConfig:
    """The connection configuration, from the first source that applies (module docstring)."""
    try:
        if kubeconfig is not None:
            return _context(KubeConfig.from_file(kubeconfig), context, str(kubeconfig))
        if os.environ.get("KUBERNETES_SERVICE_HOST") and (service_account / "token").is_file():
            return _context(KubeConfig.from_service_account(service_account), None, "in-cluster")
        env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        path = Path(env).expanduser() if env else Path("~/.kube/config").expanduser()
        return _context(KubeConfig.from_file(path), context, str(path))
    except (LightkubeConfigError, OSError, KeyError, ValueError) as exc:
        raise ApiConfigError(f"cannot configure the API client: {exc}") from None


def _context(config: KubeConfig, name: str | None, where: str) -> SingleConfig:
    single = config.get(name)
    if single is None:
        raise ApiConfigError(f"{where}: no current context")
    return single


class Api:
    """The two clients over one configuration (module docstring); close with ``aclose``."""

    def __init__(self, config: SingleConfig, timeout: float = REQUEST_TIMEOUT) -> None:
        self.config = config
        limits = httpx2.Timeout(timeout)
        self.http: httpx2.AsyncClient = adapter_client(config, ConnectionParams(timeout=limits))
        self.client = AsyncClient(config, timeout=limits, field_manager=FIELD_MANAGER)

    @property
    def namespace(self) -> str:
        """The configuration's namespace: the pod's own in a cluster, else the context's."""
        return self.config.namespace

    @property
    def server(self) -> str:
        return str(self.config.cluster.server)

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.client.close()
