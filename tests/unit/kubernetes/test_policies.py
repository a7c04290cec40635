"""ingress-nginx's allowlist/denylist, limit-rps/limit-rpm and CORS annotations, translated from
manifest files into native route policies (ingress-nginx docs, "Annotations": "Whitelist source
range", "Denylist source range", "Rate Limiting", "Enable CORS"; defaults from its cors parser)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from portway.config.model import Config
from portway.kubernetes import Report
from portway.messages import Request
from portway.policies.basic_auth import BasicAuthPolicy
from tests.unit.kubernetes.manifests import (
    backend,
    build,
    ingress,
    issues_about,
    path,
    rule,
    write,
)

N = "nginx.ingress.kubernetes.io/"
PREFIX = "ingress.shop.web"


def translated(tmp_path: Path, annotations: dict[str, str]) -> tuple[Config, Report]:
    """Ingress shop/web with two paths on one host, annotated."""
    folder = write(tmp_path / "m", ingress(
        "web", rule("web.example.com", path("/", "web"), path("/api", "api")),
        namespace="shop", annotations=annotations))  # fmt: skip
    return build(folder)


def policies_of(config: Config) -> dict[str, dict[str, Any]]:
    """The config's policies as dicts of their one kind (``{"ip_filter": {...}}``)."""
    return {
        name: {policy.kind: getattr(policy, policy.kind).model_dump()}
        for name, policy in config.policies.items()
    }


def annotation_issues(report: Report) -> list[tuple[str, str, str]]:
    return [(i.field, i.severity, i.message) for i in issues_about(report, "metadata.annotations")]


def test_source_ranges_become_one_ip_filter_shared_by_every_route(tmp_path: Path) -> None:
    config, report = translated(tmp_path, {
        N + "whitelist-source-range": "10.0.0.0/8, 192.168.1.7,2001:db8::/32",
        N + "denylist-source-range": "10.6.6.0/24",
    })  # fmt: skip
    assert annotation_issues(report) == []
    assert policies_of(config) == {
        f"{PREFIX}.ip-filter": {"ip_filter": {
            "allow": ["10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32"], "deny": ["10.6.6.0/24"]}},
    }  # fmt: skip
    assert [(r.name, r.policies) for r in config.routes] == [
        ("shop/web/0/0", [f"{PREFIX}.ip-filter"]),
        ("shop/web/0/1", [f"{PREFIX}.ip-filter"]),
    ]


def test_allowlist_is_the_new_name_and_wins_over_whitelist(tmp_path: Path) -> None:
    config, report = translated(tmp_path, {
        N + "allowlist-source-range": "203.0.113.0/24",
        N + "whitelist-source-range": "0.0.0.0/0",
    })  # fmt: skip
    assert policies_of(config)[f"{PREFIX}.ip-filter"]["ip_filter"]["allow"] == ["203.0.113.0/24"]
    [issue] = issues_about(report, f"{N}whitelist-source-range")
    assert issue.severity == "warning" and "allowlist-source-range is set too" in issue.message


def test_a_denylist_alone_denies_only_its_networks(tmp_path: Path) -> None:
    config, _ = translated(tmp_path, {N + "denylist-source-range": "198.51.100.0/24"})
    assert policies_of(config) == {
        f"{PREFIX}.ip-filter": {"ip_filter": {"allow": [], "deny": ["198.51.100.0/24"]}}
    }


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("whitelist-source-range", "10.0.0.0/8,not-a-network", "not a valid IP network"),
        ("allowlist-source-range", "10.0.0.0/33", "not a valid IP network"),
        ("denylist-source-range", "10.0.0.0/8;10.1.0.0/16", "not a valid IP network"),
        ("whitelist-source-range", " , ", "no address or network given"),
        ("limit-rps", "ten", "expected a whole number of requests"),
        ("limit-rpm", "-1", "expected a whole number of requests"),
        ("enable-cors", "yes", 'expected "true" or "false"'),
        ("cors-allow-origin", "https://a.example/path", "without a path"),
        ("cors-allow-origin", "null", "'null' cannot be allowed"),
        ("cors-allow-methods", "GET, P@ST", "not an HTTP method"),
        ("cors-allow-headers", "X-Ok, Bad Header", "not a valid header name"),
        ("cors-allow-credentials", "maybe", 'expected "true" or "false"'),
        ("cors-max-age", "1d", "expected whole seconds"),
    ],
)  # fmt: skip
def test_unreadable_values_refuse_the_ingress(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    """An Ingress whose access annotation cannot be honoured is not served (never served open);
    the other Ingresses are."""
    annotations = {N + key: value}
    if key.startswith("cors-"):
        annotations[N + "enable-cors"] = "true"
    folder = write(
        tmp_path / "m",
        ingress("web", rule("web.example.com", path("/", "web")), namespace="shop",
                annotations=annotations),
        ingress("other", rule("other.example.com", path("/", "web")), namespace="shop"),
    )  # fmt: skip
    config, report = build(folder)
    [issue] = issues_about(report, f"metadata.annotations[{N}{key}]")
    assert issue.severity == "error" and message in issue.message, issue
    assert [r.name for r in config.routes] == ["shop/other/0/0"]
    assert config.policies == {}


def test_the_last_valid_version_keeps_its_policies(tmp_path: Path) -> None:
    """Fault isolation: a broken edit of the allowlist keeps the previous (closed) version."""
    from portway.kubernetes.controller import ManifestController
    from portway.kubernetes.translate import Options

    folder = tmp_path / "m"

    def version(ranges: str) -> None:
        write(folder, ingress("web", rule("web.example.com", path("/", "web")), namespace="shop",
                              annotations={N + "whitelist-source-range": ranges}))  # fmt: skip

    version("10.0.0.0/8")
    controller = ManifestController(folder, Options(), tmp_path / "state")
    first = controller.build()
    version("10.0.0.0/8,bogus")
    second = controller.build()
    assert second.policies == first.policies
    assert [r.policies for r in second.routes] == [[f"{PREFIX}.ip-filter"]]
    assert controller.report is not None and controller.report.kept == ("Ingress shop/web",)


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({N + "limit-rps": "5"}, {f"{PREFIX}.rps": (5, 1.0)}),
        ({N + "limit-rpm": "300"}, {f"{PREFIX}.rpm": (300, 60.0)}),
        ({N + "limit-rps": "5", N + "limit-rpm": "100"},
         {f"{PREFIX}.rps": (5, 1.0), f"{PREFIX}.rpm": (100, 60.0)}),
        ({N + "limit-rps": "0"}, {}),  # ingress-nginx: 0 is no limit
    ],
)  # fmt: skip
def test_limits_become_rate_limits_per_client_ip(
    tmp_path: Path, annotations: dict[str, str], expected: dict[str, tuple[int, float]]
) -> None:
    config, report = translated(tmp_path, annotations)
    assert annotation_issues(report) == []
    limits = {name: p.rate_limit for name, p in config.policies.items()}
    assert {n: (r.requests, r.per) for n, r in limits.items() if r is not None} == expected
    assert all(r is not None and r.key == "client_ip" for r in limits.values())
    assert all(route.policies == list(expected) for route in config.routes)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("limit-burst-multiplier", "no burst"),
        ("limit-connections", "no limit of concurrent connections"),
        ("limit-whitelist", "rate limited like any other"),
        ("auth-secret", "has no effect without auth-type"),
    ],
)
def test_what_is_not_mapped_says_so_precisely(tmp_path: Path, key: str, message: str) -> None:
    config, report = translated(tmp_path, {N + "limit-rps": "5", N + key: "3"})
    [issue] = issues_about(report, f"metadata.annotations[{N}{key}]")
    assert issue.severity == "warning" and message in issue.message
    assert list(config.policies) == [f"{PREFIX}.rps"]  # served, with what is supported


def test_cors_with_ingress_nginx_defaults(tmp_path: Path) -> None:
    """``enable-cors`` alone: origin ``*``, nginx's methods, headers and 20-day max age; its
    default credentials (true) cannot go with ``*``: browsers refuse them, so none are allowed."""
    config, report = translated(tmp_path, {N + "enable-cors": "true"})
    assert annotation_issues(report) == []
    assert policies_of(config) == {f"{PREFIX}.cors": {"cors": {
        "allow_origins": ["*"],
        "allow_methods": ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"],
        "allow_headers": ["dnt", "keep-alive", "user-agent", "x-requested-with",
                          "if-modified-since", "cache-control", "content-type", "range",
                          "authorization"],
        "expose_headers": [],
        "allow_credentials": False,
        "max_age": 1728000.0,
    }}}  # fmt: skip
    assert all(route.policies == [f"{PREFIX}.cors"] for route in config.routes)


def test_cors_with_listed_origins_keeps_credentials(tmp_path: Path) -> None:
    config, report = translated(tmp_path, {
        N + "enable-cors": "true",
        N + "cors-allow-origin": "https://app.example.com, https://*.example.org:443",
        N + "cors-allow-methods": "GET,POST",
        N + "cors-allow-headers": "Content-Type,X-Token",
        N + "cors-expose-headers": "X-Request-Id",
        N + "cors-max-age": "600",
    })  # fmt: skip
    assert annotation_issues(report) == []
    cors = config.policies[f"{PREFIX}.cors"].cors
    assert cors is not None
    assert cors.allow_origins == ["https://app.example.com", "https://*.example.org"]
    assert (cors.allow_methods, cors.allow_headers) == (
        ["GET", "POST"],
        ["content-type", "x-token"],
    )
    assert (cors.expose_headers, cors.allow_credentials, cors.max_age) == (
        ["x-request-id"], True, 600.0)  # fmt: skip


def test_cors_explicit_credentials_with_any_origin_is_served_without_them(tmp_path: Path) -> None:
    config, report = translated(tmp_path, {
        N + "enable-cors": "true", N + "cors-allow-credentials": "true",
        N + "cors-allow-origin": "*, https://app.example.com",
    })  # fmt: skip
    cors = config.policies[f"{PREFIX}.cors"].cors
    assert cors is not None and cors.allow_origins == ["*"] and not cors.allow_credentials
    assert sorted((f.rsplit("/", 1)[1], s) for f, s, _ in annotation_issues(report)) == [
        ("cors-allow-credentials]", "warning"), ("cors-allow-origin]", "warning")]  # fmt: skip


def test_cors_expose_all_with_credentials_is_refused(tmp_path: Path) -> None:
    """Fetch §3.2.3: with credentials ``*`` is not a wildcard; the native config refuses it."""
    config, report = translated(tmp_path, {
        N + "enable-cors": "true", N + "cors-allow-origin": "https://app.example.com",
        N + "cors-expose-headers": "*",
    })  # fmt: skip
    [issue] = issues_about(report, "metadata.annotations", severity="error")
    assert issue.field.endswith("enable-cors]") and "expose_headers '*'" in issue.message
    assert config.routes == []


def test_cors_annotations_without_enable_cors_do_nothing(tmp_path: Path) -> None:
    config, report = translated(tmp_path, {N + "cors-allow-origin": "https://a.example.com",
                                           N + "enable-cors": "false"})  # fmt: skip
    assert config.policies == {}
    [issue] = issues_about(report, f"{N}cors-allow-origin")
    assert issue.severity == "warning" and "without enable-cors" in issue.message


def test_every_kind_together_and_per_ingress_names(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "m",
        ingress("web", rule("web.example.com", path("/", "web")), namespace="shop",
                annotations={N + "whitelist-source-range": "10.0.0.0/8", N + "limit-rpm": "60",
                             N + "enable-cors": "true"}),
        ingress("web.v2", rule("v2.example.com", path("/", "web")), namespace="shop",
                annotations={N + "limit-rps": "10"}),
        ingress("plain", rule("plain.example.com", path("/", "web")), namespace="shop"),
    )  # fmt: skip
    config, report = build(folder)
    routes = {r.name: r.policies for r in config.routes}
    assert routes == {
        "shop/web/0/0": [f"{PREFIX}.ip-filter", f"{PREFIX}.rpm", f"{PREFIX}.cors"],
        "shop/web.v2/0/0": ["ingress.shop.web.v2.rps"],
        "shop/plain/0/0": [],
    }
    assert sorted(config.policies) == sorted(name for names in routes.values() for name in names)
    # Policies guard requests, not backends: one shared service for the three Ingresses.
    assert {r.service for r in config.routes} == {"shop.web.80"}
    assert "4 policies" in report.summary()


def test_default_backends_are_guarded_and_redirects_are_not(tmp_path: Path) -> None:
    """An Ingress's default backend forwards to its backend: it gets the Ingress's policies. A
    redirect route forwards nothing and is answered before them (nginx's return before allow)."""
    folder = write(
        tmp_path / "m",
        ingress("fallback", namespace="shop", default=backend("web"),
                annotations={N + "whitelist-source-range": "10.0.0.0/8"}),
        ingress("moved", rule("old.example.com", path("/", "web")), namespace="shop",
                annotations={N + "permanent-redirect": "https://new.example.com/",
                             N + "whitelist-source-range": "10.0.0.0/8"}),
    )  # fmt: skip
    config, _ = build(folder)
    routes = {r.name: r.policies for r in config.routes}
    assert routes == {
        "shop/moved/0/0": [],
        "shop/fallback/default-backend": ["ingress.shop.fallback.ip-filter"],
    }
    assert list(config.policies) == ["ingress.shop.fallback.ip-filter"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("auth-type", "basic"),
        ("auth-url", "https://$host/oauth2/auth"),  # nginx variables: asked literally
        ("auth-url", "ftp://auth.internal/check"),
        ("auth-url", "not a url"),
    ],
)
def test_authentication_that_cannot_be_enforced_refuses_the_ingress(
    tmp_path: Path, key: str, value: str
) -> None:
    config, report = translated(tmp_path, {N + "limit-rps": "5", N + key: value})
    [issue] = issues_about(report, f"metadata.annotations[{N}{key}]")
    assert issue.severity == "error"
    assert "not served rather than served without authentication" in issue.message
    assert config.routes == [] and config.policies == {}


def test_auth_url_becomes_a_forward_auth_policy_on_every_route(tmp_path: Path) -> None:
    config, report = translated(tmp_path, {
        N + "auth-url": "http://oauth2-proxy.auth.svc:4180/oauth2/auth",
        N + "auth-response-headers": "X-Auth-Request-User, X-Auth-Request-Email",
        N + "limit-rps": "5",
    })  # fmt: skip
    assert annotation_issues(report) == []
    policy = policies_of(config)[f"{PREFIX}.auth"]["forward_auth"]
    assert policy["url"] == "http://oauth2-proxy.auth.svc:4180/oauth2/auth"
    assert policy["copy_headers"] == ["x-auth-request-user", "x-auth-request-email"]
    assert policy["request_headers"] == ["authorization", "cookie"]
    assert all(route.policies == [f"{PREFIX}.rps", f"{PREFIX}.auth"] for route in config.routes)


def test_auth_response_headers_alone_do_nothing(tmp_path: Path) -> None:
    config, report = translated(tmp_path, {N + "auth-response-headers": "X-User"})
    [issue] = issues_about(report, f"metadata.annotations[{N}auth-response-headers]")
    assert issue.severity == "warning" and "without auth-url" in issue.message
    assert config.policies == {}


def test_auth_response_headers_that_would_frame_the_request_refuse_the_ingress(
    tmp_path: Path,
) -> None:
    config, report = translated(
        tmp_path, {N + "auth-url": "http://auth/", N + "auth-response-headers": "Content-Length"}
    )
    [issue] = issues_about(report, f"metadata.annotations[{N}auth-response-headers]")
    assert issue.severity == "error" and "content-length" in issue.message
    assert config.routes == []


# -- auth-type: basic (an htpasswd Secret) --------------------------------------------------------


def htpasswd_secret(data: dict[str, str], name: str = "users") -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": "shop"},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }  # fmt: skip


def bcrypt_hash(password: str) -> str:
    """What ``htpasswd -B`` writes (the least cost keeps the suite fast)."""
    return "$2y$" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()[4:]


def basic_auth_ingress(
    tmp_path: Path, secret: dict[str, Any] | None, **more: str
) -> tuple[Config, Report]:
    annotations = {N + "auth-type": "basic", N + "auth-secret": "users", **more}
    documents = [ingress("web", rule("web.example.com", path("/", "web")), namespace="shop",
                         annotations=annotations)]  # fmt: skip
    if secret is not None:
        documents.append(secret)
    return build(write(tmp_path / "m", *documents))


def test_an_htpasswd_secret_becomes_a_basic_auth_policy(tmp_path: Path) -> None:
    alice, bob = bcrypt_hash("wonder"), bcrypt_hash("builder")
    secret = htpasswd_secret({"auth": f"alice:{alice}\n\nbob:{bob}\n"})
    config, report = basic_auth_ingress(tmp_path, secret, **{N + "auth-realm": "Staff only"})
    assert annotation_issues(report) == []
    policy = config.policies[f"{PREFIX}.basic-auth"].basic_auth
    assert policy is not None and policy.realm == "Staff only"
    assert [(u.name, u.password_hash) for u in policy.users] == [("alice", alice), ("bob", bob)]
    assert [route.policies for route in config.routes] == [[f"{PREFIX}.basic-auth"]]
    # The policy checks the Secret's passwords.
    checker = BasicAuthPolicy("b", policy)
    assert checker.apply(request_with(_basic("bob", "builder"))) is None
    assert checker.apply(request_with(_basic("bob", "x"))) is not None


def request_with(authorization: bytes) -> Request:
    return Request("GET", "h", "/", headers=[(b"authorization", authorization)])


def _basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def test_an_auth_map_secret_has_one_key_per_user(tmp_path: Path) -> None:
    carol = bcrypt_hash("pw")
    config, report = basic_auth_ingress(
        tmp_path, htpasswd_secret({"carol": carol}), **{N + "auth-secret-type": "auth-map"}
    )
    assert annotation_issues(report) == []
    policy = config.policies[f"{PREFIX}.basic-auth"].basic_auth
    assert policy is not None and policy.realm == ""  # ingress-nginx's default: no realm text
    assert [(u.name, u.password_hash) for u in policy.users] == [("carol", carol)]


@pytest.mark.parametrize(
    ("secret", "more", "message"),
    [
        (None, {}, "Secret shop/users not found"),
        (htpasswd_secret({"other": "x"}), {}, "has no key 'auth'"),
        (htpasswd_secret({"auth": "\n"}), {}, "holds no users"),
        (htpasswd_secret({"auth": "alice"}), {}, "line 1 of 'auth' is not user:hash"),
        (htpasswd_secret({"auth": "alice:$apr1$abc$def"}), {},
         "line 1 of 'auth': user 'alice': Apache MD5 hashes are not accepted, only bcrypt"),
        (htpasswd_secret({"auth": "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="}), {}, "SHA-1 hashes are not"),
        (htpasswd_secret({"auth": "alice:plaintext"}), {}, "crypt or plain text hashes are not"),
        (htpasswd_secret({"auth": "al ice:$2y$04$" + "a" * 53}), {}, "users.0.name"),
    ],
)  # fmt: skip
def test_an_htpasswd_secret_that_cannot_be_checked_refuses_the_ingress(
    tmp_path: Path, secret: dict[str, Any] | None, more: dict[str, str], message: str
) -> None:
    config, report = basic_auth_ingress(tmp_path, secret, **more)
    [issue] = issues_about(report, f"metadata.annotations[{N}auth-secret]")
    assert issue.severity == "error"
    assert message in issue.message
    assert "not served rather than served without authentication" in issue.message
    assert config.routes == [] and config.policies == {}


@pytest.mark.parametrize(
    ("more", "key", "message"),
    [
        ({N + "auth-type": "digest"}, "auth-type", "auth-type 'digest' is not supported"),
        ({N + "auth-secret": "other/users"}, "auth-secret", "another namespace"),
        (
            {N + "auth-secret-type": "auth-json"},
            "auth-secret-type",
            "expected auth-file or auth-map",
        ),
    ],
)
def test_basic_auth_annotations_that_cannot_be_followed_refuse_the_ingress(
    tmp_path: Path, more: dict[str, str], key: str, message: str
) -> None:
    secret = htpasswd_secret({"auth": f"alice:{bcrypt_hash('pw')}"})
    config, report = basic_auth_ingress(tmp_path, secret, **more)
    [issue] = issues_about(report, f"metadata.annotations[{N}{key}]")
    assert issue.severity == "error" and message in issue.message
    assert config.routes == []
