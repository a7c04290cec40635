"""Where the controller's connection comes from (``--kubeconfig``, the pod's service account,
``$KUBECONFIG``) and that it is used as configured: the server's certificate is verified against
the configured CA, the bearer token is sent, a rotated service-account token is read again."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx2
import pytest
import trustme
import yaml

from portway.kubernetes.api import SERVICE, Api, ApiConfigError, load_config
from tests.support.fake_apiserver import FakeApiServer
from tests.unit.kubernetes.cluster_support import run


async def list_services(api: Api) -> int:
    try:
        response = await api.http.get(SERVICE.path(None))
        return response.status_code
    finally:
        await api.aclose()


def test_a_kubeconfig_file_gives_the_server_the_ca_and_the_token(
    fake: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config = load_config(fake.kubeconfig(tmp_path / "config", token="token-b"))
    api = Api(config)
    assert (api.server, api.namespace) == (fake.url, "portway-system")
    assert run(lambda: list_services(api)) == 200
    assert [r.token for r in fake.requests("GET", "/services")] == ["token-b"]


def test_kubeconfig_comes_from_the_environment_then_the_home_folder(
    fake: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    first = fake.kubeconfig(tmp_path / "first", namespace="first")
    monkeypatch.setenv("KUBECONFIG", f"{first}:{tmp_path / 'second'}")
    assert load_config().namespace == "first"
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".kube").mkdir()
    fake.kubeconfig(tmp_path / ".kube" / "config", namespace="home")
    assert load_config().namespace == "home"
    with pytest.raises(ApiConfigError, match=r"missing.*not found"):
        load_config(tmp_path / "missing")


def test_the_service_account_is_used_in_a_pod_and_a_rotated_token_read_again(
    fake: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("token-a")
    (account / "namespace").write_text("ingress")
    (account / "ca.crt").write_bytes(fake.ca.cert_pem.bytes())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(fake.port))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "ignored"))  # in a pod, the account wins

    config = load_config(service_account=account)
    assert config.namespace == "ingress"

    async def twice() -> list[int]:
        api = Api(config)
        first = (await api.http.get(SERVICE.path(None))).status_code
        (account / "token").write_text("token-b")  # the kubelet rotates the token
        fake.tokens.discard("token-a")
        second = (await api.http.get(SERVICE.path(None))).status_code
        await api.aclose()
        return [first, second]

    assert run(twice) == [200, 200]
    assert [r.token for r in fake.requests("GET", "/services")] == ["token-a", "token-a",
                                                                   "token-b"]  # fmt: skip


def test_a_server_whose_certificate_the_configured_ca_did_not_sign_is_refused(
    fake: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = fake.kubeconfig(tmp_path / "config")
    document = yaml.safe_load(path.read_text())
    other = base64.b64encode(trustme.CA().cert_pem.bytes()).decode()
    document["clusters"][0]["cluster"]["certificate-authority-data"] = other
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        run(lambda: list_services(Api(load_config(path))))
    assert fake.requests() == []
