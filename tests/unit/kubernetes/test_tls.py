"""``spec.tls``: Secrets become SNI certificates, TLS hosts redirect to HTTPS (Ingress docs,
"TLS"; ingress-nginx "Server-side HTTPS enforcement through redirect"), and bad or missing
material disables only the TLS entry. Certificates are real, from a throwaway ``trustme`` CA.
"""

from __future__ import annotations

import socket
import ssl
import stat
from pathlib import Path

import pytest
import trustme

from portway.kubernetes import ManifestController, Options
from tests.e2e.gateway import GatewayThread
from tests.support.backends import Backend
from tests.support.client import request
from tests.support.processes import free_port
from tests.support.responses import ResponseReader
from tests.unit.kubernetes.manifests import (
    backend_service,
    build,
    ingress,
    issues_about,
    path,
    pick,
    rule,
    tls_secret,
    write,
)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def secret_for(ca: trustme.CA, name: str, *hosts: str) -> dict[str, object]:
    leaf = ca.issue_cert(*hosts)
    return tls_secret(name, leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes())


def shop(tls_secret_name: str = "shop-tls", created: str | None = None) -> dict[str, object]:
    tls = [{"hosts": ["shop.example.com"], "secretName": tls_secret_name}]
    return ingress("shop", rule("shop.example.com", path("/", "web")), tls=tls, created=created)


def test_secrets_become_sni_certificates_and_tls_hosts_redirect(
    tmp_path: Path, ca: trustme.CA
) -> None:
    https = free_port()
    with Backend("web") as web:
        folder = write(
            tmp_path / "m",
            secret_for(ca, "shop-tls", "shop.example.com"),
            secret_for(ca, "wild-tls", "*.apps.example.com"),
            shop(),
            ingress("apps", rule("*.apps.example.com", path("/", "apps")),
                    tls=[{"secretName": "wild-tls"}]),  # no hosts: the certificate's own names
            ingress("plain", rule("plain.example.com", path("/", "web"))),
            *backend_service("web", port=web.port),
        )  # fmt: skip
        config, report = build(folder, listen=("127.0.0.1:0",), listen_tls=f"127.0.0.1:{https}")
        assert [i.message for i in report.issues] == [
            "Service default/apps not found: requests answer 503"
        ]
        plain, secure = config.listeners
        assert secure.tls is not None
        assert [c.hosts for c in secure.tls.certificates] == [
            ["portway-fallback.invalid"],
            ["*.apps.example.com"],
            ["shop.example.com"],
        ]
        for certificate in secure.tls.certificates[1:]:
            assert certificate.cert_file is not None and certificate.key_file is not None
            assert stat.S_IMODE(Path(certificate.key_file).stat().st_mode) == 0o600
        assert plain.https_redirect is not None
        assert plain.https_redirect.hosts == ["*.apps.example.com", "shop.example.com"]
        assert plain.https_redirect.port == https
        with GatewayThread(config) as gateway:
            context = ssl.create_default_context()
            ca.configure_trust(context)
            with socket.create_connection(("127.0.0.1", https), timeout=5) as raw, \
                    context.wrap_socket(raw, server_hostname="shop.example.com") as tls:  # fmt: skip
                peer = tls.getpeercert()
                assert peer is not None
                names = [entry[1] for entry in peer["subjectAltName"] if entry[0] == "DNS"]
                assert names == ["shop.example.com"]
                tls.sendall(
                    b"GET /hi HTTP/1.1\r\nhost: shop.example.com\r\nconnection: close\r\n\r\n"
                )
                response = ResponseReader(lambda: tls.recv(65536)).read("GET")
            assert response.status == 200
            assert response.json()["backend"] == "web"
            redirected = request(gateway.port, "GET", "/a?b=1", host="shop.example.com")
            assert redirected.status == 308
            assert redirected.header("location") == f"https://shop.example.com:{https}/a?b=1"
            assert request(gateway.port, "GET", "/", host="plain.example.com").status == 200


@pytest.mark.parametrize(
    ("annotations", "redirected"),
    [
        ({"nginx.ingress.kubernetes.io/ssl-redirect": "false"}, []),
        ({"portway.io/ssl-redirect": "false"}, []),
        ({"nginx.ingress.kubernetes.io/force-ssl-redirect": "true"}, ["shop.example.com",
                                                                      "other.example.com"]),
    ],
)  # fmt: skip
def test_redirect_annotations(
    tmp_path: Path, ca: trustme.CA, annotations: dict[str, str], redirected: list[str]
) -> None:
    tls = [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}]
    folder = write(
        tmp_path / "m",
        secret_for(ca, "shop-tls", "shop.example.com"),
        ingress("shop", rule("shop.example.com", path("/", "web")),
                rule("other.example.com", path("/", "web")), tls=tls, annotations=annotations),
    )  # fmt: skip
    config, _ = build(folder, listen_tls="127.0.0.1:8443")
    redirect = config.listeners[0].https_redirect
    assert (redirect.hosts if redirect is not None else []) == redirected


def test_bad_or_missing_secrets_disable_only_the_tls_entry(tmp_path: Path, ca: trustme.CA) -> None:
    garbage = tls_secret("garbage-tls", b"not a certificate", b"nor a key")
    folder = write(
        tmp_path / "m",
        garbage,
        secret_for(ca, "other-tls", "other.example.com"),
        shop("garbage-tls"),
        ingress("missing", rule("missing.example.com", path("/", "web")),
                tls=[{"hosts": ["missing.example.com"], "secretName": "nope"}]),
        ingress("uncovered", rule("x.example.com", path("/", "web")),
                tls=[{"hosts": ["x.example.com"], "secretName": "other-tls"}]),
    )  # fmt: skip
    config, report = build(folder, listen_tls="127.0.0.1:8443")
    [bad] = issues_about(report, "data", kind="Secret")
    assert bad.name == "default/garbage-tls" and "tls.crt" in bad.message
    [entry] = issues_about(report, "spec.tls[0].secretName", name="default/shop")
    assert entry.severity == "error" and "no usable certificate" in entry.message
    [missing] = issues_about(report, "spec.tls[0].secretName", name="default/missing")
    assert missing.message == (
        "Secret default/nope not found: these hosts are not served over HTTPS"
    )
    [uncovered] = issues_about(report, "spec.tls[0].hosts[0]", name="default/uncovered")
    assert "does not cover x.example.com" in uncovered.message
    tls = config.listeners[1].tls
    assert tls is not None and [c.hosts for c in tls.certificates] == [["portway-fallback.invalid"]]
    assert config.listeners[0].https_redirect is None
    for host in ("shop.example.com", "missing.example.com", "x.example.com"):
        assert pick(config, host + "/") == "default.web.80"  # still served over HTTP


def test_one_host_one_certificate_the_older_ingress_wins(tmp_path: Path, ca: trustme.CA) -> None:
    folder = write(
        tmp_path / "m",
        secret_for(ca, "shop-tls", "shop.example.com"),
        secret_for(ca, "shop-tls-2", "shop.example.com"),
        shop(created="2024-01-01T00:00:00Z"),
        ingress("second", rule("shop.example.com", path("/b", "b")),
                tls=[{"hosts": ["shop.example.com"], "secretName": "shop-tls-2"}]),
    )  # fmt: skip
    config, report = build(folder, listen_tls="127.0.0.1:8443")
    tls = config.listeners[1].tls
    assert tls is not None and len(tls.certificates) == 2
    assert "shop-tls." in str(tls.certificates[1].cert_file)
    [conflict] = issues_about(report, "spec.tls[0].hosts[0]", name="default/second")
    assert conflict.severity == "warning" and "Ingress default/shop spec.tls[0]" in conflict.message


def test_without_an_https_listener_tls_is_reported_and_http_serves(
    tmp_path: Path, ca: trustme.CA
) -> None:
    folder = write(tmp_path / "m", secret_for(ca, "shop-tls", "shop.example.com"), shop())
    config, report = build(folder)
    [issue] = issues_about(report, "spec.tls")
    assert issue.severity == "warning" and "--listen-tls" in issue.message
    assert len(config.listeners) == 1 and config.listeners[0].https_redirect is None


def test_an_unchanged_secret_keeps_its_file_and_a_changed_one_gets_a_new_one(
    tmp_path: Path, ca: trustme.CA
) -> None:
    folder = write(tmp_path / "m", secret_for(ca, "shop-tls", "shop.example.com"), shop())
    controller = ManifestController(folder, Options(listen_tls="127.0.0.1:8443"), tmp_path / "s")

    def files() -> list[str | None]:
        tls = controller.build().listeners[1].tls
        assert tls is not None
        return [c.cert_file for c in tls.certificates]

    first = files()
    assert files() == first
    write(folder, secret_for(ca, "shop-tls", "shop.example.com"), shop())
    second = files()
    assert second[0] == first[0] and second[1] != first[1]  # the fallback stays
    third = files()
    assert third == second
    assert first[1] is not None and not Path(first[1]).exists()  # named by no recent build
