"""TLS termination end to end, with real TLS clients over loopback: Python's ``ssl``, ``openssl
s_client`` and ``curl``.

What is checked is what the client received (the certificate's names and fingerprint, the
negotiated protocol, version and cipher), what the backend received (forwarded and identity
headers), and what the gateway counted. Certificate rotation and bad material on reload change
real files under a running gateway.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.e2e.gateway import GatewayThread
from tests.support.backends import Backend
from tests.support.client import recv_head, request
from tests.support.pattern import pattern_sha256
from tests.support.responses import parse_head
from tests.support.tls import (
    Issued,
    Pki,
    client_context,
    curl,
    dns_names,
    fingerprint,
    https_request,
    key_pem,
    peer_certificate,
    replace_file,
    s_client,
    served_certificate,
    tls_connect,
)

T = TypeVar("T")

IDENTITY_HEADERS = (
    "x-client-cert",
    "x-client-cert-subject",
    "x-client-cert-san",
    "x-client-cert-fingerprint",
)
TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3
HSTS = {"max_age": 600, "include_subdomains": True}


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 10.0) -> T:
    """``probe()`` until it returns something truthy, polling every 20 ms up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what} (last: {value!r})")
        time.sleep(0.02)


def handshakes(gw: GatewayThread, listener: str) -> dict[str, int]:
    """WorkerStats.tls_handshakes of one listener, by result."""
    counts: dict[tuple[str, str], int] = gw.call(lambda: dict(gw.gateway.ctx.stats.tls_handshakes))
    return {result: n for (name, result), n in counts.items() if name == listener}


def reloads(gw: GatewayThread, listener: str) -> dict[str, int]:
    """WorkerStats.certificate_reloads of one listener, by outcome ("ok" / "failed")."""
    counts: dict[tuple[str, str], int] = gw.call(
        lambda: dict(gw.gateway.ctx.stats.certificate_reloads)
    )
    return {result: n for (name, result), n in counts.items() if name == listener}


def closed_without_answer(sock: socket.socket) -> bool:
    """The server closed (or reset) ``sock`` without sending anything."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def port_of(gw: GatewayThread, index: int) -> int:
    return gw.gateway.addresses[index][1]


# -- material and the shared gateway ---------------------------------------------------------------


@dataclass
class Material:
    root: Pki  # issues the server certificates; the only CA clients trust
    clients: Pki  # issues client certificates for the mTLS hosts
    others: Pki  # a CA no host trusts for clients
    www: Issued
    wild: Issued
    fallback: Issued  # the listener's default_certificate (not its first one)
    chained: Issued  # issued by an intermediate of root; the file holds leaf + intermediate
    mtls: Issued
    req: Issued
    subj: Issued
    sans: Issued
    client: Issued
    good: Issued  # the client allowed_subjects / allowed_sans name
    stranger: Issued  # a client certificate from ``others``
    expired_client: Issued


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    folder = tmp_path_factory.mktemp("tls")
    root = Pki(folder)
    clients = Pki(folder, name="clients-ca")
    others = Pki(folder, name="others-ca")
    return Material(
        root=root,
        clients=clients,
        others=others,
        www=root.issue("www.example.com"),
        wild=root.issue("*.w.example.com"),
        fallback=root.issue("default.example.com"),
        chained=root.issue("chain.example.com", ca=root.ca.create_child_ca()),
        mtls=root.issue("mtls.example.com"),
        req=root.issue("req.example.com"),
        subj=root.issue("subj.example.com"),
        sans=root.issue("sans.example.com"),
        client=clients.issue("client.example.org", file="client"),
        good=clients.issue("good.client.example", file="good", common_name="good"),
        stranger=others.issue("client.example.org", file="stranger"),
        expired_client=clients.expired("client.example.org", file="expired-client"),
    )


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    with Backend() as started:
        yield started


@pytest.fixture(scope="module")
def gateway(material: Material, backend: Backend) -> Iterator[GatewayThread]:
    """Listener 0 ``https``: SNI, mTLS and HSTS; 1 ``strict``: TLS 1.3 only, unknown names
    rejected; 2 ``ciphers``: one TLS 1.2 cipher; 3 ``plain``: plain HTTP; 4 ``no-tickets``:
    session_tickets off."""
    m = material
    clients = str(m.clients.ca_file)
    https = {
        "address": "127.0.0.1:0",
        "name": "https",
        "tls": {
            "certificates": [
                m.www.files(),
                m.wild.files(),
                m.fallback.files(),
                m.chained.files(),
                {**m.mtls.files(), "client_auth": {"ca_file": clients}},
                {**m.req.files(), "client_auth": {"ca_file": clients, "mode": "request"}},
                {
                    **m.subj.files(),
                    "client_auth": {"ca_file": clients, "allowed_subjects": [m.good.subject]},
                },
                {
                    **m.sans.files(combined=True),
                    "client_auth": {"ca_file": clients, "allowed_sans": ["good.client.example"]},
                },
            ],
            "default_certificate": "default.example.com",
            "hsts": HSTS,
        },
    }
    strict = {
        "address": "127.0.0.1:0",
        "name": "strict",
        "tls": {"certificates": [m.www.files()], "unknown_sni": "reject", "min_version": "1.3"},
    }
    ciphers = {
        "address": "127.0.0.1:0",
        "name": "ciphers",
        "tls": {"certificates": [m.www.files()], "ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256"},
    }
    no_tickets = {
        "address": "127.0.0.1:0",
        "name": "no-tickets",
        "tls": {"certificates": [m.www.files()], "session_tickets": False},
    }
    config = {
        "listeners": [
            https,
            strict,
            ciphers,
            {"address": "127.0.0.1:0", "name": "plain"},
            no_tickets,
        ],
        "services": {"s": {"instances": [backend.address]}},
        "routes": [{"service": "s"}],
    }
    with GatewayThread(config) as gw:
        yield gw


# -- SNI -------------------------------------------------------------------------------------------


def test_exact_name(gateway: GatewayThread, material: Material) -> None:
    """RFC 6066 §3: the certificate is chosen by the server_name the client sent."""
    response = https_request(
        gateway.port, sni="www.example.com", context=client_context(material.root)
    )
    assert response.status == 200
    assert fingerprint(response.peer) == material.www.fingerprint
    assert dns_names(response.peer) == ["www.example.com"]
    assert response.upstream_headers()["host"] == "www.example.com"


def test_wildcard_covers_exactly_one_label(gateway: GatewayThread, material: Material) -> None:
    """RFC 6125 §6.4.3: ``*.w.example.com`` serves a.w.example.com, not a.b.w.example.com."""
    context = client_context(material.root, check_hostname=False)
    one = served_certificate(gateway.port, "a.w.example.com", context)
    assert fingerprint(one) == material.wild.fingerprint
    assert dns_names(one) == ["*.w.example.com"]
    two = served_certificate(gateway.port, "a.b.w.example.com", context)
    assert fingerprint(two) == material.fallback.fingerprint  # not covered: the default


def test_the_wildcard_certificate_verifies_at_a_strict_client(
    gateway: GatewayThread, material: Material
) -> None:
    response = https_request(
        gateway.port, sni="api.w.example.com", context=client_context(material.root)
    )
    assert response.status == 200
    assert fingerprint(response.peer) == material.wild.fingerprint


@pytest.mark.parametrize("sni", [None, "unknown.example.org"])
def test_default_certificate_for_no_sni_and_unknown_names(
    gateway: GatewayThread, material: Material, sni: str | None
) -> None:
    """``default_certificate`` names the third certificate: it answers instead of the first."""
    context = client_context(material.root, check_hostname=False)
    response = https_request(gateway.port, sni=sni, host="www.example.com", context=context)
    assert response.status == 200
    assert fingerprint(response.peer) == material.fallback.fingerprint


def test_unknown_sni_reject_fails_the_handshake(gateway: GatewayThread, material: Material) -> None:
    port = port_of(gateway, 1)
    before = handshakes(gateway, "strict").get("unrecognized_name", 0)
    with pytest.raises(ssl.SSLError):
        served_certificate(port, "unknown.example.org", client_context(material.root))
    eventually(
        lambda: handshakes(gateway, "strict").get("unrecognized_name", 0) == before + 1,
        "the rejected handshake counted as unrecognized_name",
    )
    # A name the listener serves, and a client without SNI, still get the certificate.
    assert served_certificate(port, "www.example.com", client_context(material.root)) == (
        material.www.certificate
    )
    assert (
        served_certificate(port, None, client_context(material.root, check_hostname=False))
        == material.www.certificate
    )


@pytest.mark.xfail(
    strict=True,
    reason="the handshake's alert is never written to the socket: uvloop's SSLProtocol closes "
    "the transport on a failed handshake without flushing its outgoing buffer, so clients see "
    "an unexpected EOF instead of the unrecognized_name alert",
)
def test_unknown_sni_reject_sends_the_unrecognized_name_alert(
    gateway: GatewayThread, material: Material
) -> None:
    """RFC 6066 §3: a server that does not recognize the name MAY abort the handshake with an
    unrecognized_name(112) alert: the client should learn why."""
    with pytest.raises(ssl.SSLError) as caught:
        served_certificate(
            port_of(gateway, 1), "unknown.example.org", client_context(material.root)
        )
    assert caught.value.reason == "TLSV1_UNRECOGNIZED_NAME"


@pytest.mark.parametrize(
    ("servername", "expected"),
    [
        ("www.example.com", "www"),
        ("x.w.example.com", "wild"),
        ("a.b.w.example.com", "fallback"),
        ("nope.example.net", "fallback"),
        (None, "fallback"),
    ],
)
def test_openssl_s_client_sni_selection(
    gateway: GatewayThread, material: Material, servername: str | None, expected: str
) -> None:
    """RFC 6066 §3, seen by ``openssl s_client -servername``."""
    result = s_client(gateway.port, servername, ca_file=material.root.ca_file)
    assert result.returncode == 0, result.output
    issued: Issued = getattr(material, expected)
    assert fingerprint(result.certificates[0]) == issued.fingerprint, result.output
    assert result.verify_code == "0 (ok)"  # the chain verifies (the name is not checked here)


def test_full_chain_is_served(gateway: GatewayThread, material: Material) -> None:
    """A leaf issued by an intermediate verifies at a client that trusts only the root: the
    intermediate travels in the handshake."""
    response = https_request(
        gateway.port, sni="chain.example.com", context=client_context(material.root)
    )
    assert response.status == 200
    assert fingerprint(response.peer) == material.chained.fingerprint
    result = s_client(gateway.port, "chain.example.com", ca_file=material.root.ca_file)
    assert result.verify_code == "0 (ok)", result.output
    sent = [fingerprint(c) for c in result.certificates]
    chain = [
        x509.load_pem_x509_certificate(b.bytes()) for b in material.chained.leaf.cert_chain_pems
    ]
    assert sent == [fingerprint(c) for c in chain]  # leaf, then the intermediate
    assert len(sent) == 2


# -- ALPN, versions, ciphers -----------------------------------------------------------------------


def test_alpn_picks_http11(gateway: GatewayThread, material: Material) -> None:
    """RFC 7301 §3.2: the server selects one of the client's protocols that it serves."""
    context = client_context(material.root, alpn=["h2", "http/1.1"])
    response = https_request(gateway.port, sni="www.example.com", context=context)
    assert response.alpn == "http/1.1"
    assert response.status == 200


def test_alpn_with_openssl_s_client(gateway: GatewayThread, material: Material) -> None:
    result = s_client(
        gateway.port, "www.example.com", ca_file=material.root.ca_file, alpn=["h2", "http/1.1"]
    )
    assert result.returncode == 0, result.output
    assert result.alpn == "http/1.1", result.output
    assert result.protocol == "TLSv1.3"


def test_min_version_13_refuses_a_tls12_client(gateway: GatewayThread, material: Material) -> None:
    port = port_of(gateway, 1)
    with pytest.raises(ssl.SSLError):
        served_certificate(
            port, "www.example.com", client_context(material.root, max_version=TLS12)
        )
    response = https_request(port, sni="www.example.com", context=client_context(material.root))
    assert response.version == "TLSv1.3"
    assert response.status == 200


def test_cipher_list_restricts_tls12(gateway: GatewayThread, material: Material) -> None:
    """``ciphers: ECDHE-ECDSA-AES128-GCM-SHA256``: a TLS 1.2 client offering only another cipher
    fails; one offering it gets it; TLS 1.3 suites are not governed by the list."""
    port = port_of(gateway, 2)
    other = client_context(
        material.root, max_version=TLS12, ciphers="ECDHE-ECDSA-AES256-GCM-SHA384"
    )
    with pytest.raises(ssl.SSLError):
        served_certificate(port, "www.example.com", other)
    offered = client_context(
        material.root,
        max_version=TLS12,
        ciphers="ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256",
    )
    response = https_request(port, sni="www.example.com", context=offered)
    assert (response.version, response.cipher) == ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")
    assert response.status == 200
    tls13 = https_request(port, sni="www.example.com", context=client_context(material.root))
    assert tls13.version == "TLSv1.3"
    assert eventually(lambda: handshakes(gateway, "ciphers").get("no_shared_cipher"), "counted")


# -- a whole HTTPS request with curl ---------------------------------------------------------------


def test_curl_https_request(
    gateway: GatewayThread, material: Material, backend: Backend, tmp_path: Path
) -> None:
    """HSTS (RFC 6797 §6.1) on the response, ``x-forwarded-proto: https`` at the backend."""
    port = gateway.port
    result = curl(
        f"https://www.example.com:{port}/echo?q=1",
        resolve=f"www.example.com:{port}:127.0.0.1",
        ca_file=material.root.ca_file,
        folder=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.status == 200
    assert result.header("strict-transport-security") == "max-age=600; includeSubDomains"
    echoed = json.loads(result.body)
    assert echoed["target"] == "/echo?q=1"
    assert echoed["headers"]["x-forwarded-proto"] == "https"
    assert echoed["headers"]["x-forwarded-host"] == f"www.example.com:{port}"
    assert "proto=https" in echoed["headers"]["forwarded"]
    assert not set(IDENTITY_HEADERS) & set(echoed["headers"])


def test_curl_with_a_client_certificate(
    gateway: GatewayThread, material: Material, tmp_path: Path
) -> None:
    port = gateway.port
    result = curl(
        f"https://mtls.example.com:{port}/echo",
        resolve=f"mtls.example.com:{port}:127.0.0.1",
        ca_file=material.root.ca_file,
        folder=tmp_path,
        extra=["--cert", str(material.client.cert_file), "--key", str(material.client.key_file)],
    )
    assert (result.returncode, result.status) == (0, 200), result.stderr
    headers = json.loads(result.body)["headers"]
    assert headers["x-client-cert-fingerprint"] == material.client.fingerprint


def test_no_hsts_on_plain_http(gateway: GatewayThread) -> None:
    response = request(port_of(gateway, 3), "GET", "/echo", host="www.example.com")
    assert response.status == 200
    assert response.header("strict-transport-security") is None
    assert response.json()["headers"]["x-forwarded-proto"] == "http"


# -- mTLS ------------------------------------------------------------------------------------------


def test_require_without_a_certificate_is_400(
    gateway: GatewayThread, material: Material, backend: Backend
) -> None:
    backend.clear_requests()
    response = https_request(
        gateway.port, sni="mtls.example.com", context=client_context(material.root)
    )
    assert response.status == 400
    assert response.header("portway-error") == "client_cert_required"
    assert backend.requests == []


def test_require_with_a_certificate_passes_the_identity(
    gateway: GatewayThread, material: Material
) -> None:
    context = client_context(material.root, cert=material.client)
    response = https_request(gateway.port, sni="mtls.example.com", context=context)
    assert response.status == 200
    headers = response.upstream_headers()
    leaf = material.client.certificate
    assert unquote(headers["x-client-cert-subject"]) == leaf.subject.rfc4514_string()
    assert unquote(headers["x-client-cert-san"]) == "DNS:client.example.org"
    assert (
        headers["x-client-cert-fingerprint"]
        == hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest()
    )
    pem = unquote(headers["x-client-cert"])
    assert pem == material.client.pem
    assert x509.load_pem_x509_certificate(pem.encode()) == leaf


@pytest.mark.parametrize("max_version", [TLS12, TLS13], ids=["tls1.2", "tls1.3"])
@pytest.mark.parametrize("client", ["stranger", "expired_client"])
def test_an_unverifiable_client_certificate_fails_the_handshake(
    gateway: GatewayThread,
    material: Material,
    backend: Backend,
    client: str,
    max_version: ssl.TLSVersion,
) -> None:
    """A certificate from a CA the host does not trust, or an expired one: no HTTP at all. (In
    TLS 1.3 the client has finished its side when the server refuses, so the failure surfaces at
    the first read.)"""
    backend.clear_requests()
    before = handshakes(gateway, "https").get("client_certificate_invalid", 0)
    context = client_context(material.root, cert=getattr(material, client), max_version=max_version)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_request(gateway.port, sni="mtls.example.com", context=context)
    eventually(
        lambda: handshakes(gateway, "https").get("client_certificate_invalid", 0) == before + 1,
        "counted as client_certificate_invalid",
    )
    assert backend.requests == []


def test_allowed_subjects(gateway: GatewayThread, material: Material) -> None:
    allowed = client_context(material.root, cert=material.good)
    response = https_request(gateway.port, sni="subj.example.com", context=allowed)
    assert response.status == 200
    assert unquote(response.upstream_headers()["x-client-cert-subject"]) == material.good.subject
    other = client_context(material.root, cert=material.client)
    refused = https_request(gateway.port, sni="subj.example.com", context=other)
    assert refused.status == 403
    assert refused.header("portway-error") == "forbidden"


def test_allowed_sans(gateway: GatewayThread, material: Material) -> None:
    allowed = client_context(material.root, cert=material.good)
    response = https_request(gateway.port, sni="sans.example.com", context=allowed)
    assert response.status == 200
    assert unquote(response.upstream_headers()["x-client-cert-san"]) == "DNS:good.client.example"
    other = client_context(material.root, cert=material.client)
    refused = https_request(gateway.port, sni="sans.example.com", context=other)
    assert refused.status == 403


def test_request_mode(gateway: GatewayThread, material: Material) -> None:
    anonymous = https_request(
        gateway.port, sni="req.example.com", context=client_context(material.root)
    )
    assert anonymous.status == 200
    assert not set(IDENTITY_HEADERS) & set(anonymous.upstream_headers())
    identified = https_request(
        gateway.port,
        sni="req.example.com",
        context=client_context(material.root, cert=material.client),
    )
    assert identified.status == 200
    assert identified.upstream_headers()["x-client-cert-fingerprint"] == material.client.fingerprint


def test_a_trusted_certificate_sent_to_a_host_without_client_auth_is_ignored(
    gateway: GatewayThread, material: Material
) -> None:
    """The listener asks every client for a certificate (some of its hosts need one); a host
    without client_auth serves the request and passes no identity on."""
    context = client_context(material.root, cert=material.client)
    response = https_request(gateway.port, sni="www.example.com", context=context)
    assert response.status == 200
    assert not set(IDENTITY_HEADERS) & set(response.upstream_headers())


FORGED = [
    ("X-Client-Cert", "-----BEGIN%20CERTIFICATE-----forged"),
    ("x-client-cert-subject", "CN=admin"),
    ("X-CLIENT-CERT-SAN", "DNS:admin.example.com"),
    ("x-client-cert-fingerprint", "00" * 32),
]


def test_forged_identity_headers_never_reach_the_backend_over_plain_http(
    gateway: GatewayThread,
) -> None:
    response = request(port_of(gateway, 3), "GET", "/echo", host="www.example.com", headers=FORGED)
    assert response.status == 200
    assert not set(IDENTITY_HEADERS) & set(response.json()["headers"])


@pytest.mark.parametrize("sni", ["www.example.com", "req.example.com"])
def test_forged_identity_headers_never_reach_the_backend_over_https(
    gateway: GatewayThread, material: Material, sni: str
) -> None:
    """On a host without client_auth, and on a request-mode host reached without a certificate."""
    response = https_request(
        gateway.port, sni=sni, headers=FORGED, context=client_context(material.root)
    )
    assert response.status == 200
    assert not set(IDENTITY_HEADERS) & set(response.upstream_headers())


def test_forged_identity_headers_do_not_mix_with_the_real_ones(
    gateway: GatewayThread, material: Material
) -> None:
    context = client_context(material.root, cert=material.client)
    response = https_request(gateway.port, sni="mtls.example.com", headers=FORGED, context=context)
    headers = response.upstream_headers()
    assert headers["x-client-cert-subject"] == material.client.subject  # one value: the real one
    assert headers["x-client-cert-fingerprint"] == material.client.fingerprint
    assert unquote(headers["x-client-cert-san"]) == "DNS:client.example.org"
    assert unquote(headers["x-client-cert"]) == material.client.pem


@pytest.mark.parametrize(
    ("sni", "host"),
    [("mtls.example.com", "www.example.com"), ("www.example.com", "mtls.example.com")],
)
def test_host_other_than_the_sni_host_is_421(
    gateway: GatewayThread, material: Material, backend: Backend, sni: str, host: str
) -> None:
    """RFC 9110 §15.5.20: 421 Misdirected Request when the connection (made for the SNI name)
    is not one the requested host may be served on: here one of them requires mTLS."""
    backend.clear_requests()
    context = client_context(material.root, cert=material.client)
    response = https_request(gateway.port, sni=sni, host=host, context=context)
    assert response.status == 421
    assert response.header("portway-error") == "misdirected_request"
    assert backend.requests == []


def test_host_other_than_the_sni_host_without_mtls_is_served(
    gateway: GatewayThread, material: Material
) -> None:
    response = https_request(
        gateway.port,
        sni="www.example.com",
        host="x.w.example.com",
        context=client_context(material.root),
    )
    assert response.status == 200


# -- session resumption ----------------------------------------------------------------------------


@pytest.mark.parametrize("max_version", [TLS12, TLS13], ids=["tls1.2", "tls1.3"])
def test_session_resumption(
    gateway: GatewayThread, material: Material, max_version: ssl.TLSVersion
) -> None:
    """RFC 8446 §2.2 / RFC 5077: a ticket from the first connection resumes the second, which
    still gets the certificate of its name."""
    context = client_context(material.root, max_version=max_version)
    first = https_request(gateway.port, sni="www.example.com", context=context)
    assert not first.resumed and first.session is not None
    second = https_request(
        gateway.port, sni="www.example.com", context=context, session=first.session
    )
    assert second.resumed
    assert second.status == 200
    assert fingerprint(second.peer) == material.www.fingerprint


def test_a_resumed_mtls_session_keeps_its_identity(
    gateway: GatewayThread, material: Material
) -> None:
    context = client_context(material.root, cert=material.client)
    first = https_request(gateway.port, sni="mtls.example.com", context=context)
    assert first.status == 200
    second = https_request(
        gateway.port, sni="mtls.example.com", context=context, session=first.session
    )
    assert second.resumed
    assert second.status == 200
    assert second.upstream_headers()["x-client-cert-fingerprint"] == material.client.fingerprint


def test_session_tickets_off(gateway: GatewayThread, material: Material) -> None:
    port = port_of(gateway, 4)
    context = client_context(material.root)
    first = https_request(port, sni="www.example.com", context=context)
    second = https_request(port, sni="www.example.com", context=context, session=first.session)
    assert second.status == 200
    assert not second.resumed


# -- rotation and reloads --------------------------------------------------------------------------


@pytest.fixture
def rotating(
    material: Material, backend: Backend, tmp_path: Path
) -> Iterator[tuple[GatewayThread, Path]]:
    """A gateway serving rot.example.com from one file holding key and chain (replaced with one
    atomic rename), reloaded every 0.2 s."""
    served = tmp_path / "rot.pem"
    first = Pki(tmp_path / "first", ca=material.root.ca).issue("rot.example.com")
    served.write_bytes(first.pem_file.read_bytes())
    config = {
        "listeners": [
            {
                "address": "127.0.0.1:0",
                "name": "rot",
                "tls": {
                    "certificates": [{"cert_file": str(served), "key_file": str(served)}],
                    "reload_interval": 0.2,
                },
            }
        ],
        "services": {"s": {"instances": [backend.address]}},
        "routes": [{"service": "s"}],
    }
    with GatewayThread(config) as gw:
        yield gw, served


def _serving(gw: GatewayThread, material: Material, wanted: str) -> Callable[[], bool]:
    context = client_context(material.root)
    return lambda: fingerprint(served_certificate(gw.port, "rot.example.com", context)) == wanted


DOWNLOAD = 200 * 1000 * 1000


@pytest.mark.timeout(60)
def test_rotation_during_a_long_download(
    rotating: tuple[GatewayThread, Path], material: Material, tmp_path: Path
) -> None:
    """The download that started on the old certificate completes intact; new handshakes get
    the new certificate."""
    gw, served = rotating
    old = x509.load_pem_x509_certificates(served.read_bytes())[0]
    new = Pki(tmp_path / "new", ca=material.root.ca).issue("rot.example.com", file="new")
    with tls_connect(gw.port, "rot.example.com", client_context(material.root), timeout=20) as tls:
        assert peer_certificate(tls) == old
        tls.sendall(
            f"GET /stream?bytes={DOWNLOAD} HTTP/1.1\r\nHost: rot.example.com\r\n\r\n".encode()
        )
        head, body = recv_head(tls)
        response = parse_head(head + b"\r\n\r\n", "GET")
        assert response.status == 200
        assert response.header("content-length") == str(DOWNLOAD)
        digest = hashlib.sha256(body)
        count = len(body)
        while count < 4 << 20:  # a few MB in, then stop reading while the files change
            chunk = tls.recv(1 << 20)
            assert chunk, "closed early"
            digest.update(chunk)
            count += len(chunk)

        replace_file(served, new.pem_file.read_bytes())
        eventually(_serving(gw, material, new.fingerprint), "new handshakes get the new cert")
        assert reloads(gw, "rot") == {"ok": 1}

        buffer = bytearray(1 << 20)
        while count < DOWNLOAD:
            n = tls.recv_into(buffer)
            assert n, f"closed {count} bytes into the download"
            digest.update(memoryview(buffer)[:n])
            count += n
    assert count == DOWNLOAD
    assert digest.hexdigest() == pattern_sha256(DOWNLOAD)
    (described,) = gw.call(gw.gateway.certificates)
    assert described["fingerprint_sha256"] == new.fingerprint
    assert described["reload_error"] is None


@pytest.mark.parametrize("damage", ["garbage", "mismatched_key", "expired"])
def test_bad_material_keeps_the_old_certificate(
    rotating: tuple[GatewayThread, Path], material: Material, tmp_path: Path, damage: str
) -> None:
    gw, served = rotating
    good = served.read_bytes()
    chain = good[good.index(b"-----BEGIN CERTIFICATE-----") :]
    old = fingerprint(x509.load_pem_x509_certificates(chain)[0])
    other = Pki(tmp_path / "other", ca=material.root.ca)
    if damage == "garbage":
        replace_file(served, b"garbage, not PEM\n")
        reason = f"cert_file {served}: no PEM certificate in the file"
    elif damage == "mismatched_key":
        replace_file(served, key_pem() + chain)
        reason = f"key_file {served}: the key does not match the certificate in {served}"
    else:
        expired = other.expired("rot.example.com", file="expired")
        replace_file(served, expired.pem_file.read_bytes())
        reason = f"cert_file {served}: certificate {expired.subject!r} expired on 2020-12-31"

    def failure() -> str | None:
        error: str | None = gw.call(gw.gateway.certificates)[0]["reload_error"]
        return error

    error = eventually(failure, "the refused reload is reported")
    assert error.startswith(reason), error
    assert reloads(gw, "rot") == {"failed": 1}
    assert _serving(gw, material, old)()  # new handshakes still get the old certificate
    store = gw.gateway.listeners[0].store
    assert store is not None
    assert gw.call(lambda: dict(store.failures)) == {0: error}

    fixed = other.issue("rot.example.com", file="fixed")
    replace_file(served, fixed.pem_file.read_bytes())
    eventually(_serving(gw, material, fixed.fingerprint), "the fixed file is served")
    assert reloads(gw, "rot") == {"failed": 1, "ok": 1}
    assert gw.call(gw.gateway.certificates)[0]["reload_error"] is None


def test_reload_interval_sets_the_check_cadence(rotating: tuple[GatewayThread, Path]) -> None:
    gw, _ = rotating
    assert gw.gateway.sweeper.interval <= 0.2


# -- plain listeners: redirect and ACME challenges -------------------------------------------------


@pytest.fixture(scope="module")
def plain_gateway(
    backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayThread, Path]]:
    """Listener 0: plain, redirects example.com hosts to HTTPS on 8443; 1: plain, to port 443;
    2: HTTPS with an ACME certificate (not issued yet). ACME state in a temporary folder."""
    state = tmp_path_factory.mktemp("acme-state")
    config = {
        "listeners": [
            {
                "address": "127.0.0.1:0",
                "https_redirect": {"port": 8443, "hosts": ["example.com", "*.example.com"]},
            },
            {"address": "127.0.0.1:0", "https_redirect": {"status": 301}},
            {
                "address": "127.0.0.1:0",
                "tls": {"certificates": [{"acme": True, "hosts": ["acme.example.com"]}]},
            },
        ],
        "acme": {"state_dir": str(state), "directory_url": "https://127.0.0.1:9/directory"},
        "services": {"s": {"instances": [backend.address]}},
        "routes": [{"service": "s"}],
    }
    with GatewayThread(config) as gw:
        yield gw, state


@pytest.mark.parametrize(
    ("host", "target", "location"),
    [
        ("www.example.com", "/a/b?x=1&y=%20", "https://www.example.com:8443/a/b?x=1&y=%20"),
        ("example.com:8080", "/", "https://example.com:8443/"),
        ("API.Example.COM", "/p", "https://api.example.com:8443/p"),
    ],
)
def test_https_redirect(
    plain_gateway: tuple[GatewayThread, Path], host: str, target: str, location: str
) -> None:
    """308 Permanent Redirect (RFC 9110 §15.4.9) keeps the method and body."""
    gw, _ = plain_gateway
    response = request(gw.port, "POST", target, host=host, body=b"x")
    assert response.status == 308
    assert response.header("location") == location


def test_https_redirect_hosts_filter(plain_gateway: tuple[GatewayThread, Path]) -> None:
    gw, _ = plain_gateway
    for host in ("example.org", "a.b.example.com"):  # not listed; two labels under the wildcard
        response = request(gw.port, "GET", "/echo", host=host)
        assert response.status == 200, host
        assert response.json()["headers"]["host"] == host


def test_https_redirect_to_443_omits_the_port(plain_gateway: tuple[GatewayThread, Path]) -> None:
    gw, _ = plain_gateway
    response = request(port_of(gw, 1), "GET", "/x?y", host="anything.example.net")
    assert response.status == 301
    assert response.header("location") == "https://anything.example.net/x?y"


def test_acme_http01_challenge(plain_gateway: tuple[GatewayThread, Path]) -> None:
    """RFC 8555 §8.3: /.well-known/acme-challenge/TOKEN answers the key authorization, on a plain
    listener, before any redirect."""
    gw, state = plain_gateway
    token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
    key_authorization = f"{token}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
    (state / "challenges").mkdir(exist_ok=True)
    (state / "challenges" / token).write_text(key_authorization)
    for index in (0, 1):
        response = request(
            port_of(gw, index),
            "GET",
            f"/.well-known/acme-challenge/{token}",
            host="acme.example.com",
        )
        assert response.status == 200
        assert response.body == key_authorization.encode()
        assert response.header("content-type") == "application/octet-stream"


@pytest.mark.parametrize("token", ["missingtoken", "bad.token", "a%2Fb", ""])
def test_acme_challenge_unknown_or_bad_token_is_404(
    plain_gateway: tuple[GatewayThread, Path], token: str
) -> None:
    gw, state = plain_gateway
    (state / "challenges").mkdir(exist_ok=True)
    (state / "challenges" / "bad.token").write_text("must not be served")
    response = request(
        gw.port, "GET", f"/.well-known/acme-challenge/{token}", host="acme.example.com"
    )
    assert response.status == 404
    assert response.header("portway-error") == "no_acme_challenge"


def test_acme_host_is_served_a_placeholder_until_issued(
    plain_gateway: tuple[GatewayThread, Path],
) -> None:
    gw, _ = plain_gateway
    certificate = served_certificate(port_of(gw, 2), "acme.example.com")
    assert dns_names(certificate) == ["acme.example.com"]
    assert certificate.subject == certificate.issuer  # self-signed
    (described,) = gw.call(gw.gateway.certificates)
    assert described["source"] == "acme"


# -- handshake results, counted --------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_handshake_results_are_counted(material: Material, backend: Backend) -> None:
    config = {
        "listeners": [
            {
                "address": "127.0.0.1:0",
                "name": "counted",
                "tls": {
                    "certificates": [
                        {
                            **material.mtls.files(),
                            "client_auth": {"ca_file": str(material.clients.ca_file)},
                        }
                    ],
                    "min_version": "1.3",
                    "handshake_timeout": 0.3,
                },
            }
        ],
        "services": {"s": {"instances": [backend.address]}},
        "routes": [{"service": "s"}],
    }
    with GatewayThread(config) as gw:
        # ok
        https_request(
            gw.port,
            sni="mtls.example.com",
            context=client_context(material.root, cert=material.client),
        )
        # not_tls: plain HTTP sent to the TLS port
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: mtls.example.com\r\n\r\n")
            assert closed_without_answer(raw)
        # protocol_version: a TLS 1.2 client
        with pytest.raises(ssl.SSLError):
            served_certificate(
                gw.port, "mtls.example.com", client_context(material.root, max_version=TLS12)
            )
        # client_certificate_invalid: a client certificate from an untrusted CA
        with pytest.raises((ssl.SSLError, ConnectionError)):
            https_request(
                gw.port,
                sni="mtls.example.com",
                context=client_context(material.root, cert=material.stranger),
            )
        # timeout: connects and sends nothing; dropped after handshake_timeout
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as raw:
            started = time.monotonic()
            assert closed_without_answer(raw)
            assert 0.2 < time.monotonic() - started < 3
        expected = {
            "ok": 1,
            "not_tls": 1,
            "protocol_version": 1,
            "client_certificate_invalid": 1,
            "timeout": 1,
        }
        eventually(lambda: handshakes(gw, "counted") == expected, f"counted as {expected}")


# -- portway validate --------------------------------------------------------------------------------


def test_validate_reports_an_expired_certificate(material: Material, tmp_path: Path) -> None:
    old = Pki(tmp_path, ca=material.root.ca).expired("old.example.com", file="old")
    config = tmp_path / "portway.yaml"
    config.write_text(
        "listeners:\n"
        '  - address: "127.0.0.1:8443"\n'
        "    tls:\n"
        "      certificates:\n"
        "        - {cert_file: old.crt, key_file: old.key}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "portway", "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout
    assert done.stdout == ""
    assert (
        f"{config}:5:12: listeners[0].tls.certificates[0].cert_file: cert_file "
        f"{old.cert_file}: certificate {old.subject!r} expired on 2020-12-31 00:00:00 UTC"
    ) in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
