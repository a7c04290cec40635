"""Authentication policies end to end: client -> gateway (basic_auth, jwt) -> a real backend.

What matters on the wire: a good credential reaches the backend with ``x-portway-consumer`` (and
without the credential when it is stripped), a consumer header forged by the client never does, a
refusal is a 401 with the challenge RFC 7617 / RFC 6750 ask for and never touches the backend, and
the worker counts each refusal by route, policy, kind and reason."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import jwt
import pytest
import yaml

from portway.config.loader import load_config
from portway.policies.basic_auth import hash_password
from tests.e2e.gateway import GatewayThread
from tests.support.admin import admin_get, metric_value, wait_until
from tests.support.backends import Backend
from tests.support.client import KeepAliveClient, Response, request

SECRET = "an-hmac-secret-of-at-least-32-bytes!"


def config(address: str) -> dict[str, Any]:
    return {
        "services": {"web": {"instances": [address]}},
        "policies": {
            "staff": {
                "basic_auth": {
                    "realm": "Staff area",
                    "users": [{"name": "alice", "password_hash": hash_password("pw:1", 1000)}],
                }
            },
            "api": {"jwt": {"algorithms": ["HS256"], "secret": SECRET, "audiences": ["orders"]}},
        },
        "routes": [
            {"name": "basic", "path": "/basic", "service": "web", "policies": ["staff"]},
            {"name": "jwt", "path": "/jwt", "service": "web", "policies": ["api"]},
            {"name": "open", "path": "/open", "service": "web"},
        ],
    }


@pytest.fixture
def gateway(backend: Backend) -> Iterator[GatewayThread]:
    with GatewayThread(config(backend.address)) as g:
        yield g


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def token(**claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "svc-orders", "aud": "orders", "exp": now + 60, **claims}
    return "Bearer " + jwt.encode(payload, SECRET, algorithm="HS256")


def assert_refused(response: Response, cause: str, challenge: str) -> None:
    assert response.status == 401
    assert response.header("portway-error") == cause
    assert response.header_values("www-authenticate") == [challenge]
    assert response.header("x-request-id")


def test_basic_auth_passes_the_consumer_and_strips_the_password(
    gateway: GatewayThread, backend: Backend
) -> None:
    response = request(
        gateway.port,
        "GET",
        "/basic/report",
        headers=[("Authorization", basic("alice", "pw:1")), ("X-Portway-Consumer", "root")],
    )
    assert response.status == 200
    seen = response.json()["headers"]
    assert seen["x-portway-consumer"] == "alice"  # once: the forged value is gone
    assert "authorization" not in seen


def test_basic_auth_refusals_carry_the_challenge_and_reach_nobody(
    gateway: GatewayThread, backend: Backend
) -> None:
    challenge = 'Basic realm="Staff area", charset="UTF-8"'
    with KeepAliveClient(gateway.port) as client:
        assert_refused(client.request("GET", "/basic"), "missing_credentials", challenge)
        wrong = client.request("GET", "/basic", headers={"Authorization": basic("alice", "pw")})
        assert_refused(wrong, "invalid_credentials", challenge)
        garbage = client.request("GET", "/basic", headers={"Authorization": "Basic %%%"})
        assert_refused(garbage, "invalid_credentials", challenge)
        # The connection survives refusals: the next good request on it goes through.
        good = client.request("GET", "/basic", headers={"Authorization": basic("alice", "pw:1")})
        assert good.status == 200
    assert len(backend.requests) == 1
    assert gateway.policy_rejections() == {
        ("basic", "staff", "basic_auth", "missing_credentials"): 1,
        ("basic", "staff", "basic_auth", "invalid_credentials"): 2,
    }


def test_basic_auth_with_an_htpasswd_bcrypt_user_through_a_file(
    backend: Backend, tmp_path: Path
) -> None:
    """A user copied from an ``htpasswd -B`` file ($2y$ bcrypt) into the YAML the gateway loads:
    the right password passes (checked in the worker's hashing threads), a wrong one is 401."""
    encoded = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode("ascii")
    line = "carol:$2y$" + encoded[4:]  # what htpasswd writes
    name, _, password_hash = line.partition(":")
    settings = config(backend.address)
    settings["policies"]["staff"]["basic_auth"]["users"] = [
        {"name": name, "password_hash": password_hash}
    ]
    path = tmp_path / "portway.yaml"
    path.write_text(yaml.safe_dump({"listeners": [{"address": "127.0.0.1:0"}], **settings}))
    with GatewayThread(load_config(path)) as g:
        good = request(g.port, "GET", "/basic", headers={"Authorization": basic("carol", "s3cret")})
        assert good.status == 200
        assert good.json()["headers"]["x-portway-consumer"] == "carol"
        wrong = request(g.port, "GET", "/basic", headers={"Authorization": basic("carol", "s3cre")})
        assert wrong.status == 401
        assert wrong.header("portway-error") == "invalid_credentials"
    assert len(backend.requests) == 1


def test_jwt_passes_the_consumer_and_keeps_the_token(
    gateway: GatewayThread, backend: Backend
) -> None:
    bearer = token()
    response = request(
        gateway.port,
        "GET",
        "/jwt",
        headers=[("X-Portway-Consumer", "admin"), ("Authorization", bearer)],
    )
    assert response.status == 200
    seen = response.json()["headers"]
    assert seen["x-portway-consumer"] == "svc-orders"
    assert seen["authorization"] == bearer  # strip_credentials defaults to false for jwt


def test_jwt_refusals(gateway: GatewayThread, backend: Backend) -> None:
    invalid = 'Bearer realm="api", error="invalid_token", error_description="{}"'
    missing = request(gateway.port, "GET", "/jwt")
    assert_refused(missing, "missing_credentials", 'Bearer realm="api"')
    expired = request(
        gateway.port, "GET", "/jwt", headers={"Authorization": token(exp=int(time.time()) - 3600)}
    )
    assert_refused(expired, "expired_credentials", invalid.format("the token has expired"))
    other = request(gateway.port, "GET", "/jwt", headers={"Authorization": token(aud="billing")})
    assert_refused(
        other, "invalid_credentials", invalid.format("the token is not for this audience")
    )
    assert backend.requests == []
    assert gateway.policy_rejections() == {
        ("jwt", "api", "jwt", "missing_credentials"): 1,
        ("jwt", "api", "jwt", "expired_credentials"): 1,
        ("jwt", "api", "jwt", "invalid_credentials"): 1,
    }


def test_a_forged_consumer_header_never_reaches_the_backend(
    gateway: GatewayThread, backend: Backend
) -> None:
    """Without authentication on the route there is no consumer, and the client cannot claim one."""
    response = request(gateway.port, "GET", "/open", headers={"X-Portway-Consumer": "alice"})
    assert response.status == 200
    assert "x-portway-consumer" not in response.json()["headers"]
    refused = request(
        gateway.port, "GET", "/basic", headers={"X-Portway-Consumer": "alice"}
    )  # and a refused one does not pass at all
    assert refused.status == 401
    assert len(backend.requests) == 1


def test_rejections_show_in_the_admin_metrics(backend: Backend) -> None:
    with GatewayThread(config(backend.address), admin=True) as g:
        for _ in range(2):
            assert request(g.port, "GET", "/jwt").status == 401
        labels = {"route": "jwt", "policy": "api", "kind": "jwt", "reason": "missing_credentials"}

        def counted() -> float | None:
            text = admin_get(g.admin_port, "/metrics").text
            return metric_value(text, "portway_policy_rejections_total", **labels)

        assert wait_until(lambda: counted() == 2.0)
