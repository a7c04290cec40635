"""Policy configs: each mistake is reported at its file, line and field, with why."""

from __future__ import annotations

from portway.config.loader import load_config
from tests.unit.config.conftest import IssuesIn, WriteYaml, where

HEAD = """
services:
  api:
    instances: ["127.0.0.1:9000"]
"""


def test_a_valid_policy_section_loads(write_yaml: WriteYaml) -> None:
    config = load_config(
        write_yaml(
            HEAD
            + """
policies:
  keys:
    api_key:
      keys:
        - {consumer: alice, key: "0123456789abcdef0123"}
  per-consumer:
    rate_limit: {requests: 100, per: 1m, key: consumer}
routes:
  - {path: /, service: api, policies: [per-consumer, keys]}
"""
        )
    )
    assert config.policies["keys"].kind == "api_key"
    limit = config.policies["per-consumer"].rate_limit
    assert limit is not None and (limit.requests, limit.per, limit.key) == (100, 60.0, "consumer")
    assert config.routes[0].policies == ["per-consumer", "keys"]


def test_unknown_policy_in_a_route(issues_in: IssuesIn) -> None:
    (issue,) = issues_in(
        HEAD
        + """
policies:
  per-ip: {rate_limit: {requests: 5, per: 1s}}
routes:
  - {path: /, service: api, policies: [per-ip, nope]}
"""
    )
    assert issue.field == "routes[0].policies[1]"
    assert issue.line == 8
    assert issue.message == "unknown policy 'nope' (defined: per-ip)"


def test_policy_with_two_kinds_or_none(issues_in: IssuesIn) -> None:
    issues = issues_in(
        HEAD
        + """
policies:
  both:
    rate_limit: {requests: 5, per: 1s}
    api_key: {keys: [{consumer: a, key: "0123456789abcdef"}]}
  neither: {}
"""
    )
    messages = {i.field: i.message for i in issues}
    assert "set exactly one of ip_filter, " in messages["policies.both"]
    assert "set exactly one of" in messages["policies.neither"]


def test_consumer_rate_limit_needs_authentication_on_the_route(issues_in: IssuesIn) -> None:
    (issue,) = issues_in(
        HEAD
        + """
policies:
  per-consumer: {rate_limit: {requests: 5, per: 1s, key: consumer}}
routes:
  - {path: /, service: api, policies: [per-consumer]}
"""
    )
    assert issue.field == "routes[0].policies[0]"
    assert "no authentication policy" in issue.message


def test_redis_store_needs_a_redis_section(issues_in: IssuesIn) -> None:
    (issue,) = issues_in(
        HEAD
        + """
policies:
  shared:
    rate_limit: {requests: 5, per: 1s, store: redis}
"""
    )
    assert where(issue)[2] == "policies.shared.rate_limit.store"
    assert issue.line == 7
    assert "needs a top-level `redis` section" in issue.message


def test_bad_values_in_policies(issues_in: IssuesIn) -> None:
    issues = issues_in(
        HEAD
        + """
policies:
  keys:
    api_key:
      header: "bad header"
      keys:
        - {consumer: "no spaces", key: short}
        - {consumer: b, key_sha256: "xyz"}
  limit:
    rate_limit: {requests: 0, per: 0s, key: header}
redis: {url: "http://127.0.0.1:6379"}
"""
    )
    messages = {i.field: i.message for i in issues}
    assert "not a valid header name" in messages["policies.keys.api_key.header"]
    assert "consumer name 'no spaces'" in messages["policies.keys.api_key.keys[0].consumer"]
    assert "at least 16 characters" in messages["policies.keys.api_key.keys[0].key"]
    assert "64 hex digits" in messages["policies.keys.api_key.keys[1].key_sha256"]
    assert "greater than or equal to 1" in messages["policies.limit.rate_limit.requests"]
    assert "redis://" in messages["redis.url"]


def test_policy_names_become_labels_so_their_alphabet_is_checked(issues_in: IssuesIn) -> None:
    (issue,) = issues_in(HEAD + "policies:\n  Bad_Name: {rate_limit: {requests: 1, per: 1s}}\n")
    assert (issue.field, issue.line) == ("policies.Bad_Name", 5)
    assert "must be lower-case letters" in issue.message


def test_a_policy_listed_twice(issues_in: IssuesIn) -> None:
    (issue,) = issues_in(
        HEAD
        + """
policies:
  per-ip: {rate_limit: {requests: 5, per: 1s}}
routes:
  - {path: /, service: api, policies: [per-ip, per-ip]}
"""
    )
    assert issue.field == "routes[0].policies[1]"
    assert issue.message == "policy 'per-ip' is listed twice"
