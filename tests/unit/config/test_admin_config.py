"""The admin listener's address: a documented loopback port by default, and a token required as
soon as it is reachable from another machine."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from portway.config.model import Config
from portway.config.observability import AdminConfig


def test_the_default_is_the_documented_loopback_port_without_a_token() -> None:
    admin = Config.model_validate({}).admin
    assert (admin.address, admin.token) == ("127.0.0.1:9901", None)


@pytest.mark.parametrize(
    "address", ["127.0.0.1:9901", "127.0.0.2:1", "localhost:9901", "[::1]:9901"]
)
def test_loopback_addresses_need_no_token(address: str) -> None:
    assert AdminConfig(address=address).token is None


@pytest.mark.parametrize(
    "address", ["0.0.0.0:9901", "[::]:9901", "192.0.2.7:9901", "admin.example.com:9901"]
)
def test_any_other_address_needs_a_token(address: str) -> None:
    wanted = f"admin listener on {re.escape(address)} is reachable .*: set admin.token"
    with pytest.raises(ValidationError, match=wanted):
        AdminConfig(address=address)
    assert AdminConfig(address=address, token="t").token == "t"


def test_no_admin_listener_needs_no_token() -> None:
    assert AdminConfig(address=None).address is None
