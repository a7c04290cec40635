"""ingress-nginx rewrite-target, app-root, permanent-redirect and temporal-redirect, translated
from manifest files and applied by the native router (ingress-nginx docs, "Rewrite" example)."""

from __future__ import annotations

from pathlib import Path

from portway.config.model import Config
from portway.messages import Request
from portway.routing import compile_routes
from portway.routing.rewrite import Redirect, Rewrite
from tests.unit.kubernetes.manifests import build, ingress, issues_about, path, rule, write

N = "nginx.ingress.kubernetes.io/"


def outcome(config: Config, target: str) -> str:
    """``-> <path sent upstream>``, ``<status> <location>``, or ``404``."""
    host, _, rest = target.partition("/")
    table = compile_routes(config.routes, {name: name for name in config.services})
    path_part, _, query = ("/" + rest).partition("?")
    request = Request("GET", host, path_part, query, [(b"host", host.encode())], "127.0.0.1")
    route = table.select(request)
    if route is None:
        return "404"
    if isinstance(route.action, Redirect):
        return f"{route.action.status} {route.action.location(host, path_part, query)}"
    if isinstance(route.action, Rewrite):
        return "-> " + route.action.target(path_part, query).decode()
    return "-> " + path_part + ("?" + query if query else "")


def test_rewrite_target_with_capture_groups(tmp_path: Path) -> None:
    """The docs' example: /something(/|$)(.*) with rewrite-target /$2."""
    folder = write(tmp_path / "m", ingress(
        "rw", rule("rewrite.bar.com",
                   path("/something(/|$)(.*)", "http-svc", "ImplementationSpecific")),
        annotations={N + "use-regex": "true", N + "rewrite-target": "/$2"}))  # fmt: skip
    config, report = build(folder)
    assert issues_about(report, "metadata.annotations") == []
    host = "rewrite.bar.com"
    assert outcome(config, f"{host}/something") == "-> /"
    assert outcome(config, f"{host}/something/") == "-> /"
    assert outcome(config, f"{host}/something/new?q=1") == "-> /new?q=1"
    assert outcome(config, f"{host}/something/a%2Fb") == "-> /a%2Fb"


def test_rewrite_target_on_a_prefix_path_replaces_the_whole_path(tmp_path: Path) -> None:
    """nginx's rewrite replaces the whole URI: a Prefix /foo with target / sends every /foo/... as /."""
    folder = write(tmp_path / "m", ingress("rw", rule("a.example.com", path("/foo", "web")),
                                           annotations={N + "rewrite-target": "/"}))  # fmt: skip
    config, _ = build(folder)
    assert outcome(config, "a.example.com/foo/bar") == "-> /"
    assert outcome(config, "a.example.com/foo") == "-> /"


def test_rewrite_target_problems_refuse_the_ingress(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "m",
        ingress("vars", rule("a.example.com", path("/a", "web")),
                annotations={N + "rewrite-target": "/$host/$1"}),
        ingress("groups", rule("b.example.com", path("/b(.*)", "web", "ImplementationSpecific")),
                annotations={N + "rewrite-target": "/$3"}),
    )  # fmt: skip
    config, report = build(folder)
    [variable] = issues_about(report, f"metadata.annotations[{N}rewrite-target]")
    assert "nginx variable $host is not supported" in variable.message
    [group] = issues_about(report, "spec.rules[0].http.paths[0].path", severity="error")
    assert "invalid replacement" in group.message
    assert outcome(config, "a.example.com/a") == "404"
    assert outcome(config, "b.example.com/b") == "404"


def test_app_root_redirects_only_the_root(tmp_path: Path) -> None:
    folder = write(tmp_path / "m", ingress("app", rule("approot.bar.com", path("/", "web")),
                                           annotations={N + "app-root": "/app1"}))  # fmt: skip
    config, report = build(folder)
    assert issues_about(report, "metadata.annotations") == []
    assert outcome(config, "approot.bar.com/") == "302 /app1"
    assert outcome(config, "approot.bar.com/app1") == "-> /app1"


def test_permanent_and_temporal_redirects(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "m",
        ingress("perm", rule("p.example.com", path("/", "web")),
                annotations={N + "permanent-redirect": "https://www.google.com"}),
        ingress("code", rule("c.example.com", path("/x", "web")),
                annotations={N + "permanent-redirect": "https://c.example.org/a$b",
                             N + "permanent-redirect-code": "308"}),
        ingress("temp", rule("t.example.com", path("/", "web")),
                annotations={N + "temporal-redirect": "https://t.example.org/",
                             N + "permanent-redirect": "https://ignored.example/"}),
        ingress("bad", rule("b.example.com", path("/", "web")),
                annotations={N + "permanent-redirect": "https://b.example.org/",
                             N + "permanent-redirect-code": "299"}),
    )  # fmt: skip
    config, report = build(folder)
    assert outcome(config, "p.example.com/any/path?q=1") == "301 https://www.google.com"
    assert outcome(config, "c.example.com/x/y") == "308 https://c.example.org/a$b"
    assert outcome(config, "t.example.com/") == "302 https://t.example.org/"
    assert outcome(config, "b.example.com/") == "301 https://b.example.org/"
    [ignored] = issues_about(report, f"metadata.annotations[{N}permanent-redirect]")
    assert ignored.severity == "warning" and "temporal-redirect is set too" in ignored.message
    [code] = issues_about(report, f"metadata.annotations[{N}permanent-redirect-code]")
    assert code.severity == "warning"
    # Redirecting Ingresses need no backend: none is made for them.
    assert not any(name.startswith("default.web") for name in config.services)
