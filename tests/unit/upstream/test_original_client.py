"""The client behind trusted proxies, read from X-Forwarded-For right to left (as nginx's
``real_ip_recursive`` does; RFC 7239 §5.2 for why only trusted hops are believed)."""

from __future__ import annotations

import pytest

from portway.config.types import networks
from portway.upstream.forward import original_client

TRUSTED = networks(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("xff", "expected"),
    [
        (b"203.0.113.7", "203.0.113.7"),
        # The client's own claims left of the first untrusted address are never believed.
        (b"1.2.3.4, 203.0.113.7", "203.0.113.7"),
        (b"203.0.113.7, 10.1.1.1, 10.2.2.2", "203.0.113.7"),
        (b"203.0.113.7,10.1.1.1", "203.0.113.7"),
        # Every hop trusted: the leftmost is the best known.
        (b"10.9.9.9, 10.1.1.1", "10.9.9.9"),
        # Ports and IPv6 forms as proxies write them.
        (b"203.0.113.7:5555", "203.0.113.7"),
        (b"[2001:db8::1]:443, 10.1.1.1", "2001:db8::1"),
        (b"2001:db8::1, fd00::2", "2001:db8::1"),
        # A malformed entry ends the walk at the last address a trusted hop gave.
        (b"203.0.113.7, garbage, 10.1.1.1", "10.1.1.1"),
        (b"unknown", "10.0.0.1"),
        (b"", "10.0.0.1"),
    ],
)
def test_original_client(xff: bytes, expected: str) -> None:
    assert original_client(xff, "10.0.0.1", TRUSTED) == expected
