"""TLS rules that need the files or more than one field: material that cannot be served, hosts a
certificate does not cover, two certificates claiming one host, routes to unknown services.

Reading the files here is what makes ``portway validate`` (and a reload) refuse an expired or
mismatched certificate before any listener would serve it.
"""

from __future__ import annotations

from portway.config.model import Config, ListenerConfig, ServiceConfig
from portway.config.reference import FieldPath
from portway.config.tls import UpstreamTlsConfig
from portway.pki import MaterialError, load_ca_bundle, load_key_pair

Issue = tuple[FieldPath, str]


def name_covers(name: str, host: str) -> bool:
    """Does the certificate name ``name`` (maybe ``*.domain``) cover ``host`` (RFC 6125 §6.4.3)?"""
    if name == host:
        return True
    if name.startswith("*.") and not host.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == name[2:]
    return False


def check_tls(config: Config) -> list[Issue]:
    issues: list[Issue] = []
    plain_listener = any(
        lc.tls is None and lc.passthrough is None for lc in config.listeners
    )
    for index, listener in enumerate(config.listeners):
        path: FieldPath = ("listeners", index)
        if listener.tls is not None:
            issues += _check_listener_tls(listener, path, plain_listener)
        if listener.passthrough is not None:
            issues += _check_passthrough(listener, path, config.services)
    for name, service in config.services.items():
        issues += _check_upstream_tls(service.tls, ("services", name, "tls"))
    for name, policy in config.policies.items():
        if policy.forward_auth is not None:
            path = ("policies", name, "forward_auth", "tls")
            issues += _check_upstream_tls(policy.forward_auth.tls, path)
    issues += _check_acme_folders(config)
    return issues


def _check_acme_folders(config: Config) -> list[Issue]:
    """ACME certificates are stored under their first host: two host lists sharing a first host
    would share one certificate."""
    issues: list[Issue] = []
    first: dict[str, tuple[list[str], FieldPath]] = {}
    for index, listener in enumerate(config.listeners):
        if listener.tls is None:
            continue
        for position, certificate in enumerate(listener.tls.certificates):
            if not certificate.acme:
                continue
            at: FieldPath = ("listeners", index, "tls", "certificates", position, "hosts")
            hosts = list(certificate.hosts)
            seen = first.setdefault(hosts[0], (hosts, at))
            if seen[0] != hosts:
                issues.append(
                    (
                        at,
                        f"ACME certificates are kept by their first host, and '{hosts[0]}' also "
                        f"starts another host list ({', '.join(seen[0])}): use the same list or "
                        "another first host",
                    )
                )
    return issues


def _check_listener_tls(
    listener: ListenerConfig, path: FieldPath, plain_listener: bool
) -> list[Issue]:
    assert listener.tls is not None
    issues: list[Issue] = []
    claimed: dict[str, int] = {}
    for position, certificate in enumerate(listener.tls.certificates):
        at: FieldPath = (*path, "tls", "certificates", position)
        hosts = list(certificate.hosts)
        if certificate.acme:
            if not plain_listener:
                issues.append(
                    (
                        (*at, "acme"),
                        "ACME HTTP-01 needs a plain-HTTP listener to answer the CA's challenge",
                    )
                )
        else:
            assert certificate.cert_file is not None and certificate.key_file is not None
            try:
                pair = load_key_pair(certificate.cert_file, certificate.key_file)
            except MaterialError as exc:
                field = "key_file" if str(exc).startswith("key_file") else "cert_file"
                issues.append(((*at, field), str(exc)))
                continue
            names = pair.info.names
            for host in hosts:
                if not any(name_covers(name, host) for name in names):
                    issues.append(
                        (
                            (*at, "hosts"),
                            f"host '{host}' is not among the names of the certificate in "
                            f"{certificate.cert_file} ({', '.join(names) or 'none'})",
                        )
                    )
            hosts = hosts or list(names)
        if certificate.client_auth is not None:
            try:
                load_ca_bundle(certificate.client_auth.ca_file)
            except MaterialError as exc:
                issues.append(((*at, "client_auth", "ca_file"), str(exc)))
        for host in hosts:
            if host in claimed:
                issues.append(
                    (
                        (*at, "hosts"),
                        f"host '{host}' is also served by certificates[{claimed[host]}] of "
                        "this listener: each name needs one certificate",
                    )
                )
            else:
                claimed[host] = position
    default = listener.tls.default_certificate
    if default is not None and default not in claimed and not issues:
        issues.append(
            (
                (*path, "tls", "default_certificate"),
                f"no certificate of this listener serves '{default}' "
                f"(served: {', '.join(claimed) or 'none'})",
            )
        )
    return issues


def _check_passthrough(
    listener: ListenerConfig, path: FieldPath, services: dict[str, ServiceConfig]
) -> list[Issue]:
    assert listener.passthrough is not None
    issues: list[Issue] = []
    defined = ", ".join(services) or "none"
    claimed: dict[str, int] = {}
    for position, route in enumerate(listener.passthrough.routes):
        at: FieldPath = (*path, "passthrough", "routes", position)
        if route.service not in services:
            issues.append(((*at, "service"), f"unknown service '{route.service}' ({defined})"))
        elif services[route.service].tls is not None:
            issues.append(
                (
                    (*at, "service"),
                    f"service '{route.service}' has tls settings, but passthrough relays the "
                    "client's own TLS unterminated: remove them or use a TLS listener",
                )
            )
        for host in route.hosts:
            if host in claimed:
                issues.append(
                    ((*at, "hosts"), f"host '{host}' is also routed by routes[{claimed[host]}]")
                )
            else:
                claimed[host] = position
    default = listener.passthrough.default_service
    if default is not None and default not in services:
        issues.append(
            ((*path, "passthrough", "default_service"), f"unknown service '{default}' ({defined})")
        )
    return issues


def _check_upstream_tls(tls: UpstreamTlsConfig | None, path: FieldPath) -> list[Issue]:
    """TLS as a client (to a service's instances, to an auth service): its files must load."""
    if tls is None:
        return []
    issues: list[Issue] = []
    if tls.ca_file is not None:
        try:
            load_ca_bundle(tls.ca_file)
        except MaterialError as exc:
            issues.append(((*path, "ca_file"), str(exc)))
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            load_key_pair(tls.cert_file, tls.key_file)
        except MaterialError as exc:
            field = "key_file" if str(exc).startswith("key_file") else "cert_file"
            issues.append(((*path, field), str(exc)))
    return issues
