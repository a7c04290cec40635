"""Bad input to the ACME client reads as one sentence that names the step, the server and the
reason: a directory URL nobody answers, a server that is not an ACME server, an unusable key."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from portway.acme import AcmeClient, AcmeError, CertificateManager, read_status
from portway.config.tls import AcmeConfig
from tests.support.backends import Backend, refused_port
from tests.unit.acme.support import HOSTS, make_config


def test_an_unreachable_directory_url_says_so(tmp_path: Path) -> None:
    url = f"https://127.0.0.1:{refused_port()}/directory"
    client = AcmeClient(AcmeConfig(directory_url=url, state_dir=str(tmp_path)))
    with pytest.raises(AcmeError) as caught:
        client.account_url()
    assert str(caught.value) == (
        f"fetching the ACME directory: cannot reach the ACME server {url}: Connection refused"
    )
    assert not (tmp_path / "account" / "registration.json").exists()


def test_the_manager_records_an_unreachable_directory_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"https://127.0.0.1:{refused_port()}/directory"
    config = make_config(tmp_path, HOSTS, directory_url=url, retry_interval="5m")
    manager = CertificateManager(config)
    with caplog.at_level(logging.ERROR, logger="portway.acme"):
        manager.run_due()
    (record,) = read_status(config.acme)
    reason = f"fetching the ACME directory: cannot reach the ACME server {url}: Connection refused"
    assert (record.last_error, record.failures, record.not_after) == (reason, 1, None)
    assert record.next_attempt == pytest.approx((record.last_failure or 0) + 300, abs=1e-3)
    assert not config.acme.certificate_paths(HOSTS)[0].exists()
    assert caplog.records[-1].getMessage() == (
        f"ACME: could not obtain the certificate for portway.test, www.portway.test: {reason}; "
        "there is no certificate yet; next attempt in 300s"
    )


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/status/404", "{url} answered HTTP 404, not an ACME response"),
        ("/dir", "{url} is not an ACME directory (it lacks newNonce, newAccount, newOrder)"),
        (
            "/status/200",
            "{url} does not answer as an ACME server (Unexpected response Content-Type: "
            "text/plain)",
        ),
    ],
)
def test_a_server_that_is_not_an_acme_server_is_named(
    tmp_path: Path, path: str, reason: str
) -> None:
    with Backend() as server:
        url = f"http://{server.address}{path}"
        client = AcmeClient(AcmeConfig(directory_url=url, state_dir=str(tmp_path)))
        with pytest.raises(AcmeError) as caught:
            client.account_url()
    assert str(caught.value) == "fetching the ACME directory: " + reason.format(url=url)


def test_an_unusable_account_key_is_named(tmp_path: Path) -> None:
    key_file = tmp_path / "account" / "key.pem"
    key_file.parent.mkdir()
    client = AcmeClient(AcmeConfig(state_dir=str(tmp_path)))
    key_file.write_text("not a key")
    with pytest.raises(AcmeError, match=rf"^the ACME account key {key_file} is unreadable: "):
        client.account_url()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(AcmeError) as caught:
        client.account_url()
    assert str(caught.value) == f"the ACME account key {key_file} is not an EC P-256 key"
