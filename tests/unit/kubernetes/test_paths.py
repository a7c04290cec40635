"""Path and host matching, and precedence across Ingresses, as the Kubernetes docs define them.

Kubernetes docs, Concepts > Services > Ingress: "Path types", "Examples" (the table reproduced in
``DOCS_EXAMPLES``), "Multiple matches", "Hostname wildcards". Each case translates real manifest
files and routes requests through the native router compiled from the result.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.kubernetes.manifests import build, ingress, issues_about, path, pick, rule, write

# (rule paths as (path, pathType), request path, index of the path that matches or None).
# Ingress docs, "Examples" table, row by row.
DOCS_EXAMPLES: list[tuple[list[tuple[str, str]], str, int | None]] = [
    ([("/", "Prefix")], "/anything/at/all", 0),  # Prefix / matches all paths
    ([("/foo", "Exact")], "/foo", 0),
    ([("/foo", "Exact")], "/bar", None),
    ([("/foo", "Exact")], "/foo/", None),
    ([("/foo/", "Exact")], "/foo", None),
    ([("/foo", "Prefix")], "/foo", 0),
    ([("/foo", "Prefix")], "/foo/", 0),
    ([("/foo/", "Prefix")], "/foo", 0),
    ([("/foo/", "Prefix")], "/foo/", 0),
    ([("/aaa/bb", "Prefix")], "/aaa/bbb", None),
    ([("/aaa/bbb", "Prefix")], "/aaa/bbb", 0),
    ([("/aaa/bbb/", "Prefix")], "/aaa/bbb", 0),  # ignores trailing slash
    ([("/aaa/bbb", "Prefix")], "/aaa/bbb/", 0),  # matches trailing slash
    ([("/aaa/bbb", "Prefix")], "/aaa/bbb/ccc", 0),  # matches subpath
    ([("/aaa/bbb", "Prefix")], "/aaa/bbbxyz", None),  # not a string prefix
    ([("/", "Prefix"), ("/aaa", "Prefix")], "/aaa/ccc", 1),  # matches /aaa prefix
    ([("/", "Prefix"), ("/aaa", "Prefix"), ("/aaa/bbb", "Prefix")], "/aaa/bbb", 2),
    ([("/", "Prefix"), ("/aaa", "Prefix"), ("/aaa/bbb", "Prefix")], "/ccc", 0),
    ([("/aaa", "Prefix")], "/ccc", None),  # uses the default backend (none here: 404)
    ([("/foo", "Prefix"), ("/foo", "Exact")], "/foo", 1),  # Mixed: prefers Exact
]


@pytest.mark.parametrize(("paths", "request_path", "winner"), DOCS_EXAMPLES)
def test_the_kubernetes_docs_path_examples(
    tmp_path: Path, paths: list[tuple[str, str]], request_path: str, winner: int | None
) -> None:
    rules = rule("example.com", *(path(p, f"svc{i}", t) for i, (p, t) in enumerate(paths)))
    config, _ = build(write(tmp_path / "m", ingress("site", rules)))
    expected = f"default.svc{winner}.80" if winner is not None else None
    assert pick(config, "example.com" + request_path) == expected


def test_longest_path_wins_across_ingresses_merged(tmp_path: Path) -> None:
    """ "Multiple matches": the longest matching path, whichever Ingress holds it."""
    config, _ = build(write(
        tmp_path / "m",
        ingress("short", rule("example.com", path("/", "root"))),
        ingress("long", rule("example.com", path("/api/v1", "v1"), path("/api", "api", "Exact"))),
    ))  # fmt: skip
    assert pick(config, "example.com/api/v1/users") == "default.v1.80"
    assert pick(config, "example.com/api") == "default.api.80"  # Exact beats Prefix /
    assert pick(config, "example.com/api/v2") == "default.root.80"


def test_wildcard_hosts_match_exactly_one_label_and_exact_hosts_first(tmp_path: Path) -> None:
    """ "Hostname wildcards": *.foo.com matches bar.foo.com, not baz.bar.foo.com nor foo.com."""
    config, _ = build(write(
        tmp_path / "m",
        ingress("wild", rule("*.foo.com", path("/", "wild"))),
        ingress("exact", rule("bar.foo.com", path("/exact", "exact"))),
        ingress("any", rule(None, path("/", "any"))),
    ))  # fmt: skip
    assert pick(config, "baz.foo.com/x") == "default.wild.80"
    assert pick(config, "bar.foo.com/exact") == "default.exact.80"
    assert pick(config, "bar.foo.com/other") == "default.wild.80"  # then the wildcard's rules
    assert pick(config, "baz.bar.foo.com/x") == "default.any.80"  # one label only
    assert pick(config, "foo.com/x") == "default.any.80"


def test_host_rules_come_before_host_less_rules(tmp_path: Path) -> None:
    config, _ = build(write(
        tmp_path / "m",
        ingress("a", rule(None, path("/api/long/path", "hostless"))),
        ingress("b", rule("example.com", path("/", "hosted"))),
    ))  # fmt: skip
    assert pick(config, "example.com/api/long/path") == "default.hosted.80"
    assert pick(config, "other.com/api/long/path") == "default.hostless.80"


def test_conflicting_rules_go_to_the_oldest_ingress_and_are_reported(tmp_path: Path) -> None:
    config, report = build(write(
        tmp_path / "m",
        ingress("newer", rule("example.com", path("/app/", "newer")),
                created="2024-05-01T00:00:00Z"),
        ingress("older", rule("example.com", path("/app", "older")),
                created="2024-01-01T00:00:00Z"),
        ingress("b-undated", rule("example.com", path("/app", "undated"))),
        ingress("a-undated", rule("example.com", path("/other", "a"), path("/other", "b"))),
    ))  # fmt: skip
    assert pick(config, "example.com/app/x") == "default.older.80"
    [newer] = issues_about(report, "spec.rules[0].http.paths[0]", name="default/newer")
    assert newer.severity == "warning"
    assert "conflicts with Ingress default/older spec.rules[0].http.paths[0]" in newer.message
    assert issues_about(report, "paths[0]", name="default/b-undated")
    # Without timestamps: namespace/name decides; within one Ingress the first path wins.
    assert pick(config, "example.com/other") == "default.a.80"
    assert issues_about(report, "spec.rules[0].http.paths[1]", name="default/a-undated")


def test_implementation_specific_is_an_anchored_regex_tried_after_exact_before_prefix(
    tmp_path: Path,
) -> None:
    config, _ = build(write(
        tmp_path / "m",
        ingress("re", rule(
            "example.com",
            path(r"/users/\d+", "digits", "ImplementationSpecific"),
            path(r"/users/[a-z0-9]+/orders", "orders", "ImplementationSpecific"),
            path("/users/42", "exact", "Exact"),
            path("/users", "prefix"),
            path("", "everything", "ImplementationSpecific"),
        )),
    ))  # fmt: skip
    assert pick(config, "example.com/users/7") == "default.digits.80"
    assert pick(config, "example.com/users/42") == "default.exact.80"
    assert pick(config, "example.com/users/7/orders") == "default.orders.80"
    assert pick(config, "example.com/users/7x") == "default.prefix.80"  # anchored: no match
    assert pick(config, "example.com/elsewhere") == "default.everything.80"  # empty path: all


def test_regex_paths_are_tried_longest_first_like_ingress_nginx(tmp_path: Path) -> None:
    config, _ = build(write(
        tmp_path / "m",
        ingress("a", rule("example.com", path("/api/.*", "short", "ImplementationSpecific")),
                created="2024-01-01T00:00:00Z"),
        ingress("b", rule("example.com", path("/api/v[0-9]/.*", "long", "ImplementationSpecific"))),
    ))  # fmt: skip
    assert pick(config, "example.com/api/v1/x") == "default.long.80"
    assert pick(config, "example.com/api/x") == "default.short.80"
