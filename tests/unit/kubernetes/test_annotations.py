"""Annotations: every supported mapping onto native service settings, ingress-nginx's spellings
(ingress-nginx docs, "Annotations"), refused snippets, and reported unknowns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from portway.kubernetes.annotations import nginx_time
from tests.unit.kubernetes.manifests import build, ingress, issues_about, path, pick, rule, write

N = "nginx.ingress.kubernetes.io/"
P = "portway.io/"


def service_of(tmp_path: Path, annotations: dict[str, str]) -> tuple[dict[str, Any], Any]:
    """The native service the annotated Ingress's backend gets, as a dict, and the report."""
    folder = write(tmp_path / "m", ingress("x", rule(None, path("/", "web")),
                                           annotations=annotations))  # fmt: skip
    config, report = build(folder)
    name = pick(config, "a.example.com/")
    assert name is not None
    return config.services[name].model_dump(), report


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({N + "load-balance": "round_robin"}, {"algorithm": "round_robin"}),
        ({N + "load-balance": "ewma"}, {"algorithm": "least_request"}),
        ({P + "load-balance": "maglev"}, {"algorithm": "maglev"}),
        ({N + "upstream-hash-by": "$http_x_user"},
         {"algorithm": "ring_hash", "hash_on": {"header": "x-user", "cookie": None,
                                                "client_ip": False}}),
        ({N + "upstream-hash-by": "$cookie_session"},
         {"algorithm": "ring_hash", "hash_on": {"header": None, "cookie": "session",
                                                "client_ip": False}}),
        ({N + "upstream-hash-by": "$remote_addr"},
         {"algorithm": "ring_hash", "hash_on": {"header": None, "cookie": None,
                                                "client_ip": True}}),
        ({P + "hash-on": "header:x-tenant", P + "load-balance": "maglev"},
         {"algorithm": "maglev", "hash_on": {"header": "x-tenant", "cookie": None,
                                             "client_ip": False}}),
        ({N + "affinity": "cookie", N + "session-cookie-name": "route",
          N + "session-cookie-max-age": "172800", N + "session-cookie-path": "/app"},
         {"sticky": {"cookie": "route", "max_age": 172800.0, "path": "/app", "secure": False,
                     "http_only": True}}),
        ({N + "affinity": "cookie"},
         {"sticky": {"cookie": "INGRESSCOOKIE", "max_age": None, "path": "/", "secure": False,
                     "http_only": True}}),
        ({P + "affinity": "cookie", P + "session-cookie-max-age": "1h",
          P + "session-cookie-secure": "true"},
         {"sticky": {"cookie": "portway_sticky", "max_age": 3600.0, "path": "/", "secure": True,
                     "http_only": True}}),
        ({N + "proxy-connect-timeout": "3", N + "proxy-read-timeout": "1m30s"},
         {"connect_timeout": 3.0, "read_timeout": 90.0}),
        ({P + "connect-timeout": "250ms", P + "read-timeout": "2m", P + "request-timeout": "10s"},
         {"connect_timeout": 0.25, "read_timeout": 120.0, "request_timeout": 10.0}),
        ({N + "backend-protocol": "HTTPS"},
         {"tls": {"ca_file": None, "verify": False, "server_name": None, "cert_file": None,
                  "key_file": None, "min_version": "1.2"}}),
        ({N + "backend-protocol": "HTTP"}, {"tls": None}),
        ({P + "read-timeout": "5s", N + "proxy-read-timeout": "60"}, {"read_timeout": 5.0}),
    ],
)  # fmt: skip
def test_supported_annotations_map_onto_the_service(
    tmp_path: Path, annotations: dict[str, str], expected: dict[str, Any]
) -> None:
    service, report = service_of(tmp_path, annotations)
    assert {key: service[key] for key in expected} == expected
    assert [i for i in report.issues if "EndpointSlice" not in i.message and
            "not found" not in i.message] == []  # fmt: skip


def test_services_are_per_ingress_when_annotations_change_them(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "m",
        ingress("slow", rule("slow.example.com", path("/", "web")),
                annotations={P + "read-timeout": "300s"}),
        ingress("plain", rule("plain.example.com", path("/", "web"))),
    )  # fmt: skip
    config, _ = build(folder)
    assert pick(config, "slow.example.com/") == "default.web.80_slow"
    assert pick(config, "plain.example.com/") == "default.web.80"
    assert config.services["default.web.80_slow"].read_timeout == 300.0
    assert config.services["default.web.80"].read_timeout == 60.0


@pytest.mark.parametrize(
    "snippet",
    ["configuration-snippet", "server-snippet", "stream-snippet", "auth-snippet",
     "modsecurity-snippet"],
)  # fmt: skip
def test_snippet_annotations_refuse_the_ingress(tmp_path: Path, snippet: str) -> None:
    folder = write(
        tmp_path / "m",
        ingress("evil", rule("evil.example.com", path("/", "web")),
                annotations={N + snippet: "more_set_headers 'x: y';"}),
        ingress("fine", rule("fine.example.com", path("/", "web"))),
    )  # fmt: skip
    config, report = build(folder)
    [issue] = issues_about(report, snippet)
    assert issue.severity == "error" and "CVE-2025-1974" in issue.message
    assert pick(config, "evil.example.com/") is None
    assert pick(config, "fine.example.com/") == "default.web.80"


@pytest.mark.parametrize(
    ("key", "value", "severity", "message"),
    [
        (P + "read-timout", "5s", "warning", "unknown Portway annotation (did you mean "
                                             "portway.io/read-timeout?)"),
        (N + "x-forwarded-prefix", "/x", "warning", "not supported yet: the Ingress serves "
                                                      "without it"),
        (N + "upstream-hash-by", "$request_uri", "warning", "not supported yet"),
        (N + "affinity-mode", "persistent", "warning", "not supported yet"),
        (N + "load-balance", "least_conn", "error", "unknown algorithm 'least_conn'"),
        (N + "proxy-read-timeout", "soon", "error", "not a duration"),
        (P + "read-timeout", "5 parsecs", "error", "not a duration"),
        (N + "ssl-redirect", "yes", "error", "expected \"true\" or \"false\""),
        (N + "backend-protocol", "GRPC", "error", "not supported yet"),
        (N + "affinity", "ip", "error", "only cookie affinity"),
        (P + "hash-on", "uri", "error", "expected header:NAME, cookie:NAME or client-ip"),
    ],
)  # fmt: skip
def test_annotation_problems_are_reported(
    tmp_path: Path, key: str, value: str, severity: str, message: str
) -> None:
    folder = write(tmp_path / "m", ingress("x", rule("x.example.com", path("/", "web")),
                                           annotations={key: value}))  # fmt: skip
    config, report = build(folder)
    [issue] = issues_about(report, f"metadata.annotations[{key}]")
    assert issue.severity == severity and message in issue.message
    served = pick(config, "x.example.com/") is not None
    assert served == (severity == "warning")  # a warning serves; an error refuses the Ingress


def test_an_annotation_that_is_not_a_string_is_refused_like_the_api_server_does(
    tmp_path: Path,
) -> None:
    document = ingress("x", rule(None, path("/", "web")))
    document["metadata"]["annotations"] = {N + "ssl-redirect": False}
    config, report = build(write(tmp_path / "m", document))
    [issue] = issues_about(report, "metadata.annotations")
    assert 'quote it: "false"' in issue.message
    assert config.routes == []


def test_affinity_and_hashing_together_are_refused(tmp_path: Path) -> None:
    folder = write(tmp_path / "m", ingress("x", rule(None, path("/", "web")), annotations={
        N + "affinity": "cookie", N + "upstream-hash-by": "$remote_addr"}))  # fmt: skip
    config, report = build(folder)
    assert any("set one" in i.message for i in report.errors)
    assert config.routes == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30.0), ("500ms", 0.5), ("1m30s", 90.0), ("2h", 7200.0), ("1d", 86400.0)],
)
def test_nginx_time_syntax(text: str, seconds: float) -> None:
    assert nginx_time(text) == seconds


@pytest.mark.parametrize("text", ["", "1.5", "5 s", "s", "10x"])
def test_nginx_time_syntax_errors(text: str) -> None:
    with pytest.raises(ValueError):
        nginx_time(text)
