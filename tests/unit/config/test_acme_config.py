"""ACME certificates in the config: where they are kept, and lists that would collide there."""

from __future__ import annotations

from pathlib import Path

import pytest

from portway.config.loader import load_config_text
from portway.errors import ConfigError

PLAIN_AND_TLS = """\
listeners:
  - address: 127.0.0.1:80
  - address: 127.0.0.1:443
    tls:
      certificates:
"""


def test_two_host_lists_with_one_first_host_are_refused() -> None:
    text = PLAIN_AND_TLS + (
        "        - {acme: true, hosts: [a.example.com, b.example.com]}\n"
        "  - address: 127.0.0.1:8443\n"
        "    tls:\n"
        "      certificates:\n"
        "        - {acme: true, hosts: [a.example.com, c.example.com]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    (issue,) = caught.value.issues
    assert issue.line == 10
    assert "listeners[2].tls.certificates[0].hosts" in str(issue)
    assert "kept by their first host, and 'a.example.com' also starts" in issue.message


def test_the_same_host_list_on_two_listeners_shares_one_certificate(tmp_path: Path) -> None:
    text = PLAIN_AND_TLS + (
        "        - {acme: true, hosts: [a.example.com, b.example.com]}\n"
        "  - address: 127.0.0.1:8443\n"
        "    tls:\n"
        "      certificates:\n"
        "        - {acme: true, hosts: [a.example.com, b.example.com]}\n"
        f"acme: {{state_dir: {tmp_path}}}\n"
    )
    config = load_config_text(text)
    cert, key = config.acme.certificate_paths(["a.example.com", "b.example.com"])
    assert cert == tmp_path / "certificates" / "a.example.com" / "fullchain.pem"
    assert key.name == "privkey.pem"


def test_acme_needs_a_plain_listener() -> None:
    text = (
        "listeners:\n"
        "  - address: 127.0.0.1:443\n"
        "    tls:\n"
        "      certificates:\n"
        "        - {acme: true, hosts: [a.example.com]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    (issue,) = caught.value.issues
    assert issue.field == "listeners[0].tls.certificates[0].acme"
    assert "ACME HTTP-01 needs a plain-HTTP listener" in issue.message


def test_acme_cannot_validate_a_wildcard() -> None:
    text = PLAIN_AND_TLS + "        - {acme: true, hosts: ['*.example.com']}\n"
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    (issue,) = caught.value.issues
    assert "ACME HTTP-01 cannot validate a wildcard host" in issue.message
