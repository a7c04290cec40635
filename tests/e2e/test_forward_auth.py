"""Forward authentication end to end: client -> gateway (forward_auth) -> a real auth service, and
on a 2xx the real backend.

What matters on the wire: an admitted request reaches the backend with the auth service's headers
(never the client's forged copies) and the consumer; a refusal or a login redirect reaches the
client as the auth service wrote it and never touches the backend; an auth service that is down or
slow fails closed with 503 ``policy_unavailable`` while the worker goes on serving everybody else;
pipelined requests are answered in order; and checks reuse their connection to the auth service."""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from portway.policies.basic_auth import hash_password
from tests.e2e.gateway import GatewayThread
from tests.support.auth_service import AuthService
from tests.support.backends import Backend, refused_port
from tests.support.client import KeepAliveClient, request

GOOD = {"Authorization": "Bearer good"}


def config(backend: str, auth_url: str, timeout: str = "1s") -> dict[str, Any]:
    return {
        "services": {"web": {"instances": [backend]}},
        "policies": {
            "sso": {
                "forward_auth": {
                    "url": auth_url,
                    "timeout": timeout,
                    "copy_headers": ["x-user", "x-scopes"],
                    "consumer_header": "x-user",
                }
            },
            "staff": {
                "basic_auth": {
                    "users": [{"name": "bob", "password_hash": hash_password("pw", 1_000_000)}]
                }
            },
        },
        "routes": [
            {"name": "app", "path": "/", "service": "web", "policies": ["sso"]},
            {"name": "staff", "path": "/staff", "service": "web", "policies": ["staff"]},
            {"name": "open", "path": "/open", "service": "web"},
        ],
    }


@pytest.fixture
def auth() -> Iterator[AuthService]:
    with AuthService() as service:
        yield service


@pytest.fixture
def gateway(backend: Backend, auth: AuthService) -> Iterator[GatewayThread]:
    with GatewayThread(config(backend.address, auth.url)) as g:
        yield g


def test_admitted_requests_carry_the_auth_service_headers_not_the_client_copies(
    gateway: GatewayThread, backend: Backend, auth: AuthService
) -> None:
    response = request(
        gateway.port,
        "GET",
        "/orders?page=2",
        headers={**GOOD, "X-User": "root", "Cookie": "session=abc", "X-Other": "kept"},
    )
    assert response.status == 200
    seen = response.json()["headers"]
    assert seen["x-user"] == "alice"  # the auth service's, once: the forged one is gone
    assert seen["x-scopes"] == "read write"
    assert seen["x-portway-consumer"] == "alice"
    assert seen["authorization"] == "Bearer good"  # forward_auth strips nothing it did not copy
    assert seen["x-other"] == "kept"
    _, asked = auth.requests[-1]
    assert asked["x-forwarded-method"] == "GET"
    assert asked["x-forwarded-proto"] == "http"
    assert asked["x-forwarded-host"] == "test.local"
    assert asked["x-forwarded-uri"] == "/orders?page=2"
    assert asked["x-forwarded-for"] == "127.0.0.1"
    assert asked["authorization"] == "Bearer good" and asked["cookie"] == "session=abc"
    assert "x-other" not in asked  # only the configured request headers
    assert len(backend.requests) == 1


def test_a_401_is_relayed_with_its_challenge_and_body(
    gateway: GatewayThread, backend: Backend
) -> None:
    response = request(gateway.port, "GET", "/orders")
    assert response.status == 401
    assert response.header("www-authenticate") == 'Bearer realm="portway-tests"'
    assert response.body == b"log in first\n"
    assert response.header("portway-error") == "missing_credentials"
    forbidden = request(gateway.port, "GET", "/orders", headers={"Authorization": "Bearer bad"})
    assert forbidden.status == 403
    assert forbidden.body == b'{"error":"forbidden"}'
    assert forbidden.header("content-type") == "application/json"
    assert backend.requests == []
    assert gateway.policy_rejections() == {
        ("app", "sso", "forward_auth", "missing_credentials"): 1,
        ("app", "sso", "forward_auth", "invalid_credentials"): 1,
    }


def test_a_login_redirect_is_relayed(gateway: GatewayThread, backend: Backend) -> None:
    response = request(gateway.port, "GET", "/login/page")
    assert response.status == 302
    assert response.header("location") == "https://login.example/?rd=/login/page"
    assert response.header("set-cookie") == "csrf=1; Path=/"
    assert backend.requests == []
    assert gateway.policy_rejections() == {}  # a redirect is no refusal


def test_checks_reuse_their_connection_to_the_auth_service(
    gateway: GatewayThread, auth: AuthService
) -> None:
    with KeepAliveClient(gateway.port) as client:
        for _ in range(5):
            assert client.request("GET", "/a", headers=GOOD).status == 200
    assert len(auth.requests) == 5
    assert auth.connections == 1


def test_an_auth_service_that_is_down_fails_closed(backend: Backend) -> None:
    url = f"http://127.0.0.1:{refused_port()}/check"
    with GatewayThread(config(backend.address, url)) as gateway:
        response = request(gateway.port, "GET", "/orders", headers=GOOD)
        assert response.status == 503
        assert response.header("portway-error") == "policy_unavailable"
        assert b"connection refused" in response.body
        assert b"Traceback" not in response.body
        assert request(gateway.port, "GET", "/open").status == 200
        assert gateway.policy_rejections() == {
            ("app", "sso", "forward_auth", "policy_unavailable"): 1
        }
    assert len(backend.requests) == 1  # the open route's only


def test_a_slow_auth_service_times_out_while_others_are_served(
    backend: Backend, auth: AuthService
) -> None:
    with GatewayThread(config(backend.address, auth.url, timeout="0.5s")) as gateway:
        results: dict[str, Any] = {}

        def slow() -> None:
            began = time.monotonic()
            results["slow"] = request(gateway.port, "GET", "/slow", headers=GOOD)
            results["took"] = time.monotonic() - began

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.1)  # the slow check is under way
        began = time.monotonic()
        for _ in range(5):  # other connections are served meanwhile, without waiting for it
            assert request(gateway.port, "GET", "/open").status == 200
            assert request(gateway.port, "GET", "/fast", headers=GOOD).status == 200
        assert time.monotonic() - began < 0.4
        assert "slow" not in results
        thread.join(5.0)
        response = results["slow"]
        assert response.status == 503
        assert response.header("portway-error") == "policy_unavailable"
        assert 0.4 <= results["took"] < 2.0


def test_pipelined_requests_are_answered_in_order(
    gateway: GatewayThread, backend: Backend, auth: AuthService
) -> None:
    auth.slow_delay = 0.2  # the first verdict comes after the others
    with KeepAliveClient(gateway.port) as client:
        client.send_request("GET", "/slow/one", headers=GOOD)
        client.send_request("GET", "/open/two")
        client.send_request("GET", "/three")  # no credentials: 401
        client.send_request("POST", "/four", headers=GOOD, body=b"x" * 100_000)
        first, second, third, fourth = (client.read_response() for _ in range(4))
    assert (first.status, first.json()["target"]) == (200, "/slow/one")
    assert (second.status, second.json()["target"]) == (200, "/open/two")
    assert third.status == 401
    assert fourth.status == 200 and fourth.json()["target"] == "/four"
    assert [r.body_bytes for r in backend.requests if r.method == "POST"] == [100_000]


def test_a_client_gone_while_its_verdict_is_pending_releases_everything(
    gateway: GatewayThread, backend: Backend, auth: AuthService
) -> None:
    auth.slow_delay = 0.3
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(
            b"GET /slow HTTP/1.1\r\nhost: test.local\r\nauthorization: Bearer good\r\n\r\n"
        )
        time.sleep(0.1)
    time.sleep(0.5)  # the verdict would have come by now
    assert backend.requests == []  # nothing went upstream for a client that left
    assert gateway.call(lambda: len(gateway.gateway.ctx.connections)) == 0
    assert request(gateway.port, "GET", "/a", headers=GOOD).status == 200


def test_a_slow_password_hash_does_not_block_other_clients(
    gateway: GatewayThread, backend: Backend
) -> None:
    credentials = "Basic " + base64.b64encode(b"bob:pw").decode()
    results: dict[str, Any] = {}

    def login() -> None:
        began = time.monotonic()
        results["status"] = request(
            gateway.port, "GET", "/staff", headers={"Authorization": credentials}, timeout=30.0
        ).status
        results["took"] = time.monotonic() - began

    thread = threading.Thread(target=login)
    thread.start()
    time.sleep(0.05)  # the hash is running (1,000,000 iterations: about half a second or more)
    began = time.monotonic()
    assert request(gateway.port, "GET", "/open").status == 200
    other = time.monotonic() - began
    thread.join(30.0)
    assert results["status"] == 200
    assert other < results["took"] / 2, (other, results["took"])


@pytest.fixture(scope="module")
def auth_pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A private CA for the auth service's certificate, another for the gateway's client
    certificate (mTLS), and the files the gateway's config names."""
    folder = tmp_path_factory.mktemp("auth-pki")
    ca, client_ca = trustme.CA(), trustme.CA()
    client = client_ca.issue_cert("portway.gateway")
    files = {"ca": folder / "ca.pem", "client": folder / "client.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
    return {"ca": ca, "client_ca": client_ca, "files": files}


def _tls_auth(pki: dict[str, Any], name: str, require_client: bool = False) -> AuthService:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki["ca"].issue_cert(name).configure_cert(context)
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        pki["client_ca"].configure_trust(context)
    return AuthService(ssl=context)


def _tls_config(backend: Backend, auth: AuthService, tls: dict[str, Any] | None) -> dict[str, Any]:
    settings = config(backend.address, auth.url)
    if tls is not None:
        settings["policies"]["sso"]["forward_auth"]["tls"] = tls
    return settings


def test_an_https_auth_service_with_a_private_ca_is_verified_by_its_ca_file(
    backend: Backend, auth_pki: dict[str, Any]
) -> None:
    ca, client = str(auth_pki["files"]["ca"]), str(auth_pki["files"]["client"])
    with _tls_auth(auth_pki, "127.0.0.1", require_client=True) as auth:
        tls = {"ca_file": ca, "cert_file": client, "key_file": client}
        with GatewayThread(_tls_config(backend, auth, tls)) as gateway:
            admitted = request(gateway.port, "GET", "/orders", headers=GOOD)
            assert admitted.status == 200
            assert admitted.json()["headers"]["x-user"] == "alice"
            refused = request(gateway.port, "GET", "/orders")
            assert refused.status == 401  # the auth service's own answer, over TLS
    assert [headers.get("x-forwarded-uri") for _, headers in auth.requests] == ["/orders"] * 2


@pytest.mark.parametrize(
    ("certificate_name", "tls", "why"),
    [
        # No tls: the system CAs, which do not know the private CA.
        ("127.0.0.1", None, [b"TLS certificate was not verified (unable to get local issuer"]),
        # The CA is known but the certificate names another host (RFC 9110 §4.3.4).
        ("auth.internal", {}, [b"TLS certificate was not verified (IP address mismatch)"]),
        # mTLS demanded by the auth service, no client certificate configured. TLS 1.3: the
        # server's alert comes after the client's handshake, read as an alert or as a reset.
        (
            "127.0.0.1",
            {"require_client": True},
            [b"TLS failed (TLSV13_ALERT_CERTIFICATE_REQUIRED)", b"failed: ConnectionResetError"],
        ),
    ],
)
def test_an_https_auth_service_that_cannot_be_verified_fails_closed(
    backend: Backend,
    auth_pki: dict[str, Any],
    certificate_name: str,
    tls: dict[str, Any] | None,
    why: list[bytes],
) -> None:
    require_client = bool(tls and tls.pop("require_client", False))
    if tls is not None:
        tls = {"ca_file": str(auth_pki["files"]["ca"]), **tls}
    with (
        _tls_auth(auth_pki, certificate_name, require_client) as auth,
        GatewayThread(_tls_config(backend, auth, tls)) as gateway,
    ):
        response = request(gateway.port, "GET", "/orders", headers=GOOD)
        assert response.status == 503
        assert response.header("portway-error") == "policy_unavailable"
        assert any(reason in response.body for reason in why), response.body
        assert b"127.0.0.1" not in response.body  # where the auth service is stays private
        assert request(gateway.port, "GET", "/open").status == 200
    assert auth.requests == []
    assert len(backend.requests) == 1  # the open route's only


def test_a_server_name_checks_the_certificate_against_that_name(
    backend: Backend, auth_pki: dict[str, Any]
) -> None:
    tls = {"ca_file": str(auth_pki["files"]["ca"]), "server_name": "auth.internal"}
    with (
        _tls_auth(auth_pki, "auth.internal") as auth,
        GatewayThread(_tls_config(backend, auth, tls)) as gateway,
    ):
        assert request(gateway.port, "GET", "/orders", headers=GOOD).status == 200
