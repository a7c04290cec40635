"""Every row of the Kubernetes Ingress path-matching "Examples" table, replayed.

Source: https://kubernetes.io/docs/concepts/services-networking/ingress/#examples
Each row is (rules as (path type, path), request path, the rule that matches or None).
"""

from __future__ import annotations

import pytest

from tests.unit.routing.builders import request, route, selected, table

Rule = tuple[str, str]

K8S_EXAMPLES: list[tuple[list[Rule], str, Rule | None]] = [
    # Prefix "/" matches all paths.
    ([("Prefix", "/")], "/", ("Prefix", "/")),
    ([("Prefix", "/")], "/anything/at/all", ("Prefix", "/")),
    # Exact /foo: /foo yes; /bar no; /foo/ no.
    ([("Exact", "/foo")], "/foo", ("Exact", "/foo")),
    ([("Exact", "/foo")], "/bar", None),
    ([("Exact", "/foo")], "/foo/", None),
    # Exact /foo/: /foo no; /foo/ yes.
    ([("Exact", "/foo/")], "/foo", None),
    ([("Exact", "/foo/")], "/foo/", ("Exact", "/foo/")),
    # Prefix /foo: /foo, /foo/ yes.
    ([("Prefix", "/foo")], "/foo", ("Prefix", "/foo")),
    ([("Prefix", "/foo")], "/foo/", ("Prefix", "/foo")),
    # Prefix /foo/: /foo, /foo/ yes.
    ([("Prefix", "/foo/")], "/foo", ("Prefix", "/foo/")),
    ([("Prefix", "/foo/")], "/foo/", ("Prefix", "/foo/")),
    # Prefix /aaa/bb vs /aaa/bbb: no.
    ([("Prefix", "/aaa/bb")], "/aaa/bbb", None),
    # Prefix /aaa/bbb vs /aaa/bbb: yes.
    ([("Prefix", "/aaa/bbb")], "/aaa/bbb", ("Prefix", "/aaa/bbb")),
    # Prefix /aaa/bbb/ vs /aaa/bbb: yes, ignores trailing slash.
    ([("Prefix", "/aaa/bbb/")], "/aaa/bbb", ("Prefix", "/aaa/bbb/")),
    # Prefix /aaa/bbb vs /aaa/bbb/: yes, matches trailing slash.
    ([("Prefix", "/aaa/bbb")], "/aaa/bbb/", ("Prefix", "/aaa/bbb")),
    # Prefix /aaa/bbb vs /aaa/bbb/ccc: yes, matches subpath.
    ([("Prefix", "/aaa/bbb")], "/aaa/bbb/ccc", ("Prefix", "/aaa/bbb")),
    # Prefix /aaa/bbb vs /aaa/bbbxyz: no, does not match string prefix.
    ([("Prefix", "/aaa/bbb")], "/aaa/bbbxyz", None),
    # Prefix /, /aaa vs /aaa/ccc: yes, matches /aaa prefix.
    ([("Prefix", "/"), ("Prefix", "/aaa")], "/aaa/ccc", ("Prefix", "/aaa")),
    # Prefix /, /aaa, /aaa/bbb vs /aaa/bbb: yes, matches /aaa/bbb prefix.
    (
        [("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")],
        "/aaa/bbb",
        ("Prefix", "/aaa/bbb"),
    ),
    # Prefix /, /aaa, /aaa/bbb vs /ccc: yes, matches / prefix.
    ([("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")], "/ccc", ("Prefix", "/")),
    # Prefix /aaa vs /ccc: no, uses default backend.
    ([("Prefix", "/aaa")], "/ccc", None),
    # Mixed: Prefix /foo and Exact /foo vs /foo: yes, prefers Exact.
    ([("Prefix", "/foo"), ("Exact", "/foo")], "/foo", ("Exact", "/foo")),
]


def _rule_name(rule: Rule) -> str:
    return f"{rule[0]} {rule[1]}"


@pytest.mark.parametrize(
    ("rules", "path", "expected"),
    K8S_EXAMPLES,
    ids=[f"{'+'.join(_rule_name(r) for r in rules)} vs {p}" for rules, p, _ in K8S_EXAMPLES],
)
def test_kubernetes_ingress_examples(rules: list[Rule], path: str, expected: Rule | None) -> None:
    routes = table(
        *(route(name=_rule_name(rule), path_type=rule[0], path=rule[1]) for rule in rules)
    )
    assert selected(routes, request(path)) == (_rule_name(expected) if expected else None)


@pytest.mark.parametrize(("rules", "path", "expected"), K8S_EXAMPLES)
def test_kubernetes_examples_hold_in_any_declaration_order(
    rules: list[Rule], path: str, expected: Rule | None
) -> None:
    """Longest prefix and Exact-first do not depend on the order rules are written in."""
    routes = table(
        *(route(name=_rule_name(rule), path_type=rule[0], path=rule[1]) for rule in reversed(rules))
    )
    assert selected(routes, request(path)) == (_rule_name(expected) if expected else None)
