"""A good config file loads with the values it spells, whatever the spelling."""

from __future__ import annotations

from pathlib import Path

import pytest

from portway.config import Config
from portway.config.loader import format_field_path, load_config, load_config_text
from portway.errors import ConfigError
from tests.unit.config.conftest import WriteYaml

GOOD = r"""
listeners:
  - address: 0.0.0.0:8080
    name: public
  - address: "[::1]:9090"
server:
  limits:
    max_request_line: 4k
    max_header_bytes: 64KiB
    max_body_bytes: 10MB
    max_header_count: 50
  timeouts:
    header: 250ms
    keepalive: 2m
    drain: 1h
    body: 7
  trusted_proxies: [10.0.0.0/8, "192.168.1.7"]
  merge_slashes: true
services:
  users:
    instances:
      - 10.0.0.1:8000
      - address: 10.0.0.2:8000
        weight: 3
    algorithm: least_request
    connect_timeout: 1.5
    sticky:
      cookie: sid
      max_age: 30m
    pool: {max_idle: 8, idle_timeout: 90s}
  search:
    instances: []
    algorithm: ring_hash
    hash_on: {header: X-User}
routes:
  - name: users-api
    hosts: [Api.Example.com, "*.example.org"]
    path: /users
    methods: [get, post]
    headers:
      - {name: X-Version, exact: "2"}
    query:
      - {name: debug, present: false}
    service: users
  - path: ^/search/\d+$
    path_type: Regex
    service: search
"""


@pytest.fixture
def good(write_yaml: WriteYaml) -> Config:
    return load_config(write_yaml(GOOD))


def test_listeners(good: Config) -> None:
    assert [(item.address, item.name) for item in good.listeners] == [
        ("0.0.0.0:8080", "public"),
        ("[::1]:9090", None),
    ]


def test_sizes_durations_and_cidrs(good: Config) -> None:
    limits, timeouts = good.server.limits, good.server.timeouts
    assert (limits.max_request_line, limits.max_header_bytes) == (4096, 65536)
    assert limits.max_body_bytes == 10_000_000
    assert limits.max_header_count == 50
    assert (timeouts.header, timeouts.keepalive, timeouts.drain, timeouts.body) == (
        0.25,
        120.0,
        3600.0,
        7.0,
    )
    assert good.server.trusted_proxies == ["10.0.0.0/8", "192.168.1.7/32"]
    assert good.server.explain_from == []
    assert good.server.merge_slashes is True


def test_services(good: Config) -> None:
    users = good.services["users"]
    assert [(i.address, i.weight) for i in users.instances] == [
        ("10.0.0.1:8000", 1),
        ("10.0.0.2:8000", 3),
    ]
    assert users.algorithm == "least_request"
    assert users.connect_timeout == 1.5
    assert users.read_timeout == 60.0
    assert users.sticky is not None
    assert (users.sticky.cookie, users.sticky.max_age, users.sticky.http_only) == (
        "sid",
        1800.0,
        True,
    )
    assert (users.pool.max_idle, users.pool.idle_timeout) == (8, 90.0)
    search = good.services["search"]
    assert search.instances == []
    assert search.hash_on is not None
    assert search.hash_on.header == "x-user"


def test_routes_are_normalized(good: Config) -> None:
    first, second = good.routes
    assert first.name == "users-api"
    assert first.hosts == ["api.example.com", "*.example.org"]
    assert first.methods == ["GET", "POST"]
    assert [(h.name, h.exact) for h in first.headers] == [("x-version", "2")]
    assert [(q.name, q.present) for q in first.query] == [("debug", False)]
    assert (second.path, second.path_type, second.name) == (r"^/search/\d+$", "regex", None)


def test_empty_mapping_gives_the_defaults() -> None:
    config = load_config_text("{}\n")
    assert config == Config()
    assert [item.address for item in config.listeners] == ["127.0.0.1:8080"]


def test_keys_are_names_even_when_yaml_would_read_them_as_other_types() -> None:
    config = load_config_text("services:\n  on: {instances: []}\n  '42': {instances: []}\n")
    assert list(config.services) == ["on", "42"]


def test_merge_keys_and_aliases(write_yaml: WriteYaml) -> None:
    path = write_yaml(
        """
        services:
          base: &base
            instances: [10.0.0.1:80]
            connect_timeout: 2s
          copy:
            <<: *base
            connect_timeout: 3s
        routes:
          - &route {path: /a, service: base}
          - *route
          - {<<: *route, path: /b}
        """
    )
    with pytest.raises(ConfigError) as caught:  # the alias repeats the first route's match
        load_config(path)
    [issue] = caught.value.issues
    # PyYAML keeps no position for an alias: a list item that is one is located at its anchor.
    assert (issue.line, issue.field) == (9, "routes[1]")
    assert (
        issue.message == "route 'routes[1]' can never match: route 'routes[0]' has the same match"
    )


def test_merged_values_override_nothing_explicit() -> None:
    config = load_config_text(
        "services:\n"
        "  a: &a {instances: [10.0.0.1:80], connect_timeout: 2s}\n"
        "  b: {<<: [{connect_timeout: 9s}, *a], read_timeout: 1s}\n"
    )
    copy = config.services["b"]
    assert [i.address for i in copy.instances] == ["10.0.0.1:80"]
    # Earlier merge sources win over later ones; explicit keys win over all.
    assert (copy.connect_timeout, copy.read_timeout) == (9.0, 1.0)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfservices:\n  caf\xc3\xa9: {instances: []}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    # The file parses; the only complaint is the non-ASCII service name.
    [issue] = caught.value.issues
    assert (issue.line, issue.field) == (2, "services['café']")
    assert issue.message.startswith("service name 'café' must be lower-case")


def test_load_config_accepts_a_string_path(write_yaml: WriteYaml) -> None:
    path = write_yaml("routes: []\n")
    assert load_config(str(path)).routes == []


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ((), ""),
        (("routes", 2, "path"), "routes[2].path"),
        (("services", "users", "instances", 0), "services.users.instances[0]"),
        (("services", "a.b", "pool"), "services['a.b'].pool"),
    ],
)
def test_format_field_path(path: tuple[str | int, ...], text: str) -> None:
    assert format_field_path(path) == text
