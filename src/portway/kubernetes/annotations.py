"""Ingress annotations -> the native service and listener features they stand for.

Two families are read. ``portway.io/*`` annotations spell the native settings directly
(``portway.io/read-timeout: 30s``). ``nginx.ingress.kubernetes.io/*`` annotations are honoured with
ingress-nginx's meaning where a native feature does the same thing, so that Ingresses migrate
unchanged; where both set one thing the ``portway.io/`` one wins. The outcome of each annotation:

* mapped: it changes the services this Ingress's backends get (each Ingress with policy
  annotations gets services of its own, so two Ingresses may treat one Service differently), its
  routes (``rewrites``) or the route policies of its routes (``policies``: allowlists, rate
  limits, CORS);
* not supported yet (warning): the Ingress serves without it;
* refused (error): the Ingress is not served, because serving it without the annotation would be
  wrong: a snippet (raw nginx configuration: the CVE-2021-25742 / CVE-2025-1974 class of hole that
  sank ingress-nginx), a value that cannot be parsed, a backend protocol Portway cannot speak.

The full table is in docs/kubernetes.md; ``SUPPORTED`` below is its source for the keys.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from portway.config.policies import PolicyConfig
from portway.config.types import parse_duration
from portway.kubernetes import policies, rewrites
from portway.kubernetes.issues import ManifestIssue, Severity, issue_at
from portway.kubernetes.objects import Ingress
from portway.kubernetes.policies import BasicAuthSecret

NGINX = "nginx.ingress.kubernetes.io/"
PORTWAY = "portway.io/"
HASHING = ("ring_hash", "maglev")
ALGORITHMS = ("round_robin", "least_request", "random", "ring_hash", "maglev")
NGINX_BALANCE = {"round_robin": "round_robin", "ewma": "least_request"}
NGINX_SUPPORTED = frozenset(
    {
        "load-balance", "upstream-hash-by", "affinity", "affinity-mode", "session-cookie-name",
        "session-cookie-max-age", "session-cookie-expires", "session-cookie-path",
        "session-cookie-secure", "proxy-connect-timeout", "proxy-read-timeout", "backend-protocol",
        "ssl-redirect", "force-ssl-redirect", "use-regex", "rewrite-target", "app-root",
        "permanent-redirect", "permanent-redirect-code", "temporal-redirect",
    }
) | policies.NGINX_KEYS  # fmt: skip
PORTWAY_SUPPORTED = frozenset(
    {
        "load-balance", "hash-on", "affinity", "session-cookie-name", "session-cookie-max-age",
        "session-cookie-path", "session-cookie-secure", "connect-timeout", "read-timeout",
        "request-timeout", "backend-protocol", "backend-tls-ca-secret", "backend-tls-server-name",
        "ssl-redirect", "force-ssl-redirect",
    }
)  # fmt: skip
_NGINX_TIME = re.compile(r"(\d+)(ms|s|m|h|d|w|M|y)?")
_NGINX_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800,
                "M": 2592000, "y": 31536000}  # fmt: skip
_HASH_VARIABLE = re.compile(r"^\$(http_|cookie_)?([A-Za-z0-9_-]+)$")


@dataclass(frozen=True, slots=True)
class Policy:
    """What an Ingress's annotations ask for."""

    service: dict[str, Any] = field(default_factory=dict)  # ServiceConfig fields to set
    ssl_redirect: bool = True  # TLS hosts redirect HTTP to HTTPS
    force_ssl_redirect: bool = False  # every host of the Ingress redirects, TLS section or not
    ca_secret: str | None = None  # a Secret (same namespace) whose ca.crt verifies the backends
    rewrite_target: str | None = None  # rewrite-target as a native replacement (``\\1``)
    redirect: dict[str, Any] | None = None  # every path answers this (RedirectConfig fields)
    app_root: str | None = None  # "/" of each host of the Ingress redirects here (302)
    # Route policies (address filter, rate limits, CORS) by name, for every route of the Ingress
    policies: dict[str, PolicyConfig] = field(default_factory=dict)
    # auth-type: basic: the Secret whose users translate adds as a basic_auth policy
    basic_auth: BasicAuthSecret | None = None

    @property
    def key(self) -> str:
        """Equal for equal service policies: names the per-Ingress services."""
        return json.dumps([self.service, self.ca_secret], sort_keys=True) if self.service else ""


class _Annotations:
    def __init__(self, ingress: Ingress) -> None:
        self.ingress = ingress
        self.issues: list[ManifestIssue] = []

    def report(self, key: str, message: str, severity: Severity = "error") -> None:
        at = f"metadata.annotations[{key}]"
        ingress = self.ingress
        self.issues.append(
            issue_at(ingress.source, "Ingress", ingress.meta.ref, at, message, severity)
        )

    def get(self, name: str) -> tuple[str, str] | None:
        """(key, value) of ``portway.io/name``, else of the nginx spelling ``nginx_name``."""
        annotations = self.ingress.meta.annotations
        for key in (PORTWAY + name, NGINX + _NGINX_SPELLING.get(name, name)):
            if key in annotations and (key.startswith(PORTWAY) or name in _NGINX_READ):
                return key, annotations[key].strip()
        return None

    def boolean(self, name: str, default: bool) -> bool:
        found = self.get(name)
        if found is None:
            return default
        key, value = found
        if value.lower() not in ("true", "false"):
            self.report(key, f'expected "true" or "false", got {value!r}')
            return default
        return value.lower() == "true"

    def seconds(self, name: str) -> float | None:
        found = self.get(name)
        if found is None:
            return None
        key, value = found
        try:
            return parse_duration(value) if key.startswith(PORTWAY) else nginx_time(value)
        except ValueError as exc:
            self.report(key, f"not a duration: {value!r} ({exc})")
            return None


# Our name -> the nginx annotation's name, where they differ; and the ones nginx spells at all.
_NGINX_SPELLING = {"connect-timeout": "proxy-connect-timeout", "read-timeout": "proxy-read-timeout",
                   "hash-on": "upstream-hash-by"}  # fmt: skip
_NGINX_READ = frozenset(
    {"load-balance", "hash-on", "affinity", "session-cookie-name", "session-cookie-max-age",
     "session-cookie-path", "session-cookie-secure", "connect-timeout", "read-timeout",
     "backend-protocol", "ssl-redirect", "force-ssl-redirect"}
)  # fmt: skip


def nginx_time(value: str) -> float:
    """nginx's time syntax: ``30`` (seconds), ``500ms``, ``1m30s``; units ms s m h d w M y."""
    text, total, position = value.strip(), 0.0, 0
    if not text:
        raise ValueError("empty")
    for match in _NGINX_TIME.finditer(text):
        if match.start() != position:
            break
        total += int(match.group(1)) * _NGINX_UNITS[match.group(2) or "s"]
        position = match.end()
    if position != len(text):
        raise ValueError("expected seconds, or a number with a unit ms, s, m, h, d, w, M, y")
    return total


def read_policy(ingress: Ingress) -> tuple[Policy, list[ManifestIssue]]:
    """The Ingress's policy and every problem with its annotations (see the module docstring)."""
    reader = _Annotations(ingress)
    annotations = ingress.meta.annotations
    _classify(reader)
    service: dict[str, Any] = {}
    _balancing(reader, service)
    _affinity(reader, service)
    for name, setting in (("connect-timeout", "connect_timeout"), ("read-timeout", "read_timeout"),
                          ("request-timeout", "request_timeout")):  # fmt: skip
        seconds = reader.seconds(name)
        if seconds is not None:
            service[setting] = seconds
    ca_secret = _backend_protocol(reader, service)
    affinity = reader.get("affinity")
    if affinity is not None and "sticky" in service and service.get("algorithm") in HASHING:
        reader.report(affinity[0], "cookie affinity and hashing both choose the instance: set one")
    policy = Policy(
        service=service,
        ssl_redirect=reader.boolean("ssl-redirect", True),
        force_ssl_redirect=reader.boolean("force-ssl-redirect", False),
        ca_secret=ca_secret,
        **rewrites.read_rewrites(annotations, reader.report),
        **policies.read_policies(annotations, _policy_prefix(ingress), reader.report),
        basic_auth=policies.basic_auth_secret(annotations, ingress.meta.namespace, reader.report),
    )
    return policy, reader.issues


def _policy_prefix(ingress: Ingress) -> str:
    """``ingress.<namespace>.<name>``: Kubernetes names are lower-case DNS names and namespaces
    have no dot, so the policy names are valid native names and unique per Ingress."""
    return f"ingress.{ingress.meta.namespace}.{ingress.meta.name}"


def _classify(reader: _Annotations) -> None:
    for key, value in reader.ingress.meta.annotations.items():
        if key.startswith(NGINX):
            name = key[len(NGINX) :]
            if name.endswith("-snippet") or name == "configuration-snippet":
                reader.report(
                    key,
                    "snippet annotations are refused: they inject raw proxy configuration, the "
                    "hole behind CVE-2021-25742 and CVE-2025-1974 in ingress-nginx",
                )
            elif name in policies.REFUSED:
                reader.report(key, policies.REFUSED[name])
            elif name not in NGINX_SUPPORTED:
                generic = "not supported yet: the Ingress serves without it"
                reader.report(key, policies.NOT_YET.get(name, generic), "warning")
            elif name == "affinity-mode" and value.strip() != "balanced":
                reader.report(key, f"affinity-mode {value!r} is not supported yet", "warning")
        elif key.startswith(PORTWAY) and key[len(PORTWAY) :] not in PORTWAY_SUPPORTED:
            close = difflib.get_close_matches(key[len(PORTWAY) :], sorted(PORTWAY_SUPPORTED), 1)
            hint = f" (did you mean {PORTWAY}{close[0]}?)" if close else ""
            reader.report(key, f"unknown Portway annotation{hint}", "warning")


def _balancing(reader: _Annotations, service: dict[str, Any]) -> None:
    found = reader.get("load-balance")
    if found is not None:
        key, value = found
        algorithm = value if key.startswith(PORTWAY) else NGINX_BALANCE.get(value)
        if algorithm in ALGORITHMS:
            service["algorithm"] = algorithm
        else:
            allowed = ALGORITHMS if key.startswith(PORTWAY) else tuple(NGINX_BALANCE)
            reader.report(key, f"unknown algorithm {value!r} (one of: {', '.join(allowed)})")
    found = reader.get("hash-on")
    if found is None:
        return
    key, value = found
    hash_on = _hash_on(reader, key, value)
    if hash_on is not None:
        service["hash_on"] = hash_on
        if service.get("algorithm") not in ("ring_hash", "maglev"):
            service["algorithm"] = "ring_hash"  # nginx's consistent hash is a (ketama) ring


def _hash_on(reader: _Annotations, key: str, value: str) -> dict[str, Any] | None:
    if key.startswith(PORTWAY):
        kind, _, name = value.partition(":")
        if kind == "client-ip" and not name:
            return {"client_ip": True}
        if kind in ("header", "cookie") and name:
            return {kind: name}
        reader.report(key, f"expected header:NAME, cookie:NAME or client-ip, got {value!r}")
        return None
    match = _HASH_VARIABLE.match(value)
    if match is None or match.group(2) in ("request_uri", "uri", "args", "host"):
        message = f"hashing on {value!r} is not supported yet (supported: $http_NAME, "
        reader.report(key, message + "$cookie_NAME, $remote_addr)", "warning")
        return None
    prefix, name = match.groups()
    if prefix == "http_":
        return {"header": name.replace("_", "-")}
    if prefix == "cookie_":
        return {"cookie": name}
    if name in ("remote_addr", "binary_remote_addr"):
        return {"client_ip": True}
    reader.report(key, f"hashing on nginx variable {value!r} is not supported yet", "warning")
    return None


def _affinity(reader: _Annotations, service: dict[str, Any]) -> None:
    found = reader.get("affinity")
    if found is None:
        return
    key, value = found
    if value != "cookie":
        reader.report(key, f"only cookie affinity exists, got {value!r}")
        return
    nginx = key.startswith(NGINX)
    sticky: dict[str, Any] = {"cookie": "INGRESSCOOKIE" if nginx else "portway_sticky"}
    name = reader.get("session-cookie-name")
    if name is not None:
        sticky["cookie"] = name[1]
    max_age = reader.get("session-cookie-max-age")
    if (
        max_age is None
        and nginx
        and NGINX + "session-cookie-expires" in reader.ingress.meta.annotations
    ):
        max_age = (NGINX + "session-cookie-expires",
                   reader.ingress.meta.annotations[NGINX + "session-cookie-expires"])  # fmt: skip
    if max_age is not None:
        try:
            seconds = (
                parse_duration(max_age[1]) if max_age[0].startswith(PORTWAY) else int(max_age[1])
            )
        except ValueError:
            reader.report(max_age[0], f"expected seconds, got {max_age[1]!r}")
        else:
            sticky["max_age"] = float(seconds)
    path = reader.get("session-cookie-path")
    if path is not None:
        sticky["path"] = path[1]
    sticky["secure"] = reader.boolean("session-cookie-secure", False)
    service["sticky"] = sticky


def _backend_protocol(reader: _Annotations, service: dict[str, Any]) -> str | None:
    found = reader.get("backend-protocol")
    protocol = found[1].upper() if found is not None else "HTTP"
    ca = reader.get("backend-tls-ca-secret")
    server_name = reader.get("backend-tls-server-name")
    if protocol == "HTTP":
        for extra in (ca, server_name):
            if extra is not None:
                reader.report(extra[0], "only applies with backend-protocol HTTPS", "warning")
        return None
    assert found is not None
    if protocol != "HTTPS":
        known = protocol in ("GRPC", "GRPCS", "AUTO_HTTP", "FCGI", "H2C")
        why = "not supported yet: Portway speaks HTTP/1.1 and HTTPS to backends"
        reader.report(found[0], f"backend protocol {found[1]!r} is {why if known else 'unknown'}")
        return None
    tls: dict[str, Any] = {"verify": ca is not None}
    if server_name is not None:
        tls["server_name"] = server_name[1]
    service["tls"] = tls
    return ca[1] if ca is not None else None
