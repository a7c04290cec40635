"""TLS settings in a config file: each unusable certificate or contradictory setting is reported at
load time with the file, the line, the field and the reason; certificate paths are relative to the
config file. And ``name_covers``, the RFC 6125 §6.4.3 wildcard rule the checks use."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from portway.config.loader import load_config
from portway.config.tls_checks import name_covers
from portway.errors import ConfigIssue
from tests.support.tls import Pki, key_pem
from tests.unit.config.conftest import IssuesIn, WriteYaml, where


def only(issues: list[ConfigIssue]) -> ConfigIssue:
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A CA writing next to the config file (``tmp_path``), so the YAML can use relative paths."""
    return Pki(tmp_path)


def listener(certificates: str, tls: str = "", listener_extra: str = "") -> str:
    """A config with one TLS listener: ``certificates`` is its YAML list, ``tls`` more settings of
    its ``tls`` section, ``listener_extra`` more settings of the listener."""

    def indent(text: str, by: int) -> str:
        return textwrap.indent(textwrap.dedent(text).strip("\n"), " " * by)

    text = 'listeners:\n  - address: "127.0.0.1:8443"\n    tls:\n      certificates:\n'
    text += indent(certificates, 6) + "\n"
    if tls:
        text += indent(tls, 6) + "\n"
    if listener_extra:
        text += indent(listener_extra, 4) + "\n"
    return text


CERT_LINE = 5  # the first certificate's first line in ``listener``'s output; a key's column is
# where the key starts


# -- name_covers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "host", "covered"),
    [
        ("api.example.com", "api.example.com", True),
        ("api.example.com", "www.example.com", False),
        ("*.example.com", "api.example.com", True),
        ("*.example.com", "a.b.example.com", False),  # one label only
        ("*.example.com", "example.com", False),  # the wildcard needs a label
        ("*.example.com", ".example.com", False),  # an empty label is no label
        ("*.example.com", "*.example.com", True),  # the same pattern, as configured hosts are
        ("*.a.example.com", "*.example.com", False),
        ("*.example.com", "*.a.example.com", False),  # a wildcard host is only covered by itself
        ("*.example.com", "apiexample.com", False),
        ("a.*.example.com", "a.b.example.com", False),  # only the left-most label may be "*"
        ("*.com", "example.com", True),  # RFC 6125 §7.2 discourages it; the match rule allows it
    ],
)
def test_name_covers(name: str, host: str, covered: bool) -> None:
    """RFC 6125 §6.4.3: the wildcard is the complete left-most label and matches one label."""
    assert name_covers(name, host) is covered


# -- certificate material --------------------------------------------------------------------------


def test_good_certificates_load_with_paths_relative_to_the_config(
    pki: Pki, write_yaml: WriteYaml, tmp_path: Path
) -> None:
    pki.issue("a.example.com", file="a")
    pki.issue("*.w.example.com", file="w")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = write_yaml(
        listener(
            """
            - {cert_file: a.crt, key_file: a.key}
            - {cert_file: ./w.crt, key_file: w.key, hosts: [x.w.example.com, "*.w.example.com"]}
            """,
            "default_certificate: x.w.example.com",
        )
    )
    previous = os.getcwd()
    os.chdir(elsewhere)  # not where the files are
    try:
        config = load_config(path)
    finally:
        os.chdir(previous)
    tls = config.listeners[0].tls
    assert tls is not None
    assert [c.cert_file for c in tls.certificates] == [
        str(tmp_path / "a.crt"),
        str(tmp_path / "w.crt"),
    ]
    assert tls.default_certificate == "x.w.example.com"


def test_garbage_pem(pki: Pki, issues_in: IssuesIn, tmp_path: Path) -> None:
    pki.issue("a.example.com", file="a")
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    issue = only(issues_in(listener("- {cert_file: garbage.pem, key_file: a.key}")))
    assert where(issue) == (CERT_LINE, 10, "listeners[0].tls.certificates[0].cert_file")
    assert issue.message == f"cert_file {tmp_path}/garbage.pem: no PEM certificate in the file"


def test_missing_file(pki: Pki, issues_in: IssuesIn, tmp_path: Path) -> None:
    pki.issue("a.example.com", file="a")
    issue = only(issues_in(listener("- {cert_file: a.crt, key_file: nowhere.key}")))
    assert where(issue) == (CERT_LINE, 28, "listeners[0].tls.certificates[0].key_file")
    assert issue.message == f"key_file {tmp_path}/nowhere.key: file not found"


def test_mismatched_key(pki: Pki, issues_in: IssuesIn, tmp_path: Path) -> None:
    a = pki.issue("a.example.com", file="a")
    (tmp_path / "other.key").write_bytes(key_pem())
    issue = only(
        issues_in(
            listener(
                """
                - cert_file: a.crt
                  key_file: other.key
                """
            )
        )
    )
    assert where(issue) == (CERT_LINE + 1, 9, "listeners[0].tls.certificates[0].key_file")
    assert issue.message == (
        f"key_file {tmp_path}/other.key: the key does not match the certificate in "
        f"{tmp_path}/a.crt ({a.subject!r})"
    )


def test_expired_certificate(pki: Pki, issues_in: IssuesIn, tmp_path: Path) -> None:
    old = pki.expired("old.example.com", file="old")
    issue = only(issues_in(listener("- {cert_file: old.crt, key_file: old.key}")))
    assert where(issue)[2] == "listeners[0].tls.certificates[0].cert_file"
    assert issue.line == CERT_LINE
    assert issue.message == (
        f"cert_file {tmp_path}/old.crt: certificate {old.subject!r} expired on "
        "2020-12-31 00:00:00 UTC"
    )


def test_broken_chain(pki: Pki, issues_in: IssuesIn, tmp_path: Path) -> None:
    """The leaf followed by an intermediate that did not issue it."""
    leaf = pki.issue("chain.example.com", ca=pki.ca.create_child_ca(), file="chain")
    stranger = pki.ca.create_child_ca()
    (tmp_path / "broken.crt").write_bytes(
        leaf.leaf.cert_chain_pems[0].bytes() + stranger.cert_pem.bytes()
    )
    issue = only(issues_in(listener("- {cert_file: broken.crt, key_file: chain.key}")))
    assert where(issue)[2] == "listeners[0].tls.certificates[0].cert_file"
    assert issue.message.startswith(
        f"cert_file {tmp_path}/broken.crt: the chain is broken: certificate 1 ({leaf.subject!r}) "
        "is not issued by certificate 2"
    )


def test_client_ca_file_garbage(pki: Pki, issues_in: IssuesIn, tmp_path: Path) -> None:
    pki.issue("a.example.com", file="a")
    (tmp_path / "clients.pem").write_text("nope")
    issue = only(
        issues_in(
            listener(
                """
                - cert_file: a.crt
                  key_file: a.key
                  client_auth: {ca_file: clients.pem}
                """
            )
        )
    )
    assert where(issue)[2] == "listeners[0].tls.certificates[0].client_auth.ca_file"
    assert issue.line == CERT_LINE + 2
    assert issue.message == f"ca_file {tmp_path}/clients.pem: no PEM certificate in the file"


# -- hosts -----------------------------------------------------------------------------------------


def test_host_not_covered_by_the_certificate(pki: Pki, issues_in: IssuesIn, tmp_path: Path) -> None:
    pki.issue("*.w.example.com", "w.example.com", file="w")
    issue = only(
        issues_in(
            listener(
                """
                - cert_file: w.crt
                  key_file: w.key
                  hosts: [a.w.example.com, a.b.w.example.com]
                """
            )
        )
    )
    assert where(issue) == (CERT_LINE + 2, 9, "listeners[0].tls.certificates[0].hosts")
    assert issue.message == (
        f"host 'a.b.w.example.com' is not among the names of the certificate in "
        f"{tmp_path}/w.crt (*.w.example.com, w.example.com)"
    )


def test_duplicate_host_across_certificates(pki: Pki, issues_in: IssuesIn) -> None:
    pki.issue("a.example.com", "b.example.com", file="ab")
    pki.issue("b.example.com", file="b")
    issue = only(
        issues_in(
            listener(
                """
                - {cert_file: ab.crt, key_file: ab.key}
                - cert_file: b.crt
                  key_file: b.key
                  hosts: [b.example.com]
                """
            )
        )
    )
    assert where(issue) == (CERT_LINE + 3, 9, "listeners[0].tls.certificates[1].hosts")
    assert issue.message == (
        "host 'b.example.com' is also served by certificates[0] of this listener: "
        "each name needs one certificate"
    )


def test_a_wildcard_and_an_exact_name_are_no_duplicate(pki: Pki, write_yaml: WriteYaml) -> None:
    pki.issue("*.example.com", file="w")
    pki.issue("a.example.com", file="a")
    load_config(
        write_yaml(
            listener(
                """
                - {cert_file: w.crt, key_file: w.key}
                - {cert_file: a.crt, key_file: a.key}
                """
            )
        )
    )


def test_default_certificate_unknown(pki: Pki, issues_in: IssuesIn) -> None:
    pki.issue("a.example.com", file="a")
    issue = only(
        issues_in(
            listener(
                "- {cert_file: a.crt, key_file: a.key}",
                "default_certificate: b.example.com",
            )
        )
    )
    assert where(issue) == (CERT_LINE + 1, 7, "listeners[0].tls.default_certificate")
    assert (
        issue.message
        == "no certificate of this listener serves 'b.example.com' (served: a.example.com)"
    )


# -- settings that contradict each other -----------------------------------------------------------


def test_https_redirect_on_a_tls_listener(pki: Pki, issues_in: IssuesIn) -> None:
    pki.issue("a.example.com", file="a")
    text = listener("- {cert_file: a.crt, key_file: a.key}", listener_extra="https_redirect: {}")
    issue = only(issues_in(text))
    assert where(issue) == (2, 5, "listeners[0]")
    assert issue.message == "https_redirect belongs on a plain-HTTP listener, not a TLS one"


def test_passthrough_with_tls(pki: Pki, issues_in: IssuesIn) -> None:
    pki.issue("a.example.com", file="a")
    text = (
        "listeners:\n"
        '  - address: "127.0.0.1:8443"\n'
        "    passthrough: {default_service: s}\n"
        "    tls:\n"
        "      certificates: [{cert_file: a.crt, key_file: a.key}]\n"
        "services: {s: {instances: []}}\n"
    )
    issue = only(issues_in(text))
    assert where(issue) == (2, 5, "listeners[0]")
    assert issue.message == "a passthrough listener has no tls or https_redirect of its own"


def test_acme_needs_a_plain_listener(issues_in: IssuesIn) -> None:
    issue = only(issues_in(listener("- {acme: true, hosts: [a.example.com]}")))
    assert where(issue)[2] == "listeners[0].tls.certificates[0].acme"
    assert issue.message == "ACME HTTP-01 needs a plain-HTTP listener to answer the CA's challenge"


@pytest.mark.parametrize(
    ("certificate", "message"),
    [
        ("{acme: true}", "an acme certificate needs its hosts"),
        ('{acme: true, hosts: ["*.example.com"]}', "ACME HTTP-01 cannot validate a wildcard host"),
        ("{cert_file: a.crt}", "set both cert_file and key_file (or acme: true)"),
        (
            "{acme: true, hosts: [a.example.com], cert_file: a.crt}",
            "set either acme or cert_file/key_file, not both",
        ),
    ],
)
def test_certificate_source(issues_in: IssuesIn, certificate: str, message: str) -> None:
    issue = only(issues_in(listener(f"- {certificate}")))
    assert where(issue) == (CERT_LINE, 9, "listeners[0].tls.certificates[0]")
    assert issue.message == message


@pytest.mark.parametrize(
    ("setting", "field", "message"),
    [
        ("alpn: [h2]", "alpn", "h2 is not served yet"),
        ("alpn: [spdy/3]", "alpn", "unknown ALPN protocol 'spdy/3' (served: http/1.1)"),
        ("alpn: []", "alpn", "offer at least one protocol"),
        ("ciphers: NOT-A-CIPHER", "ciphers", "OpenSSL knows no cipher in 'NOT-A-CIPHER'"),
        ("ticket_key_rotation: 10s", "ticket_key_rotation", "rotate ticket keys no more often"),
        ("min_version: '1.1'", "min_version", "Input should be '1.2' or '1.3'"),
        ("unknown_sni: drop", "unknown_sni", "Input should be 'default' or 'reject'"),
    ],
)
def test_policy_settings(
    pki: Pki, issues_in: IssuesIn, setting: str, field: str, message: str
) -> None:
    pki.issue("a.example.com", file="a")
    issue = only(issues_in(listener("- {cert_file: a.crt, key_file: a.key}", setting)))
    assert where(issue)[::2] == (CERT_LINE + 1, f"listeners[0].tls.{field}")
    assert message in issue.message


# -- forward_auth tls ------------------------------------------------------------------------------


def forward_auth(url: str, tls: str) -> str:
    """A config whose route has a forward_auth policy with this ``url`` and ``tls`` (line 6)."""
    return (
        'services: {web: {instances: ["127.0.0.1:8000"]}}\n'
        "policies:\n"
        "  sso:\n"
        "    forward_auth:\n"
        f"      url: {url}\n"
        f"      tls: {tls}\n"
        "routes: [{service: web, policies: [sso]}]\n"
    )


def test_forward_auth_tls_is_read_relative_to_the_config_file(pki: Pki, tmp_path: Path) -> None:
    pki.issue("auth.internal", file="auth")
    (tmp_path / "ca.pem").write_bytes(pki.ca.cert_pem.bytes())
    path = tmp_path / "portway.yaml"
    tls = "{ca_file: ca.pem, cert_file: auth.crt, key_file: auth.key, server_name: auth.internal}"
    path.write_text(forward_auth("https://auth.internal/check", tls))
    auth = load_config(path).policies["sso"].forward_auth
    assert auth is not None and auth.tls is not None
    assert (auth.tls.ca_file, auth.tls.cert_file) == (
        str(tmp_path / "ca.pem"),
        str(tmp_path / "auth.crt"),
    )
    assert auth.tls.server_name == "auth.internal"


def test_forward_auth_tls_garbage_ca_file(issues_in: IssuesIn, tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("nope")
    text = forward_auth("https://auth.internal/check", "{ca_file: ca.pem}")
    issue = only(issues_in(text))
    assert where(issue) == (6, 13, "policies.sso.forward_auth.tls.ca_file")
    assert issue.message == f"ca_file {tmp_path}/ca.pem: no PEM certificate in the file"


def test_forward_auth_tls_needs_an_https_url(issues_in: IssuesIn) -> None:
    text = forward_auth("http://auth.internal/check", "{verify: false}")
    issue = issues_in(text)[0]  # the route's reference to the refused policy is reported too
    assert where(issue) == (4, 5, "policies.sso.forward_auth")
    assert "tls needs an https:// url" in issue.message
