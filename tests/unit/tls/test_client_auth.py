"""``tls.client_auth``: what a TLS connection established (``TlsSession``), the identity headers a
verified client certificate becomes, and ``authorize``'s verdict per request.

Sessions come from real handshakes over memory BIOs against a real ``CertificateStore``.
"""

from __future__ import annotations

import ipaddress
import ssl
from urllib.parse import unquote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from portway.config.tls import AcmeConfig, ListenerTlsConfig
from portway.errors import (
    ClientCertificateRejected,
    ClientCertificateRequired,
    Forbidden,
    HttpError,
    MisdirectedRequest,
)
from portway.tls.client_auth import ClientIdentity, TlsSession, authorize
from portway.tls.store import CertificateStore
from tests.support.tls import Issued, Pki, client_context, fingerprint, memory_handshake


class Material:
    def __init__(self, root: Pki, clients: Pki, others: Pki) -> None:
        self.root, self.clients, self.others = root, clients, others
        self.client = clients.issue("client.example.org", file="client")
        self.allowed = clients.issue("allowed.example.org", file="allowed", common_name="allowed")
        self.other_ca_client = others.issue("client.example.org", file="other-client")
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "workload")])
        self.workload = clients.issue_with(
            [
                x509.DNSName("w.example.org"),
                x509.UniformResourceIdentifier("spiffe://example.org/ns/prod/sa/api"),
                x509.RFC822Name("ops@example.org"),
                x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
            ],
            subject=subject,
            file="workload",
        )


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    folder = tmp_path_factory.mktemp("client-auth")
    return Material(Pki(folder), Pki(folder, name="clients"), Pki(folder, name="others"))


@pytest.fixture(scope="module")
def store(material: Material) -> CertificateStore:
    root, clients = material.root, str(material.clients.ca_file)

    def cert(*names: str, **client_auth: object) -> dict[str, object]:
        files: dict[str, object] = dict(root.issue(*names).files())
        if client_auth:
            files["client_auth"] = client_auth
        return files

    policy = ListenerTlsConfig.model_validate(
        {
            "certificates": [
                cert("plain.example.com"),  # 0, the default
                cert("mtls.example.com", ca_file=clients),  # 1
                cert("req.example.com", ca_file=clients, mode="request"),  # 2
                cert(
                    "subj.example.com",
                    ca_file=clients,
                    allowed_subjects=[material.allowed.subject],
                ),  # 3
                cert(
                    "sans.example.com",
                    ca_file=clients,
                    allowed_sans=["spiffe://example.org/ns/prod/sa/api", "nobody@example.org"],
                ),  # 4
                cert("*.w.example.com", ca_file=clients),  # 5
                cert("other.example.com", ca_file=str(material.others.ca_file)),  # 6
                cert("open.example.com"),  # 7
            ]
        }
    )
    return CertificateStore("test", policy, AcmeConfig())


def session(
    store: CertificateStore, material: Material, sni: str | None, cert: Issued | None = None
) -> TlsSession:
    server, _ = memory_handshake(store.base, client_context(material.root, cert=cert), sni)
    return TlsSession(server, store)


def verdict(result: bytes | HttpError) -> tuple[int, bytes]:
    """(status, portway-error cause) of an error; (200, b"") when the request may go on."""
    if isinstance(result, HttpError):
        return result.status, result.cause
    return 200, b""


# -- the session -----------------------------------------------------------------------------------


def test_session_facts(store: CertificateStore, material: Material) -> None:
    context = client_context(material.root, cert=material.client, alpn=["h2", "http/1.1"])
    server, client = memory_handshake(store.base, context, "MTLS.example.com")
    facts = TlsSession(server, store)
    assert facts.sni == "mtls.example.com"  # lower-cased by the SNI callback
    assert facts.served is store.select("mtls.example.com")
    assert facts.version == "TLSv1.3" == client.version()
    assert facts.alpn == "http/1.1"  # RFC 7301 §3.2: the server picks from what it serves
    assert facts.cipher == client.cipher()[0]  # type: ignore[index]
    assert facts.resumed is False
    assert facts.identity is not None
    assert facts.identity.fingerprint == material.client.fingerprint


def test_session_without_sni_is_the_default_certificate(
    store: CertificateStore, material: Material
) -> None:
    server, _ = memory_handshake(
        store.base, client_context(material.root, check_hostname=False), None
    )
    facts = TlsSession(server, store)
    assert facts.sni is None
    assert facts.served is store.served[0]
    assert facts.identity is None


# -- the identity headers --------------------------------------------------------------------------


def test_identity_headers(material: Material) -> None:
    certificate = material.workload.certificate
    identity = ClientIdentity.from_der(certificate.public_bytes(Encoding.DER))
    assert identity.subject == "CN=workload"
    assert identity.sans == (
        "DNS:w.example.org",
        "URI:spiffe://example.org/ns/prod/sa/api",
        "email:ops@example.org",
        "IP:10.1.2.3",
    )
    assert identity.fingerprint == fingerprint(certificate)
    assert identity.san_values() == {
        "w.example.org",
        "spiffe://example.org/ns/prod/sa/api",
        "ops@example.org",
        "10.1.2.3",
    }
    lines = identity.header_lines.decode("ascii").split("\r\n")
    assert lines[-1] == ""  # each line ends with CRLF
    headers = dict(line.split(": ", 1) for line in lines[:-1])
    assert list(headers) == [
        "x-client-cert-subject",
        "x-client-cert-san",
        "x-client-cert-fingerprint",
        "x-client-cert",
    ]
    assert headers["x-client-cert-subject"] == "CN=workload"
    assert unquote(headers["x-client-cert-san"]) == ",".join(identity.sans)
    assert headers["x-client-cert-fingerprint"] == fingerprint(certificate)
    assert "\n" not in headers["x-client-cert"] and " " not in headers["x-client-cert"]
    assert unquote(headers["x-client-cert"]) == material.workload.pem


def test_a_subject_with_line_breaks_cannot_split_the_header(material: Material) -> None:
    """Subject attribute values are the certificate owner's text: CR/LF must stay inside the
    header value (percent-encoded), never start a header of their own."""
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "evil\r\nx-client-cert-fingerprint: forged")]
    )
    evil = material.clients.issue_with([], subject=subject, file="evil")
    identity = ClientIdentity.from_der(evil.certificate.public_bytes(Encoding.DER))
    lines = identity.header_lines.split(b"\r\n")
    assert len(lines) == 5
    assert sum(line.startswith(b"x-client-cert-fingerprint:") for line in lines) == 1
    assert all(b"\r" not in line and b"\n" not in line for line in lines)


# -- authorize -------------------------------------------------------------------------------------


def test_host_without_client_auth_needs_no_certificate(
    store: CertificateStore, material: Material
) -> None:
    assert (
        authorize(session(store, material, "plain.example.com"), store, "plain.example.com") == b""
    )


def test_host_without_client_auth_gets_no_identity_headers(
    store: CertificateStore, material: Material
) -> None:
    """A certificate sent to a host that asks none (the listener asks every client) is verified
    but not passed on."""
    facts = session(store, material, "plain.example.com", material.client)
    assert facts.identity is not None
    assert authorize(facts, store, "plain.example.com") == b""


def test_require_without_certificate_is_400(store: CertificateStore, material: Material) -> None:
    result = authorize(session(store, material, "mtls.example.com"), store, "mtls.example.com")
    assert isinstance(result, ClientCertificateRequired)
    assert verdict(result) == (400, b"client_cert_required")


def test_require_with_certificate_passes_the_identity(
    store: CertificateStore, material: Material
) -> None:
    facts = session(store, material, "mtls.example.com", material.client)
    assert facts.identity is not None
    assert authorize(facts, store, "mtls.example.com") == facts.identity.header_lines


def test_request_mode(store: CertificateStore, material: Material) -> None:
    assert authorize(session(store, material, "req.example.com"), store, "req.example.com") == b""
    facts = session(store, material, "req.example.com", material.client)
    assert facts.identity is not None
    assert authorize(facts, store, "req.example.com") == facts.identity.header_lines


def test_empty_host_is_judged_by_the_sni_certificate(
    store: CertificateStore, material: Material
) -> None:
    assert verdict(authorize(session(store, material, "mtls.example.com"), store, "")) == (
        400,
        b"client_cert_required",
    )


@pytest.mark.parametrize(
    ("sni", "host", "expected"),
    [
        ("mtls.example.com", "plain.example.com", 421),  # mTLS passed; asks a host without it
        ("plain.example.com", "mtls.example.com", 421),  # skipped mTLS; asks the mTLS host
        ("mtls.example.com", "other.example.com", 421),  # two mTLS hosts, two CAs
        ("mtls.example.com", "unknown.example.net", 421),  # unknown: the default (no mTLS)
        (None, "mtls.example.com", 421),  # no SNI: the default certificate, not the mTLS one
        ("plain.example.com", "open.example.com", 200),  # neither has client_auth
        ("a.w.example.com", "b.w.example.com", 200),  # one wildcard certificate serves both
        ("mtls.example.com", "mtls.example.com", 200),
    ],
)
def test_host_and_sni_must_agree_where_client_auth_is_involved(
    store: CertificateStore, material: Material, sni: str | None, host: str, expected: int
) -> None:
    """RFC 9110 §15.5.20: 421 when the connection was not made for the requested host."""
    result = authorize(session(store, material, sni, material.client), store, host)
    if expected == 421:
        assert isinstance(result, MisdirectedRequest)
        assert verdict(result) == (421, b"misdirected_request")
    else:
        assert not isinstance(result, HttpError)


def test_allowed_subjects(store: CertificateStore, material: Material) -> None:
    allowed = session(store, material, "subj.example.com", material.allowed)
    assert allowed.identity is not None
    assert authorize(allowed, store, "subj.example.com") == allowed.identity.header_lines
    other = authorize(
        session(store, material, "subj.example.com", material.client), store, "subj.example.com"
    )
    assert isinstance(other, Forbidden)
    assert verdict(other) == (403, b"forbidden")
    assert material.client.subject in other.detail


def test_allowed_sans_match_any_kind_of_name(store: CertificateStore, material: Material) -> None:
    workload = session(store, material, "sans.example.com", material.workload)
    assert workload.identity is not None
    assert authorize(workload, store, "sans.example.com") == workload.identity.header_lines
    other = authorize(
        session(store, material, "sans.example.com", material.client), store, "sans.example.com"
    )
    assert verdict(other) == (403, b"forbidden")


def test_a_certificate_from_another_ca_fails_the_handshake(
    store: CertificateStore, material: Material
) -> None:
    context = client_context(material.root, cert=material.other_ca_client)
    with pytest.raises(ssl.SSLError) as caught:
        memory_handshake(store.base, context, "mtls.example.com")
    assert caught.value.reason == "TLSV1_ALERT_UNKNOWN_CA"
    # The host whose CA issued it accepts it.
    facts = session(store, material, "other.example.com", material.other_ca_client)
    assert facts.identity is not None
    assert authorize(facts, store, "other.example.com") == facts.identity.header_lines


def test_a_session_resumed_under_another_name_is_checked_again(
    store: CertificateStore, material: Material
) -> None:
    """OpenSSL resumes a TLS 1.3 session under another SNI name without verifying the client
    certificate again: one verified for mtls.example.com (CA "clients") must not open
    other.example.com (CA "others")."""
    context = client_context(material.root, cert=material.client)
    _, first = memory_handshake(store.base, context, "mtls.example.com")
    assert first.session is not None
    server, client = memory_handshake(store.base, context, "other.example.com", first.session)
    resumed = TlsSession(server, store)
    assert resumed.resumed and client.session_reused
    assert resumed.served is store.select("other.example.com")
    result = authorize(resumed, store, "other.example.com")
    assert isinstance(result, ClientCertificateRejected)
    assert verdict(result) == (400, b"client_cert_rejected")
    # Resumed for a host of the same CA, it is accepted.
    server, _ = memory_handshake(store.base, context, "mtls.example.com", first.session)
    again = TlsSession(server, store)
    assert again.resumed and again.identity is not None
    assert authorize(again, store, "mtls.example.com") == again.identity.header_lines


def _intermediate_store(
    material: Material, with_intermediate: bool
) -> tuple[CertificateStore, Issued]:
    """A store whose mTLS host trusts the "clients" root; its client's certificate is issued by
    an intermediate (sent by the client in a full handshake, not kept in a resumed session)."""
    folder = material.clients.folder / ("with" if with_intermediate else "without")
    intermediate = material.clients.ca.create_child_ca()
    client = Pki(folder, ca=material.clients.ca).issue(
        "deep.example.org", ca=intermediate, file="deep"
    )
    ca_file = folder / "client-cas.pem"
    ca_file.write_bytes(
        material.clients.ca_file.read_bytes()
        + (intermediate.cert_pem.bytes() if with_intermediate else b"")
    )
    server = material.root.issue("deep.example.com", file="deep-server")
    policy = ListenerTlsConfig.model_validate(
        {"certificates": [{**server.files(), "client_auth": {"ca_file": str(ca_file)}}]}
    )
    return CertificateStore("deep", policy, AcmeConfig()), client


def test_a_resumed_session_of_an_intermediate_issued_client_is_accepted(
    material: Material,
) -> None:
    store, client = _intermediate_store(material, with_intermediate=False)
    context = client_context(material.root, cert=client)
    first_server, first = memory_handshake(store.base, context, "deep.example.com")
    full = TlsSession(first_server, store)
    assert full.identity is not None
    assert authorize(full, store, "deep.example.com") == full.identity.header_lines
    server, _ = memory_handshake(store.base, context, "deep.example.com", first.session)
    resumed = TlsSession(server, store)
    assert resumed.resumed
    assert not isinstance(authorize(resumed, store, "deep.example.com"), HttpError)


def test_with_the_intermediate_in_ca_file_a_resumed_session_is_accepted(
    material: Material,
) -> None:
    """A resumed session whose full handshake this store did not see (another worker's, or before
    a restart) is accepted when the issuing intermediate is in ca_file."""
    store, client = _intermediate_store(material, with_intermediate=True)
    context = client_context(material.root, cert=client)
    _, first = memory_handshake(store.base, context, "deep.example.com")
    server, _ = memory_handshake(store.base, context, "deep.example.com", first.session)
    resumed = TlsSession(server, store)
    assert resumed.resumed and resumed.identity is not None
    assert authorize(resumed, store, "deep.example.com") == resumed.identity.header_lines
