"""The ``cors`` policy against the Fetch standard's CORS protocol
(https://fetch.spec.whatwg.org/#http-cors-protocol): preflights (§3.2.2, §4.8) answered 204 or
refused 403, the response headers of an actual request (§3.2.3), ``Vary`` for caches (§3.2.5),
and the configs browsers would reject refused when loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from portway.config.cors import CorsConfig
from portway.config.loader import load_config
from portway.config.policies import PolicyConfig
from portway.errors import ConfigError
from portway.messages import NO_OVERRIDES, LocalAnswer, Request
from portway.policies.base import CORS_REFUSED, REASONS
from portway.policies.chain import PolicyChain
from portway.policies.cors import CORS_RESPONSE_FIELDS, CorsPolicy
from portway.policies.registry import PHASES

APP = "https://app.example.com"
PREFLIGHT_VARY = "origin, access-control-request-method, access-control-request-headers"


def policy(**config: Any) -> CorsPolicy:
    config.setdefault("allow_origins", [APP])
    return CorsPolicy("cors", CorsConfig.model_validate(config))


def request(method: str = "GET", **headers: str) -> Request:
    lines = [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return Request(method, "api.example.com", "/x", headers=lines)


def preflight(
    origin: str = APP, method: str = "PUT", headers: str | None = None, **extra: str
) -> Request:
    fields = {"Origin": origin, "Access-Control-Request-Method": method, **extra}
    if headers is not None:
        fields["Access-Control-Request-Headers"] = headers
    return request("OPTIONS", **fields)


def fields(answer: LocalAnswer | list[tuple[bytes, bytes]]) -> dict[str, str]:
    pairs = answer.headers if isinstance(answer, LocalAnswer) else answer
    return {name.decode(): value.decode() for name, value in pairs}


def answered(p: CorsPolicy, r: Request) -> LocalAnswer:
    answer = p.apply(r)
    assert answer is not None
    return answer


# Preflights (Fetch §4.8: OPTIONS + Origin + Access-Control-Request-Method).


def test_an_allowed_preflight_is_answered_204_with_everything_a_browser_checks() -> None:
    p = policy(allow_methods=["GET", "PUT"], allow_headers=["X-Token", "content-type"])
    answer = answered(p, preflight(headers="content-type,x-token"))
    assert (answer.status, answer.cause, answer.body) == (204, None, b"")
    assert fields(answer) == {
        "access-control-allow-origin": APP,  # the origin itself: not "*" for a listed origin
        "access-control-allow-methods": "GET, PUT",
        "access-control-allow-headers": "x-token, content-type",
        "access-control-max-age": "600",
        "vary": PREFLIGHT_VARY,
    }


def test_preflight_headers_are_matched_whatever_their_case_and_spacing() -> None:
    p = policy(allow_headers=["X-Token"])
    assert answered(p, preflight(method="post", headers=" X-TOKEN ,  ")).status == 204
    # Header *names* are case-insensitive, and so is the Origin's scheme and host here.
    assert answered(p, preflight(origin="HTTPS://APP.EXAMPLE.COM", method="POST")).status == 204


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"origin": "https://evil.example"}, "origin 'https://evil.example' is not allowed"),
        ({"method": "DELETE"}, "method 'DELETE' is not allowed"),
        ({"method": "POST", "headers": "x-other"}, "header 'x-other' is not allowed"),
        ({"method": "GET", "headers": "x-a b"}, "'x-a b' is not a header name"),
        ({"method": "GE T"}, "'GE T' is not a method"),
    ],
)
def test_a_preflight_for_what_is_not_allowed_is_refused_403(
    kwargs: dict[str, str], why: str
) -> None:
    answer = answered(policy(), preflight(**kwargs))
    assert (answer.status, answer.cause) == (403, CORS_REFUSED.encode())
    assert why in answer.detail
    # No Access-Control-Allow-Origin: the browser fails the preflight (Fetch §4.8 step 7).
    assert fields(answer) == {"vary": PREFLIGHT_VARY}


def test_only_the_six_normalized_methods_match_in_any_case() -> None:
    # Fetch §2.2.1: DELETE, GET, HEAD, OPTIONS, POST, PUT are normalized; PATCH is not.
    p = policy(allow_methods=["delete", "PATCH"])
    assert p.methods == {"DELETE", "PATCH"}
    assert answered(p, preflight(method="delete")).status == 204
    assert answered(p, preflight(method="PATCH")).status == 204
    assert answered(p, preflight(method="patch")).status == 403


def test_any_method_and_any_header_are_echoed_but_authorization_must_be_listed() -> None:
    p = policy(allow_methods=["*"], allow_headers=["*"], allow_credentials=True)
    answer = answered(p, preflight(method="PURGE", headers="x-a,x-b"))
    assert answer.status == 204
    got = fields(answer)
    # Echoed: with credentials a literal "*" would name no method or header (Fetch §3.2.3).
    assert got["access-control-allow-methods"] == "PURGE"
    assert got["access-control-allow-headers"] == "x-a, x-b"
    assert got["access-control-allow-credentials"] == "true"
    # A "*" never covers Authorization (Fetch §4.8, CORS-preflight fetch).
    assert answered(p, preflight(headers="authorization")).status == 403
    listed = policy(allow_headers=["*", "authorization"])
    assert answered(listed, preflight(method="GET", headers="authorization")).status == 204


def test_without_requested_headers_and_none_allowed_no_allow_headers_field() -> None:
    got = fields(answered(policy(), preflight(method="GET")))
    assert "access-control-allow-headers" not in got
    assert "access-control-allow-credentials" not in got


def test_options_without_request_method_is_an_actual_request() -> None:
    r = request("OPTIONS", Origin=APP)
    assert policy().apply(r) is None
    assert fields(r.response_headers)["access-control-allow-origin"] == APP


# Origins: exact, one-label wildcards, "*" and null.


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://a.example.org", True),
        ("https://a-1.example.org", True),
        ("https://a.b.example.org", False),  # one label only
        ("https://example.org", False),
        ("https://.example.org", False),
        ("http://a.example.org", False),  # the scheme is part of the origin
        ("https://a.example.org:8443", False),  # and so is the port
        ("https://a.example.org.evil.net", False),
        ("https://evil.net/.example.org", False),
        ("https://a.example.org:9000", True),  # the second pattern
        ("null", False),
    ],
)
def test_wildcard_origins_match_exactly_one_label(origin: str, allowed: bool) -> None:
    p = policy(allow_origins=["https://*.example.org", "https://*.example.org:9000"])
    assert p.allows(origin) is allowed


def test_any_origin_answers_star_for_every_origin_null_included() -> None:
    p = policy(allow_origins=["*"], expose_headers=["X-Total"])
    answer = answered(p, preflight(origin="null", method="GET"))
    assert fields(answer)["access-control-allow-origin"] == "*"
    r = request(Origin="https://anyone.example")
    assert p.apply(r) is None
    assert fields(r.response_headers) == {
        "access-control-allow-origin": "*",
        "access-control-expose-headers": "x-total",
    }  # the same for every origin: no Vary (Fetch §3.2.5)


# Actual requests (Fetch §3.2.3) and caches (§3.2.5).


def test_an_allowed_actual_request_gets_the_cors_response_headers() -> None:
    p = policy(allow_credentials=True, expose_headers=["X-Total", "x-page"])
    r = request("POST", Origin=APP)
    assert p.apply(r) is None
    assert r.response_headers == [
        (b"access-control-allow-origin", APP.encode()),
        (b"access-control-allow-credentials", b"true"),
        (b"access-control-expose-headers", b"x-total, x-page"),
        (b"vary", b"origin"),
    ]
    assert r.response_overrides == CORS_RESPONSE_FIELDS  # the upstream's copies are dropped


def test_a_disallowed_origin_is_not_refused_but_gets_no_cors_headers() -> None:
    # The browser blocks the read; curl and servers must still be served.
    r = request("DELETE", Origin="https://evil.example")
    assert policy().apply(r) is None
    assert r.response_headers == [(b"vary", b"origin")]
    assert r.response_overrides == CORS_RESPONSE_FIELDS  # nor may the upstream allow it


def test_a_request_without_origin_passes_with_only_what_caches_need() -> None:
    r = request()
    assert policy().apply(r) is None
    assert r.response_headers == [(b"vary", b"origin")]
    star = request()
    assert policy(allow_origins=["*"]).apply(star) is None
    assert star.response_headers == [(b"access-control-allow-origin", b"*")]
    assert Request("GET", "h", "/").response_overrides is NO_OVERRIDES


def test_max_age_in_whole_seconds() -> None:
    assert (
        fields(answered(policy(max_age="2h"), preflight(method="GET")))["access-control-max-age"]
        == "7200"
    )
    assert (
        fields(answered(policy(max_age=0), preflight(method="GET")))["access-control-max-age"]
        == "0"
    )


# The chain: the phase before authentication, and what is counted.


class Counted:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, str]] = []

    def policy_rejected(self, route: str, policy: str, kind: str, reason: str) -> None:
        self.seen.append((route, policy, kind, reason))


def test_cors_runs_before_authentication_and_a_preflight_204_is_not_a_rejection() -> None:
    from portway.config.policies import ApiKeyConfig
    from portway.policies.api_key import ApiKeyPolicy

    assert PHASES["cors"].order < PHASES["api_key"].order
    assert "preflight" in PHASES["cors"].why
    assert CORS_REFUSED in REASONS
    keys = ApiKeyPolicy(
        "keys", ApiKeyConfig.model_validate({"keys": [{"consumer": "a", "key": "k" * 16}]})
    )
    chain = PolicyChain("api", [keys, policy()])  # listed after: still runs first
    stats = Counted()
    outcome = chain.apply(preflight(method="GET"), stats)
    assert isinstance(outcome, LocalAnswer) and outcome.status == 204
    assert stats.seen == []
    refused = chain.apply(request(Origin=APP), stats)  # no key: 401, with the CORS headers
    assert isinstance(refused, LocalAnswer) and refused.status == 401
    assert fields(refused)["access-control-allow-origin"] == APP
    denied = chain.apply(preflight(origin="https://evil.example"), stats)
    assert isinstance(denied, LocalAnswer) and denied.status == 403
    assert stats.seen == [
        ("api", "keys", "api_key", "missing_credentials"),
        ("api", "cors", "cors", "cors_refused"),
    ]


# Config: what browsers would reject is refused when loaded, with why.


def test_origins_are_stored_as_browsers_send_them() -> None:
    config = CorsConfig.model_validate(
        {"allow_origins": ["HTTPS://App.Example.com:443", "http://localhost:8080", "http://[::1]"]}
    )
    assert config.allow_origins == [
        "https://app.example.com",
        "http://localhost:8080",
        "http://[::1]",
    ]
    assert config.allow_methods == ["GET", "HEAD", "POST"]
    assert (config.allow_headers, config.allow_credentials, config.max_age) == ([], False, 600.0)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"allow_origins": ["*"], "allow_credentials": True}, "browsers refuse"),
        ({"allow_origins": ["*", APP]}, "list no others with it"),
        ({"allow_origins": ["null"]}, "'null' cannot be allowed"),
        ({"allow_origins": ["https://app.example.com/"]}, "write 'https://app.example.com'"),
        ({"allow_origins": ["https://app.example.com/api"]}, "without a path"),
        ({"allow_origins": ["app.example.com"]}, "not an origin"),
        ({"allow_origins": ["https://a.*.example.com"]}, "not an origin"),
        ({"allow_origins": ["https://*.com"]}, "top-level domain"),
        ({"allow_origins": ["https://app.example.com:99999"]}, "out of range"),
        ({"allow_origins": []}, "at least 1"),
        ({"allow_origins": [APP], "allow_methods": ["GE T"]}, "not an HTTP method"),
        ({"allow_origins": [APP], "allow_headers": ["x:y"]}, "not a valid header name"),
        (
            {"allow_origins": [APP], "allow_credentials": True, "expose_headers": ["*"]},
            "list the headers",
        ),
        ({"allow_origins": [APP], "max_age": -1}, "cannot be negative"),
    ],
)
def test_bad_cors_configs_are_refused_with_why(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CorsConfig.model_validate(config)
    assert message in str(caught.value)


def test_cors_is_a_policy_kind_and_a_mistake_is_reported_at_its_line(tmp_path: Path) -> None:
    assert PolicyConfig.model_validate({"cors": {"allow_origins": [APP]}}).kind == "cors"
    both = {"cors": {"allow_origins": [APP]}, "rate_limit": {"requests": 1, "per": "1s"}}
    with pytest.raises(ValidationError, match=r"set exactly one of .*cors"):
        PolicyConfig.model_validate(both)
    path = tmp_path / "portway.yaml"
    path.write_text(
        "services: {api: {instances: ['127.0.0.1:9000']}}\n"
        "policies:\n"
        "  browsers:\n"
        "    cors:\n"
        "      allow_origins: ['*']\n"
        "      allow_credentials: true\n"
        "routes: [{path: /, service: api, policies: [browsers]}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    issue = caught.value.issues[0]
    assert (issue.line, issue.field) == (4, "policies.browsers.cors")
    assert "Fetch" in issue.message


def test_the_response_head_drops_only_the_overridden_upstream_fields() -> None:
    from portway.proxy.response_head import build_into

    upstream = [
        (b"Access-Control-Allow-Origin", b"*"),
        (b"Vary", b"Accept-Encoding"),
        (b"Content-Length", b"2"),
    ]
    ours = [(b"access-control-allow-origin", APP.encode()), (b"vary", b"origin")]

    def head(overrides: frozenset[bytes]) -> bytes:
        out: list[bytes] = []
        build_into(
            out, 200, b"OK", upstream, b"rid", ours, None,
            head_request=False, http10=False, close=False, overrides=overrides,
        )  # fmt: skip
        return b"".join(out)

    replaced = head(CORS_RESPONSE_FIELDS)
    assert b"Access-Control-Allow-Origin: *" not in replaced
    assert replaced.count(b"access-control-allow-origin: ") == 1
    assert b"Vary: Accept-Encoding\r\n" in replaced and b"Content-Length: 2\r\n" in replaced
    assert b"Access-Control-Allow-Origin: *" in head(NO_OVERRIDES)  # no policy: untouched
