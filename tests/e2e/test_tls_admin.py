"""What the admin API and ``portway certs`` show about TLS: every served certificate with its
expiry, handshake results by reason, certificate reloads, as JSON and as Prometheus metrics."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509

from tests.e2e.gateway import GatewayThread
from tests.e2e.test_admin import check_against_openapi
from tests.support.admin import admin_get, metric_value, promtool_check_metrics, wait_until
from tests.support.backends import Backend


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def gateway(ca: trustme.CA, tmp_path: Path) -> Iterator[tuple[GatewayThread, dict[str, Any]]]:
    expiries = {}
    files = {}
    for name, days in (("api.example.com", 90), ("old.example.com", 5)):
        # trustme issues certificates valid until 2050; give one a near expiry with cryptography.
        cert = ca.issue_cert(name, not_after=datetime.now(UTC).replace(microsecond=0) + _days(days))
        path = tmp_path / f"{name}.pem"
        cert.private_key_and_cert_chain_pem.write_to_path(str(path))
        leaf = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes())
        expiries[name] = leaf.not_valid_after_utc
        files[name] = str(path)
    with (
        Backend() as backend,
        GatewayThread(
            {
                "listeners": [
                    {
                        "address": "127.0.0.1:0",
                        "name": "https",
                        "tls": {
                            "certificates": [
                                {"cert_file": files[n], "key_file": files[n]} for n in files
                            ]
                        },
                    }
                ],
                "services": {"s": {"instances": [backend.address]}},
                "routes": [{"service": "s"}],
            },
            admin=True,
        ) as gw,
    ):
        yield gw, expiries


def _days(days: int) -> Any:
    from datetime import timedelta

    return timedelta(days=days)


def _handshake(port: int, ca: trustme.CA, name: str) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
        while tls.recv(65536):
            pass


def _not_tls(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
        while raw.recv(65536):
            pass


def test_certificates_view_lists_names_and_expiry(
    gateway: tuple[GatewayThread, dict[str, Any]],
) -> None:
    gw, expiries = gateway
    response = admin_get(gw.admin_port, "/certificates")
    check_against_openapi(
        admin_get(gw.admin_port, "/openapi.json").json(), "/certificates", response
    )
    body = response.json()
    listed = body["certificates"]
    assert [c["hosts"] for c in listed] == [["old.example.com"], ["api.example.com"]]  # soonest
    for certificate in listed:
        host = certificate["hosts"][0]
        assert datetime.fromisoformat(certificate["not_after"]) == expiries[host]
        assert certificate["listener"] == "https"
        assert certificate["reload_error"] is None
    assert 4.9 < listed[0]["days_left"] <= 5.0
    assert listed[1]["default"] is True and listed[0]["default"] is False  # the first one
    assert body["acme"] is None


def test_handshake_metrics_count_results_by_reason(
    gateway: tuple[GatewayThread, dict[str, Any]], ca: trustme.CA
) -> None:
    gw, expiries = gateway
    for _ in range(3):
        _handshake(gw.port, ca, "api.example.com")
    _not_tls(gw.port)

    def scraped() -> str | None:
        text = admin_get(gw.admin_port, "/metrics").text
        wanted = 'portway_tls_handshakes_total{listener="https",result="not_tls"} 1.0'
        return text if wanted in text else None

    text = wait_until(scraped)
    assert text, "the not_tls handshake was not counted"
    assert 'portway_tls_handshakes_total{listener="https",result="ok"} 3.0' in text
    expiry = metric_value(
        text,
        "portway_tls_certificate_expiry_timestamp_seconds",
        certificate="api.example.com",
        listener="https",
    )
    assert expiry == expiries["api.example.com"].timestamp()
    assert (
        'portway_tls_certificate_reload_error{certificate="old.example.com",listener="https"} 0.0'
        in text
    )
    lint = promtool_check_metrics(text)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_portway_certs_prints_and_warns(gateway: tuple[GatewayThread, dict[str, Any]]) -> None:
    gw, _ = gateway
    admin = f"http://127.0.0.1:{gw.admin_port}"
    command = [sys.executable, "-m", "portway", "certs", "--admin", admin]
    table = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert table.returncode == 0, table.stderr
    assert "old.example.com" in table.stdout and "api.example.com" in table.stdout
    as_json = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=30)
    hosts = [c["hosts"] for c in json.loads(as_json.stdout)["certificates"]]
    assert hosts == [["old.example.com"], ["api.example.com"]]
    # Monitoring: a certificate expires within 7 days -> exit 1; none within 1 day -> 0.
    assert subprocess.run([*command, "--warn-days", "7"], capture_output=True).returncode == 1
    assert subprocess.run([*command, "--warn-days", "1"], capture_output=True).returncode == 0


def test_portway_certs_names_an_unreachable_admin_api() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "portway", "certs", "--admin", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "http://127.0.0.1:1/certificates" in result.stderr
