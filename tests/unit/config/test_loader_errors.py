"""Each bad config names the file, the line, the column and the field, with a useful message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from portway.config.loader import load_config, load_config_text
from portway.errors import ConfigError, ConfigIssue
from tests.unit.config.conftest import IssuesIn, where


def only(issues: list[ConfigIssue]) -> ConfigIssue:
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


# ------------------------------------------------------------------------------ unknown keys


def test_unknown_top_level_key(issues_in: IssuesIn) -> None:
    issue = only(issues_in("routes: []\nbogus: 1\n"))
    assert where(issue) == (2, 1, "bogus")
    assert issue.message == (
        "unknown key 'bogus' "
        "(allowed: listeners, server, services, routes, policies, redis, admin, acme)"
    )


def test_unknown_nested_key_suggests_the_closest_name(issues_in: IssuesIn) -> None:
    issue = only(
        issues_in(
            """
            services:
              users:
                instances: []
                pool:
                  max_idel: 3
            """
        )
    )
    assert where(issue) == (5, 7, "services.users.pool.max_idel")
    assert issue.message == (
        "unknown key 'max_idel' (allowed: max_idle, idle_timeout; did you mean 'max_idle'?)"
    )


def test_unknown_key_in_a_list_item(issues_in: IssuesIn) -> None:
    issue = only(issues_in("routes:\n  - service: a\n    paht: /x\n"))
    assert where(issue) == (3, 5, "routes[0].paht")
    assert issue.message.startswith("unknown key 'paht' (allowed: name, hosts, path, path_type,")


# -------------------------------------------------------------------------------- bad values


def test_wrong_type(issues_in: IssuesIn) -> None:
    issue = only(issues_in("server:\n  merge_slashes: maybe\n"))
    assert where(issue) == (2, 3, "server.merge_slashes")
    assert issue.message == "Input should be a valid boolean, unable to interpret input"


def test_wrong_type_for_a_whole_section(issues_in: IssuesIn) -> None:
    issue = only(issues_in("routes:\n  path: /\n"))
    assert where(issue) == (1, 1, "routes")
    assert issue.message == "Input should be a valid list"


def test_number_out_of_range(issues_in: IssuesIn) -> None:
    issue = only(issues_in("services:\n  a:\n    instances:\n      - {address: h:1, weight: 0}\n"))
    assert where(issue) == (4, 24, "services.a.instances[0].weight")
    assert issue.message == "Input should be greater than or equal to 1"


def test_bad_duration(issues_in: IssuesIn) -> None:
    issue = only(issues_in("server:\n  timeouts:\n    header: 10 minutes\n"))
    assert where(issue) == (3, 5, "server.timeouts.header")
    assert issue.message == "expected a duration such as 5s, 250ms or 2m, got '10 minutes'"


def test_bad_size(issues_in: IssuesIn) -> None:
    issue = only(issues_in("server:\n  limits:\n    max_body_bytes: 10 parsecs\n"))
    assert where(issue) == (3, 5, "server.limits.max_body_bytes")
    assert issue.message == "expected a size such as 8192, 8k or 10MiB, got '10 parsecs'"


def test_bad_listener_address(issues_in: IssuesIn) -> None:
    issue = only(issues_in("listeners:\n  - address: localhost\n"))
    assert where(issue) == (2, 5, "listeners[0].address")
    assert issue.message == "expected 'host:port' with a port, got 'localhost'"


def test_bad_instance_address_in_shorthand_points_at_the_item(issues_in: IssuesIn) -> None:
    issue = only(
        issues_in(
            """
            services:
              users:
                instances:
                  - 10.0.0.1:80
                  - 10.0.0.2:99999
            """
        )
    )
    assert where(issue) == (5, 9, "services.users.instances[1].address")
    assert issue.message == "port must be a number from 0 to 65535 in '10.0.0.2:99999'"


def test_instance_that_is_neither_address_nor_mapping(issues_in: IssuesIn) -> None:
    issue = only(issues_in("services:\n  users:\n    instances: [8080]\n"))
    assert where(issue) == (3, 17, "services.users.instances[0]")
    assert issue.message == (
        "expected an address 'host:port' or a mapping with 'address', got 8080"
    )


def test_bad_header_regex(issues_in: IssuesIn) -> None:
    issue = only(
        issues_in(
            """
            services: {a: {instances: []}}
            routes:
              - service: a
                headers:
                  - name: x-id
                    regex: "([a-z]+"
            """
        )
    )
    assert where(issue) == (6, 9, "routes[0].headers[0].regex")
    assert issue.message.startswith("invalid regular expression '([a-z]+': missing )")


def test_bad_path_regex_is_reported_at_the_path(issues_in: IssuesIn) -> None:
    issue = only(
        issues_in(
            "services: {a: {instances: []}}\n"
            "routes:\n"
            "  - {path: '[', path_type: regex, service: a}\n"
        )
    )
    assert where(issue) == (3, 6, "routes[0].path")
    assert issue.message.startswith("invalid regular expression '['")


def test_path_without_slash_is_reported_with_the_other_errors_of_the_route(
    issues_in: IssuesIn,
) -> None:
    issues = issues_in(
        """
        routes:
          - path: users
            methods: [GET, "NOT A METHOD"]
        """
    )
    assert [(*where(i), i.message) for i in issues] == [
        (2, 5, "routes[0].service", "Field required"),
        (2, 5, "routes[0].path", "path must start with '/': 'users'"),
        (3, 20, "routes[0].methods[1]", "not an HTTP method: 'NOT A METHOD'"),
    ]


def test_bad_host(issues_in: IssuesIn) -> None:
    issue = only(
        issues_in(
            """
            services: {a: {instances: []}}
            routes:
              - hosts:
                  - example.com
                  - bad_host.example.com
                service: a
            """
        )
    )
    assert where(issue) == (5, 9, "routes[0].hosts[1]")
    assert issue.message.startswith("not a valid host: 'bad_host.example.com'")


def test_bad_cidr(issues_in: IssuesIn) -> None:
    issue = only(issues_in("server:\n  trusted_proxies: [10.0.0.0/8, 10.0.0.0/33]\n"))
    assert where(issue) == (2, 33, "server.trusted_proxies[1]")
    assert issue.message.startswith("not a valid IP network: '10.0.0.0/33'")


def test_hash_on_must_name_exactly_one_key(issues_in: IssuesIn) -> None:
    issue = only(
        issues_in("services:\n  a:\n    instances: []\n    algorithm: maglev\n    hash_on: {}\n")
    )
    assert where(issue) == (5, 5, "services.a.hash_on")
    assert issue.message == "set exactly one of header, cookie or client_ip"


# ------------------------------------------------------------------------------ missing keys


def test_missing_required_field_points_at_its_parent(issues_in: IssuesIn) -> None:
    issue = only(
        issues_in(
            """
            services:
              users:
                instances: []
            routes:
              - path: /users
                name: users
            """
        )
    )
    assert where(issue) == (5, 5, "routes[0].service")
    assert issue.message == "Field required"


def test_missing_instances_points_at_the_service(issues_in: IssuesIn) -> None:
    issue = only(issues_in("services:\n  users:\n    algorithm: random\n"))
    assert where(issue) == (2, 3, "services.users.instances")
    assert issue.message == "Field required"


# ------------------------------------------------------------------------------ YAML itself


def test_duplicate_key_reports_both_lines(issues_in: IssuesIn) -> None:
    issue = only(
        issues_in(
            """
            services:
              users:
                instances: []
                algorithm: random
                algorithm: maglev
            """
        )
    )
    assert where(issue) == (5, 5, "services.users.algorithm")
    assert issue.message == "duplicate key 'algorithm' (first at line 4)"


def test_duplicate_top_level_section(issues_in: IssuesIn) -> None:
    issue = only(issues_in("routes: []\nserver: {}\nroutes: []\n"))
    assert where(issue) == (3, 1, "routes")
    assert issue.message == "duplicate key 'routes' (first at line 1)"


def test_yaml_syntax_error(issues_in: IssuesIn) -> None:
    issue = only(issues_in("services:\n  users:\n    instances: [a:1\n  other: 2\n"))
    assert (issue.line, issue.field) == (4, "")
    assert issue.message.startswith("YAML syntax error: ")
    assert "flow sequence" in issue.message


def test_yaml_tab_indentation_says_so(issues_in: IssuesIn) -> None:
    issue = only(issues_in("services:\n\tusers: {}\n"))
    assert (issue.line, issue.column) == (2, 1)
    assert issue.message.endswith("YAML does not allow tabs for indentation")


def test_control_character(issues_in: IssuesIn) -> None:
    issue = only(issues_in("routes: []\nserver: {merge_slashes: \x07}\n"))
    assert (issue.line, issue.column) == (2, 25)
    assert (
        issue.message == "YAML syntax error: character U+0007: control characters are not allowed"
    )


def test_two_documents_are_an_error(issues_in: IssuesIn) -> None:
    issue = only(issues_in("routes: []\n---\nroutes: []\n"))
    assert issue.line == 2
    assert "expected a single document" in issue.message


def test_unknown_tag(issues_in: IssuesIn) -> None:
    issue = only(issues_in("server:\n  merge_slashes: !env MERGE\n"))
    assert where(issue) == (2, 18, "server.merge_slashes")
    assert issue.message == "could not determine a constructor for the tag '!env'"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("? [a, b]\n: 1\n", (1, 3, "", "a key must be a plain name, not a list")),
        ("server:\n  <<: [1]\n", (2, 8, "server", "'<<' can only merge mappings")),
        (
            "server:\n  limits: {max_header_count: !!int many}\n",
            (2, 30, "server.limits.max_header_count", "'many' is not a valid int"),
        ),
    ],
)
def test_yaml_structure_problems(
    issues_in: IssuesIn, text: str, expected: tuple[int, int, str, str]
) -> None:
    issue = only(issues_in(text))
    assert (*where(issue), issue.message) == expected


def test_recursive_alias(issues_in: IssuesIn) -> None:
    issues = issues_in("routes: &r [*r]\n")
    assert [(*where(i), i.message) for i in issues] == [
        (1, 9, "routes[0]", "an alias refers to a node that contains it"),
    ]


def test_nested_aliases_do_not_blow_up(issues_in: IssuesIn) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 10)]
    issues = issues_in("\n".join(levels) + "\n")  # 9**10 strings if expanded
    assert [i.field for i in issues] == [f"a{n}" for n in range(10)]
    assert all(i.message.startswith("unknown key") for i in issues)


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing configured yet\n", "---\n", "~\n"])
def test_empty_file(issues_in: IssuesIn, text: str) -> None:
    issue = only(issues_in(text))
    assert (issue.line, issue.field, issue.message) == (None, "", "the file is empty")


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- routes\n", "a list"), ("portway\n", "the single value 'portway'")],
)
def test_top_level_not_a_mapping(issues_in: IssuesIn, text: str, kind: str) -> None:
    issue = only(issues_in(text))
    assert (issue.line, issue.column, issue.field) == (1, 1, "")
    assert issue.message.endswith(f"not {kind}")


# ------------------------------------------------------------------------------------ files


def load_failure(path: Path) -> ConfigIssue:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    issue = only(caught.value.issues)
    assert issue.source == str(path)
    return issue


def test_missing_file(tmp_path: Path) -> None:
    issue = load_failure(tmp_path / "absent.yaml")
    assert (issue.line, issue.message) == (None, "file not found")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert load_failure(tmp_path).message == "is a directory, not a file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text("routes: []\n")
    path.chmod(0)
    assert load_failure(path).message == "permission denied"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("routes: []\nservices:\n  caf\xe9: {}\n".encode("latin-1"))
    issue = load_failure(path)
    assert (issue.line, issue.column) == (3, 6)
    assert issue.message == "not valid UTF-8: byte 0xe9 cannot be decoded"


def test_text_source_names_the_issue() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text("bogus: 1\n", source="inline.yaml")
    assert str(caught.value) == (
        "inline.yaml:1:1: bogus: unknown key 'bogus' "
        "(allowed: listeners, server, services, routes, policies, redis, admin, acme)"
    )
    assert only(load_failure_text("x: 1\n")).source == "<string>"


def load_failure_text(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    return caught.value.issues


# ------------------------------------------------------------------------------ many at once


def test_five_independent_errors_are_all_reported_in_line_order(issues_in: IssuesIn) -> None:
    issues = issues_in(
        """
        listeners:
          - address: nowhere
        server:
          timeouts:
            keepalive: forever
          trusted_proxies: [not-a-network]
        services:
          users:
            instances: []
            algorithm: fastest
        routes:
          - service: users
            hosts: ["-bad-.example.com"]
        """
    )
    assert [where(i) for i in issues] == [
        (2, 5, "listeners[0].address"),
        (5, 5, "server.timeouts.keepalive"),
        (6, 21, "server.trusted_proxies[0]"),
        (10, 5, "services.users.algorithm"),
        (13, 13, "routes[0].hosts[0]"),
    ]
    assert issues[3].message == (
        "Input should be 'round_robin', 'least_request', 'random', 'ring_hash' or 'maglev'"
    )
    text = str(ConfigError(issues))
    assert text.splitlines()[0].endswith(
        "portway.yaml:2:5: listeners[0].address: expected 'host:port' with a port, got 'nowhere'"
    )
