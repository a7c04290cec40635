"""TLS from Portway to a service's instances: verification against a CA, the name checked (SNI),
a client certificate for mTLS to the backend, and health checks over TLS.

The backends are real TLS servers (``Backend(ssl=...)``) with certificates from ``trustme``.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.e2e.gateway import GatewayThread
from tests.support.backends import Backend
from tests.support.client import request


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("upstream-pki")
    ca, client_ca, other_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server = ca.issue_cert("backend.internal", "127.0.0.1")
    client = client_ca.issue_cert("portway.gateway")
    files = {
        "ca": folder / "ca.pem",
        "other_ca": folder / "other-ca.pem",
        "client": folder / "client.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    other_ca.cert_pem.write_to_path(str(files["other_ca"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
    return {"server": server, "client_ca": client_ca, "files": files}


def _server_context(pki: dict[str, Any], require_client: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki["server"].configure_cert(context)
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        pki["client_ca"].configure_trust(context)
    return context


@pytest.fixture
def tls_backend(pki: dict[str, Any]) -> Iterator[Backend]:
    with Backend("tls", ssl=_server_context(pki)) as backend:
        yield backend


def _gateway(backend: Backend, tls: dict[str, Any], **service: Any) -> GatewayThread:
    return GatewayThread(
        {
            "services": {"s": {"instances": [backend.address], "tls": tls, **service}},
            "routes": [{"service": "s"}],
        }
    )


def test_verified_tls_to_the_instance(pki: dict[str, Any], tls_backend: Backend) -> None:
    ca = str(pki["files"]["ca"])
    with _gateway(tls_backend, {"ca_file": ca}) as gw:
        for _ in range(3):
            response = request(gw.port, "GET", "/hello")
            assert response.status == 200
            assert json.loads(response.body)["target"] == "/hello"
        # The TLS connection is pooled and reused like a plain one.
        pool = gw.call(lambda: gw.gateway.snapshot.services["s"].pools[0])
        assert pool.connections_opened == 1


def test_an_instance_certificate_from_another_ca_is_refused(
    pki: dict[str, Any], tls_backend: Backend
) -> None:
    with _gateway(tls_backend, {"ca_file": str(pki["files"]["other_ca"])}) as gw:
        response = request(gw.port, "GET", "/")
        assert response.status == 502
        assert response.header("portway-error") == "upstream_connect_failed"
        assert tls_backend.requests == []


def test_server_name_is_sent_and_verified(pki: dict[str, Any], tls_backend: Backend) -> None:
    ca = str(pki["files"]["ca"])
    with _gateway(tls_backend, {"ca_file": ca, "server_name": "backend.internal"}) as gw:
        assert request(gw.port, "GET", "/").status == 200
    with _gateway(tls_backend, {"ca_file": ca, "server_name": "elsewhere.internal"}) as gw:
        assert request(gw.port, "GET", "/").status == 502  # the certificate does not name it


def test_verify_false_accepts_any_certificate(tls_backend: Backend) -> None:
    with _gateway(tls_backend, {"verify": False}) as gw:
        assert request(gw.port, "GET", "/").status == 200


def test_a_drained_gateway_has_closed_its_tls_connections(
    pki: dict[str, Any], tls_backend: Backend
) -> None:
    # A TLS close needs a few more loop turns (close_notify); a loop stopped under it leaves the
    # transport half closed and uvloop complains when the loop closes.
    gw = _gateway(tls_backend, {"ca_file": str(pki["files"]["ca"])}).start()
    try:
        assert request(gw.port, "GET", "/").status == 200
        service = gw.call(lambda: gw.gateway.snapshot.services["s"])
        assert service.open_connections == 1  # pooled, idle
        assert gw.drain(1.0) is True
        assert service.open_connections == 0
    finally:
        gw.stop()


def test_client_certificate_to_an_instance_that_requires_one(pki: dict[str, Any]) -> None:
    ca, client = str(pki["files"]["ca"]), str(pki["files"]["client"])
    with Backend("mtls", ssl=_server_context(pki, require_client=True)) as backend:
        with _gateway(backend, {"ca_file": ca, "cert_file": client, "key_file": client}) as gw:
            assert request(gw.port, "GET", "/").status == 200
        with _gateway(backend, {"ca_file": ca}) as gw:
            assert request(gw.port, "GET", "/").status == 502  # no certificate: handshake fails


def test_plain_http_instance_behind_tls_config_fails_to_connect(pki: dict[str, Any]) -> None:
    with Backend("plain") as backend, _gateway(backend, {"ca_file": str(pki["files"]["ca"])}) as gw:
        response = request(gw.port, "GET", "/")
        assert response.status == 502
        assert backend.requests == []


def test_health_checks_speak_tls(pki: dict[str, Any], tls_backend: Backend) -> None:
    ca = str(pki["files"]["ca"])
    check = {"path": "/status/200", "interval": "0.1s", "timeout": "1s", "healthy_threshold": 1}
    with (
        Backend("plain") as plain,
        GatewayThread(
            {
                "services": {
                    "s": {
                        "instances": [tls_backend.address, plain.address],
                        "tls": {"ca_file": ca},
                        "health_check": check,
                    }
                },
                "routes": [{"service": "s"}],
            }
        ) as gw,
    ):
        deadline = time.monotonic() + 5
        states: list[bool | None] = []
        while time.monotonic() < deadline:
            states = gw.call(lambda: [e.healthy for e in gw.gateway.snapshot.services["s"].endpoints])
            if states == [True, False]:
                break
            time.sleep(0.05)
        assert states == [True, False]  # the TLS instance passes, the plain one fails the handshake
        assert any(r.path == "/status/200" for r in tls_backend.requests)


def test_bad_ca_file_is_a_config_error(tmp_path: Path) -> None:
    from portway.config.loader import load_config
    from portway.errors import ConfigError

    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    config = tmp_path / "portway.yaml"
    config.write_text(
        "services:\n  s:\n    instances: ['127.0.0.1:1']\n    tls:\n      ca_file: ca.pem\n"
        "routes:\n  - service: s\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    text = str(caught.value)
    assert "services.s.tls.ca_file" in text
    assert f"{garbage}: no PEM certificate in the file" in text
    assert ":5:" in text  # the line where ca_file is written
