"""Address allow and deny lists: deny wins, an allow list admits only its networks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from portway.config.policies import IpFilterConfig
from portway.messages import Request
from portway.policies.ip_filter import IpFilterPolicy


def verdict(policy: IpFilterPolicy, ip: str) -> int:
    answer = policy.apply(Request("GET", "h", "/", client_ip=ip))
    return 200 if answer is None else answer.status


def test_allow_list_with_a_denied_hole() -> None:
    policy = IpFilterPolicy(
        "office",
        IpFilterConfig(allow=["192.0.2.0/24", "2001:db8::/32"], deny=["192.0.2.128/25"]),
    )
    assert verdict(policy, "192.0.2.1") == 200
    assert verdict(policy, "192.0.2.200") == 403  # deny wins over allow
    assert verdict(policy, "198.51.100.1") == 403  # not in the allow list
    assert verdict(policy, "2001:db8::5") == 200
    assert verdict(policy, "::ffff:192.0.2.1") == 200  # IPv4-mapped IPv6 is the IPv4 address
    assert verdict(policy, "") == 403 and verdict(policy, "not-an-ip") == 403
    answer = policy.apply(Request("GET", "h", "/", client_ip="198.51.100.1"))
    assert answer is not None and answer.cause == b"address_refused"


def test_deny_list_alone_admits_everyone_else() -> None:
    policy = IpFilterPolicy("block", IpFilterConfig(deny=["203.0.113.0/24"]))
    assert verdict(policy, "203.0.113.9") == 403
    assert verdict(policy, "198.51.100.1") == 200
    assert policy.verdicts == {"203.0.113.9": False, "198.51.100.1": True}


def test_config_needs_a_list_and_valid_networks() -> None:
    with pytest.raises(ValidationError, match="set allow, deny or both"):
        IpFilterConfig()
    with pytest.raises(ValidationError, match="not a valid IP network"):
        IpFilterConfig(allow=["10.0.0.0/33"])
