"""``spec.tls`` -> certificates on the HTTPS listener, and the hosts redirected to HTTPS.

Each Secret named by a ``spec.tls`` entry becomes one certificate whose hosts are the entry's
``hosts`` (all entries naming it, merged), or the certificate's own DNS names when ``hosts`` is
empty. A host is served by one certificate: the oldest Ingress claiming it wins and later claims
with another Secret are reported. A Secret that is missing, not of type ``kubernetes.io/tls`` or
whose material does not load (garbage, key not matching, expired) skips the TLS entry, reported;
the Ingress still serves its rules over HTTP. A host the certificate does not cover is reported
and not served with it. Redirects: the TLS hosts of an Ingress redirect HTTP to HTTPS unless its
``ssl-redirect`` annotation is "false"; ``force-ssl-redirect`` redirects every host of its rules.
The redirect is per host in Portway (not per path as in ingress-nginx), so one Ingress saying
``ssl-redirect: "false"`` for a host turns it off for that host.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from portway.config.tls import CertificateConfig
from portway.config.tls_checks import name_covers
from portway.config.types import validate_host_pattern
from portway.kubernetes.annotations import Policy
from portway.kubernetes.files import FALLBACK_HOST, SecretFiles
from portway.kubernetes.issues import ManifestIssue, Severity, issue_at
from portway.kubernetes.objects import Ingress, ObjectKey, Secret, key_of
from portway.pki import MaterialError, load_key_pair

TLS_SECRET = "kubernetes.io/tls"


@dataclass(slots=True)
class TlsPlan:
    certificates: list[CertificateConfig] = field(default_factory=list)
    # Per certificate after the fallback: the Ingress and spec.tls field that first named it.
    origins: list[tuple[ObjectKey, str]] = field(default_factory=list)
    redirect_hosts: list[str] = field(default_factory=list)
    issues: list[ManifestIssue] = field(default_factory=list)


@dataclass(slots=True)
class _Material:
    cert_file: str
    key_file: str
    names: list[str]
    hosts: list[str] = field(default_factory=list)


class _Planner:
    def __init__(self, secrets: dict[tuple[str, str], Secret], files: SecretFiles) -> None:
        self.secrets, self.files = secrets, files
        self.plan = TlsPlan()
        self.materials: dict[tuple[str, str], _Material | None] = {}
        self.claims: dict[str, tuple[tuple[str, str], str]] = {}  # host -> secret, claimant
        self.origins: dict[tuple[str, str], tuple[ObjectKey, str]] = {}

    def report(self, ingress: Ingress, at: str, message: str, severity: Severity) -> None:
        self.plan.issues.append(issue_at(ingress.source, "Ingress", ingress.meta.ref, at, message,
                                         severity))  # fmt: skip

    def material(self, secret: Secret) -> _Material | None:
        key = (secret.meta.namespace, secret.meta.name)
        if key in self.materials:
            return self.materials[key]
        ns, name = key
        cert = self.files.write(ns, name, ".crt", secret.data.get("tls.crt", b""))
        private = self.files.write(ns, name, ".key", secret.data.get("tls.key", b""))
        found: _Material | None = None
        try:
            pair = load_key_pair(cert, private)
        except MaterialError as exc:
            message = str(exc).replace(f"cert_file {cert}", "tls.crt")
            message = message.replace(f"key_file {private}", "tls.key").replace(cert, "tls.crt")
            self.plan.issues.append(
                issue_at(secret.source, "Secret", secret.meta.ref, "data", message)
            )
        else:
            found = _Material(cert, private, [n for n in pair.info.names if _is_host(n)])
        self.materials[key] = found
        return found

    def entry(
        self, ingress: Ingress, index: int, hosts: tuple[str, ...], secret_name: str
    ) -> list[str]:
        """Serve one spec.tls entry; returns the hosts it serves."""
        at = f"spec.tls[{index}]"
        secret_key = (ingress.meta.namespace, secret_name)
        secret = self.secrets.get(secret_key)
        ref = f"{ingress.meta.namespace}/{secret_name}"
        if secret is None or secret.type != TLS_SECRET:
            why = "not found" if secret is None else f"of type {secret.type}, not {TLS_SECRET}"
            self.report(ingress, f"{at}.secretName",
                        f"Secret {ref} {why}: these hosts are not served over HTTPS", "error")  # fmt: skip
            return []
        material = self.material(secret)
        if material is None:
            self.report(ingress, f"{at}.secretName", f"Secret {ref} holds no usable certificate "
                        "(see its own issue): these hosts are not served over HTTPS", "error")  # fmt: skip
            return []
        served = []
        for position, host in enumerate(hosts or tuple(material.names)):
            where = f"{at}.hosts[{position}]" if hosts else at
            if not any(name_covers(name, host) for name in material.names):
                names = ", ".join(material.names) or "none"
                self.report(ingress, where, f"the certificate in Secret {ref} does not cover "
                            f"{host} (its names: {names}): not served over HTTPS", "error")  # fmt: skip
                continue
            claim = self.claims.get(host)
            if claim is not None and claim[0] != secret_key:
                self.report(ingress, where, f"host {host} already has a certificate from "
                            f"{claim[1]}, which is older: this one is not used", "warning")  # fmt: skip
                continue
            if claim is None:
                self.claims[host] = (secret_key, f"Ingress {ingress.meta.ref} {at}")
                material.hosts.append(host)
            self.origins.setdefault(secret_key, (key_of(ingress), at))
            served.append(host)
        return served


def plan_tls(
    ingresses: list[tuple[Ingress, Policy]],
    secrets: dict[tuple[str, str], Secret],
    files: SecretFiles | None,
    excluded: set[tuple[ObjectKey, str]],
) -> TlsPlan:
    """Certificates and redirect hosts for ``ingresses`` (oldest first); ``files`` None: no HTTPS
    listener, so TLS sections are reported as not served."""
    if files is None:
        plan = TlsPlan()
        for ingress, _ in ingresses:
            if ingress.tls:
                plan.issues.append(issue_at(ingress.source, "Ingress", ingress.meta.ref, "spec.tls",
                                            "no HTTPS listener (--listen-tls): served over HTTP only",
                                            "warning"))  # fmt: skip
        return plan
    planner = _Planner(secrets, files)
    redirect: dict[str, None] = {}
    for ingress, policy in ingresses:
        for index, entry in enumerate(ingress.tls):
            if (key_of(ingress), f"spec.tls[{index}]") in excluded:
                continue
            if entry.secret_name is None:
                planner.report(ingress, f"spec.tls[{index}]", "no secretName: these hosts get the "
                               "fallback certificate", "warning")  # fmt: skip
                continue
            served = planner.entry(ingress, index, entry.hosts, entry.secret_name)
            if policy.ssl_redirect or policy.force_ssl_redirect:
                redirect.update(dict.fromkeys(served))
        if policy.force_ssl_redirect:
            redirect.update(dict.fromkeys(r.host for r in ingress.rules if r.host))
    for ingress, policy in ingresses:
        if not policy.ssl_redirect and not policy.force_ssl_redirect:
            for rule in ingress.rules:
                redirect.pop(rule.host or "", None)
    plan = planner.plan
    fallback_cert, fallback_key = files.fallback()
    plan.certificates.append(
        CertificateConfig(cert_file=fallback_cert, key_file=fallback_key, hosts=[FALLBACK_HOST])
    )
    for secret_key, material in planner.materials.items():
        if material is not None and material.hosts:
            plan.certificates.append(CertificateConfig(
                cert_file=material.cert_file, key_file=material.key_file, hosts=material.hosts
            ))  # fmt: skip
            plan.origins.append(planner.origins[secret_key])
    plan.redirect_hosts = list(redirect)
    return plan


def _is_host(name: str) -> bool:
    try:
        validate_host_pattern(name)
    except ValueError:
        return False
    return True
