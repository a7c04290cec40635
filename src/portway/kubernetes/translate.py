"""Objects + options -> a native ``Config`` and the issues found: the one place Kubernetes
semantics become Portway's.

Pure but for writing TLS material (``SecretFiles``). The steps:

1. Class selection (``classes``): the Ingresses Portway serves, oldest first.
2. Per Ingress, its annotations (``annotations.read_policy``) and ImplementationSpecific regexes
   are checked; an error refuses the whole Ingress (``Translation.rejected``: the caller may serve
   its last valid version instead).
3. Each path becomes a route ``namespace/ingress/rule/path`` to a native service named
   ``namespace.service.port`` (``_ingress`` appended when the Ingress's annotations change the
   service). Exact -> exact, Prefix -> prefix (the native router matches prefixes element-wise,
   longest first, and tries exact paths before them: the Kubernetes precedence),
   ImplementationSpecific -> an anchored regex on the normalized path, tried after exact paths
   and before prefixes, longest pattern first as ingress-nginx orders regex locations. Two paths
   with the same host, type and path conflict: the older Ingress's wins, the other is reported.
   Each route forwarding to a backend lists the Ingress's policies (``kubernetes.policies``).
4. Default backends: an Ingress's ``defaultBackend`` answers its hosts' unmatched paths (a Prefix
   ``/`` for each host that has none); the catch-all for every host goes to the oldest Ingress
   with a ``defaultBackend``, else to the controller-wide default (``--default-backend``).
5. TLS (``certificates``), listeners, then the native validation (``Config`` and
   ``config.semantic``): any issue it finds is mapped back to the Ingress or TLS entry that caused
   it, which is refused, and the build runs again without it.

A backend whose Service or port is missing still gets its (empty) service: requests answer 503
``no_healthy_instance``, and the issue says why.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from portway.config import semantic
from portway.config.model import Config, ListenerConfig, RouteConfig, ServiceConfig
from portway.config.observability import AdminConfig
from portway.config.policies import BasicAuthConfig, PolicyConfig
from portway.config.rewrites import RedirectConfig
from portway.config.tls import CertificateConfig, HttpsRedirectConfig, ListenerTlsConfig
from portway.config.types import parse_host_port
from portway.errors import ConfigError, ConfigIssue
from portway.kubernetes.annotations import Policy, read_policy
from portway.kubernetes.certificates import plan_tls
from portway.kubernetes.classes import select_ingresses
from portway.kubernetes.files import SecretFiles
from portway.kubernetes.issues import ManifestIssue, Severity, Source, issue_at
from portway.kubernetes.objects import Backend, Ingress, ObjectKey, Objects, Secret, key_of
from portway.kubernetes.policies import NOT_OPEN, BasicAuthSecret, basic_auth_users
from portway.kubernetes.resolve import Resolver
from portway.kubernetes.rewrites import NGINX, action_problem, route_action
from portway.pki import MaterialError, load_ca_bundle

_NATIVE_TYPE = {"Exact": "exact", "Prefix": "prefix", "ImplementationSpecific": "regex"}
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
CONTROLLER_DEFAULT = "portway/default-backend"


@dataclass(frozen=True, slots=True)
class Options:
    listen: tuple[str, ...] = ("127.0.0.1:8080",)
    listen_tls: str | None = None
    ingress_class: str = "portway"
    default_backend: str | None = None  # "namespace/service:port" (port number or name)
    admin: AdminConfig = field(default_factory=AdminConfig)


@dataclass(frozen=True, slots=True)
class Translation:
    config: Config
    issues: list[ManifestIssue]
    rejected: frozenset[ObjectKey]  # Ingresses refused as a whole


def parse_default_backend(value: str) -> tuple[str, Backend]:
    """``namespace/service:port`` -> (namespace, backend); raises ValueError."""
    ref, _, port = value.partition(":")
    namespace, _, name = ref.rpartition("/")
    if not name or not port:
        raise ValueError(f"expected NAMESPACE/SERVICE:PORT, got {value!r}")
    backend = Backend(service=name, port_number=int(port)) if port.isdigit() else Backend(
        service=name, port_name=port)  # fmt: skip
    return namespace or "default", backend


def translate(objects: Objects, options: Options, files: SecretFiles | None) -> Translation:
    """See the module docstring. ``files`` None: certificates are not served (no HTTPS)."""
    refused: set[ObjectKey] = set()
    excluded: set[tuple[ObjectKey, str]] = set()
    forced: list[ManifestIssue] = []
    for _ in range(5):
        build = _Build(objects, options, files, refused, excluded)
        config = build.run()
        problems = semantic.check(config)
        if not problems:
            return Translation(config, forced + build.issues, frozenset(build.rejected))
        unmapped = []
        for path, message in problems:
            found = build.origin(path)
            if found is None:
                unmapped.append(ConfigIssue("<manifests>", ".".join(map(str, path)), message))
                continue
            key, at, source = found
            forced.append(issue_at(source, key[0], f"{key[1]}/{key[2]}", at, message))
            (excluded.add((key, at)) if at.startswith("spec.tls") else refused.add(key))
        if unmapped:
            raise ConfigError(unmapped)
    raise ConfigError([ConfigIssue("<manifests>", "", "the translation did not settle")])


class _Build:
    def __init__(
        self,
        objects: Objects,
        options: Options,
        files: SecretFiles | None,
        refused: set[ObjectKey],
        excluded: set[tuple[ObjectKey, str]],
    ) -> None:
        self.objects, self.options, self.files = objects, options, files
        self.refused, self.excluded = refused, excluded
        self.resolver = Resolver.of(objects)
        self.issues: list[ManifestIssue] = []
        self.rejected: set[ObjectKey] = set(refused)
        self.services: dict[str, ServiceConfig] = {}
        self.service_origin: dict[str, Ingress] = {}
        self.policies: dict[str, PolicyConfig] = {}  # the served Ingresses' route policies
        self.policy_origin: dict[str, Ingress] = {}
        self.routes: list[tuple[RouteConfig, Ingress | None, str, tuple[int, ...]]] = []
        self.claimed: dict[tuple[str, str, str], str] = {}
        self.tls_origins: list[tuple[ObjectKey, str]] = []
        self.sources = {key_of(i): i.source for i in objects.ingresses}

    def report(self, ingress: Ingress, at: str, message: str, severity: Severity) -> None:
        self.issues.append(issue_at(ingress.source, "Ingress", ingress.meta.ref, at, message,
                                    severity))  # fmt: skip

    def run(self) -> Config:
        ingresses, issues = select_ingresses(self.objects, self.options.ingress_class)
        self.issues += issues
        served: list[tuple[Ingress, Policy]] = []
        for rank, ingress in enumerate(ingresses):
            policy = self.vet(ingress)
            if policy is not None:
                self.add_rules(rank, ingress, policy)
                served.append((ingress, policy))
        self.add_default_backends(served)
        secrets = {(s.meta.namespace, s.meta.name): s for s in self.objects.secrets}
        files = self.files if self.options.listen_tls is not None else None
        plan = plan_tls(served, secrets, files, self.excluded)
        self.issues += plan.issues
        self.tls_origins = plan.origins
        listeners = self.listeners(plan.redirect_hosts, plan.certificates)
        ordered = sorted(self.routes, key=lambda r: r[3])
        return Config(
            listeners=listeners,
            services=self.services,
            routes=[route for route, *_ in ordered],
            policies=self.policies,
            admin=self.options.admin,
        )

    def vet(self, ingress: Ingress) -> Policy | None:
        """The Ingress's policy, or None (and the Ingress rejected) when it cannot be served."""
        if key_of(ingress) in self.refused:
            return None
        policy, issues = read_policy(ingress)
        self.issues += issues
        ok = not any(i.severity == "error" for i in issues)
        for i, rule in enumerate(ingress.rules):
            for j, path in enumerate(rule.paths):
                at = f"spec.rules[{i}].http.paths[{j}].path"
                if path.path_type == "ImplementationSpecific" and path.path:
                    try:
                        re.compile(path.path)
                    except re.error as exc:
                        self.report(ingress, at, f"invalid regular expression: {exc}", "error")
                        ok = False
                elif _PERCENT.search(path.path):
                    self.report(ingress, at, "invalid percent-encoding", "error")
                    ok = False
                if ok and policy.rewrite_target is not None and policy.redirect is None:
                    action = route_action(policy.rewrite_target, None,
                                          _NATIVE_TYPE[path.path_type], path.path)  # fmt: skip
                    problem = action_problem(action)
                    if problem is not None:
                        self.report(ingress, at, problem, "error")
                        ok = False
        if ok and policy.basic_auth is not None:
            ok = self.add_basic_auth(ingress, policy, policy.basic_auth)
        if ok and policy.service:
            ok = self.vet_service(ingress, policy)
        if not ok:
            self.rejected.add(key_of(ingress))
            return None
        return policy

    def vet_service(self, ingress: Ingress, policy: Policy) -> bool:
        service = dict(policy.service)
        if policy.ca_secret is not None:
            ca_file = self.ca_file(ingress, policy.ca_secret)
            if ca_file is None:
                return False
            service["tls"] = {**service["tls"], "ca_file": ca_file}
        try:
            config = ServiceConfig.model_validate({"instances": [], **service})
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                where = ".".join(str(p) for p in error["loc"])
                self.report(ingress, "metadata.annotations", f"{where}: {error['msg']}", "error")
            return False
        problems = semantic.check(Config(services={"x": config}))
        for _, message in problems:
            self.report(ingress, "metadata.annotations", message, "error")
        policy.service.update(service)  # the CA file, for the services this Ingress makes
        return not problems

    def add_basic_auth(self, ingress: Ingress, policy: Policy, wanted: BasicAuthSecret) -> bool:
        """The users of the Secret ``auth-secret`` names, as the Ingress's ``basic_auth`` policy;
        False (the Ingress not served: never served open) when they cannot be checked."""
        at = f"metadata.annotations[{NGINX}auth-secret]"
        ref = f"{ingress.meta.namespace}/{wanted.name}"
        secret = self.secret(ingress, wanted.name)
        if secret is None:
            self.report(ingress, at, f"Secret {ref} not found{NOT_OPEN}", "error")
            return False
        users, problems = basic_auth_users(secret.data, wanted)
        for problem in problems:
            self.report(ingress, at, f"Secret {ref} {problem}{NOT_OPEN}", "error")
        if problems:
            return False
        try:
            config = BasicAuthConfig.model_validate({"realm": wanted.realm, "users": users})
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                where = ".".join(str(part) for part in error["loc"])
                self.report(ingress, at, f"Secret {ref}: {where}: {error['msg']}{NOT_OPEN}",
                            "error")  # fmt: skip
            return False
        name = f"ingress.{ingress.meta.namespace}.{ingress.meta.name}.basic-auth"
        policy.policies[name] = PolicyConfig(basic_auth=config)
        return True

    def secret(self, ingress: Ingress, name: str) -> Secret | None:
        """The Secret ``name`` of the Ingress's namespace, if there is one."""
        key = (ingress.meta.namespace, name)
        return next(
            (s for s in self.objects.secrets if (s.meta.namespace, s.meta.name) == key), None
        )

    def ca_file(self, ingress: Ingress, name: str) -> str | None:
        secret = self.secret(ingress, name)
        at = "metadata.annotations[portway.io/backend-tls-ca-secret]"
        if secret is None or "ca.crt" not in secret.data or self.files is None:
            self.report(ingress, at, f"Secret {ingress.meta.namespace}/{name} with a ca.crt not "
                        "found", "error")  # fmt: skip
            return None
        path = self.files.write(secret.meta.namespace, name, ".ca.crt", secret.data["ca.crt"])
        try:
            load_ca_bundle(path)
        except MaterialError:
            self.report(ingress, at, f"Secret {secret.meta.ref}: ca.crt holds no PEM certificate",
                        "error")  # fmt: skip
            return None
        return path

    def service_for(
        self, namespace: str, backend: Backend, policy: Policy, ingress: Ingress | None, at: str
    ) -> str:
        assert backend.service is not None
        name = f"{namespace}.{backend.service}.{backend.port}"
        if policy.key and ingress is not None:
            name += f"_{ingress.meta.name}"
        if name not in self.services:
            resolved = self.resolver.resolve(namespace, backend)
            unavailable = None
            if not resolved.instances and resolved.problem is not None:
                user = f"Ingress {ingress.meta.ref}" if ingress else "the default backend"
                unavailable = f"{resolved.problem} (a backend of {user})"
            self.services[name] = ServiceConfig.model_validate(
                {
                    "instances": list(resolved.instances),
                    **policy.service,
                    "unavailable": unavailable,
                }
            )
            if ingress is not None:
                self.service_origin[name] = ingress
        if not self.services[name].instances and ingress is not None:
            problem = self.resolver.resolve(namespace, backend).problem
            if problem is not None:
                self.report(ingress, f"{at}.service", f"{problem}: requests answer 503", "warning")
        return name

    def add_rules(self, rank: int, ingress: Ingress, policy: Policy) -> None:
        ref = ingress.meta.ref
        for i, rule in enumerate(ingress.rules):
            for j, path in enumerate(rule.paths):
                at = f"spec.rules[{i}].http.paths[{j}]"
                if path.backend.service is None:
                    self.report(ingress, f"{at}.backend.resource", "resource backends are not "
                                "supported: this path is not served", "warning")  # fmt: skip
                    continue
                path_type, text = _NATIVE_TYPE[path.path_type], path.path
                if path_type == "regex" and not text:
                    path_type, text = "prefix", "/"  # an empty ImplementationSpecific path: all
                key = (rule.host or "", path_type, _conflict_path(path_type, text))
                if key in self.claimed:
                    self.report(ingress, at, f"conflicts with {self.claimed[key]}, which wins "
                                "(older, or first): this path is not served", "warning")  # fmt: skip
                    continue
                self.claimed[key] = f"Ingress {ref} {at}"
                action = route_action(policy.rewrite_target, policy.redirect, path_type, text)
                service = None if policy.redirect is not None else self.service_for(
                    ingress.meta.namespace, path.backend, policy, ingress, f"{at}.backend")  # fmt: skip
                order = (1, -len(text), rank, i, j) if path_type == "regex" else (0, rank, i, j)
                names = self.use_policies(ingress, policy) if service is not None else []
                route = RouteConfig(name=f"{ref}/{i}/{j}", hosts=[rule.host] if rule.host else [],
                                    path=text, path_type=path_type, service=service,
                                    policies=names, **action)  # fmt: skip
                self.routes.append((route, ingress, at, order))
        if policy.app_root is not None:
            self.add_app_root(rank, ingress, policy.app_root)

    def use_policies(self, ingress: Ingress, policy: Policy) -> list[str]:
        """The names of the Ingress's route policies, now part of the config. Redirect routes get
        none: the redirect is answered first, as nginx's ``return`` runs before ``allow``."""
        self.policies.update(policy.policies)
        self.policy_origin.update(dict.fromkeys(policy.policies, ingress))
        return list(policy.policies)

    def add_app_root(self, rank: int, ingress: Ingress, app_root: str) -> None:
        """``/`` of each host of the Ingress answers 302 to the app root (ingress-nginx app-root)."""
        at = f"metadata.annotations[{NGINX}app-root]"
        hosts = list(dict.fromkeys(rule.host or "" for rule in ingress.rules)) or [""]
        for host in hosts:
            key = (host, "exact", "/")
            if key in self.claimed:
                self.report(ingress, at, f"/ of {host or 'every host'} is taken by "
                            f"{self.claimed[key]}: not redirected", "warning")  # fmt: skip
                continue
            self.claimed[key] = f"Ingress {ingress.meta.ref} app-root"
            suffix = f"/{host}" if len(hosts) > 1 else ""
            route = RouteConfig(name=f"{ingress.meta.ref}/app-root{suffix}",
                                hosts=[host] if host else [], path="/", path_type="exact",
                                redirect=RedirectConfig(to=app_root.replace("$", "$$"), status=302))  # fmt: skip
            self.routes.append((route, ingress, at, (0, rank, -1, 0)))

    def add_default_backends(self, served: list[tuple[Ingress, Policy]]) -> None:
        catch_all = ("", "prefix", "/")
        for ingress, policy in served:
            backend = ingress.default_backend
            if backend is None:
                continue
            if backend.service is None:
                self.report(ingress, "spec.defaultBackend.resource", "resource backends are not "
                            "supported: the default backend is not served", "warning")  # fmt: skip
                continue
            hosts = dict.fromkeys(rule.host for rule in ingress.rules if rule.host)
            targets = [(host, f"/{host}") for host in hosts]
            if catch_all not in self.claimed:
                targets.append(("", ""))
            elif not hosts:
                self.report(ingress, "spec.defaultBackend", f"{self.claimed[catch_all]} already "
                            "answers requests no rule matches", "warning")  # fmt: skip
            for host, suffix in targets:
                key = (host, "prefix", "/")
                if key in self.claimed:
                    continue
                self.claimed[key] = f"Ingress {ingress.meta.ref} spec.defaultBackend"
                name = self.service_for(ingress.meta.namespace, backend, policy, ingress,
                                        "spec.defaultBackend")  # fmt: skip
                route = RouteConfig(name=f"{ingress.meta.ref}/default-backend{suffix}",
                                    hosts=[host] if host else [], path="/", service=name,
                                    policies=self.use_policies(ingress, policy))  # fmt: skip
                self.routes.append((route, ingress, "spec.defaultBackend", (2, 0)))
        if self.options.default_backend is not None and catch_all not in self.claimed:
            namespace, backend = parse_default_backend(self.options.default_backend)
            name = self.service_for(namespace, backend, Policy(), None, "")
            route = RouteConfig(name=CONTROLLER_DEFAULT, path="/", service=name)
            self.routes.append((route, None, "", (3,)))

    def listeners(
        self, redirect_hosts: list[str], certificates: Sequence[CertificateConfig]
    ) -> list[ListenerConfig]:
        tls_address = self.options.listen_tls
        redirect = None
        if tls_address is not None and redirect_hosts:
            port = parse_host_port(tls_address)[1] or 443
            redirect = HttpsRedirectConfig(port=port, hosts=redirect_hosts)
        listeners = [
            ListenerConfig(address=a, https_redirect=redirect) for a in self.options.listen
        ]
        if tls_address is not None:
            tls = ListenerTlsConfig(certificates=list(certificates))
            listeners.append(ListenerConfig(address=tls_address, name="https", tls=tls))
        return listeners

    def origin(self, path: tuple[str | int, ...]) -> tuple[ObjectKey, str, Source] | None:
        """The object (key, field, source) that made the config element at ``path``."""
        if len(path) >= 2 and path[0] == "routes" and isinstance(path[1], int):
            _, ingress, at, _ = sorted(self.routes, key=lambda r: r[3])[path[1]]
            return (key_of(ingress), at, ingress.source) if ingress is not None else None
        origins = {"services": self.service_origin, "policies": self.policy_origin}
        if len(path) >= 2 and path[1] in origins.get(str(path[0]), {}):
            ingress = origins[str(path[0])][str(path[1])]
            return key_of(ingress), "metadata.annotations", ingress.source
        if len(path) >= 5 and path[0] == "listeners" and path[2:4] == ("tls", "certificates"):
            position = int(path[4]) - 1  # the fallback certificate comes first
            if 0 <= position < len(self.tls_origins):
                key, at = self.tls_origins[position]
                return key, at, self.sources[key]
        return None


def _conflict_path(path_type: str, path: str) -> str:
    """Prefix ``/foo`` and ``/foo/`` match the same requests: one key."""
    return path.rstrip("/") or "/" if path_type == "prefix" else path
