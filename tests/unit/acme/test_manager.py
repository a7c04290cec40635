"""The certificate manager's decisions, against a CA in memory: what is due and when, what is
written where, what a failure leaves behind, and what ``status.json`` says."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from portway.acme import AcmeError, CertificateManager, acme_certificates, read_status
from portway.config.model import Config
from portway.config.tls import AcmeConfig
from tests.unit.acme.support import DAY, HOSTS, OTHER, Clock, FakeCA, install, make_config


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ca(clock: Clock) -> FakeCA:
    return FakeCA(clock)


def status(state: Path) -> dict[str, dict[str, Any]]:
    document = json.loads((state / "status.json").read_text())
    assert document["version"] == 1
    return {record["hosts"][0]: record for record in document["certificates"]}


def leaf(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def names(certificate: x509.Certificate) -> list[str]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(san.get_values_for_type(x509.DNSName))


def test_missing_files_are_obtained_at_once_and_written_with_their_modes(
    tmp_path: Path, ca: FakeCA, clock: Clock
) -> None:
    config = make_config(tmp_path, HOSTS)
    manager = CertificateManager(config, ca, clock)
    assert status(tmp_path)["portway.test"]["next_attempt"] <= clock()

    next_attempt = manager.run_due()

    assert ca.orders == [tuple(HOSTS)]
    cert_file, key_file = config.acme.certificate_paths(HOSTS)
    assert cert_file == tmp_path / "certificates" / "portway.test" / "fullchain.pem"
    certificate = leaf(cert_file)
    assert names(certificate) == sorted(HOSTS)
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    assert os.stat(cert_file).st_mode & 0o777 == 0o644
    record = status(tmp_path)["portway.test"]
    not_before = certificate.not_valid_before_utc.timestamp()
    assert record["not_before"] == not_before
    assert record["not_after"] == not_before + 90 * DAY
    assert record["renew_at"] == pytest.approx(not_before + 60 * DAY, abs=1e-3)  # 2/3 of 90 days
    assert next_attempt == record["next_attempt"] == record["renew_at"]
    assert record["last_success"] == pytest.approx(clock(), abs=5)
    assert record["serial"] == f"{certificate.serial_number:x}"
    assert [p.name for p in tmp_path.rglob("*.tmp")] == []  # no temporary file left


def test_usable_files_are_renewed_once_renew_after_of_their_lifetime_has_passed(
    tmp_path: Path, ca: FakeCA, clock: Clock
) -> None:
    config = make_config(tmp_path, HOSTS, renew_after=0.5)
    started = clock.moment() - dt.timedelta(days=10)
    cert_file, _ = install(config, HOSTS, ca.issue(HOSTS, HOSTS, not_before=started))
    old = cert_file.read_bytes()
    manager = CertificateManager(config, ca, clock)
    renew_at = started.timestamp() + 45 * DAY  # half of 90 days
    assert manager.next_attempt() == pytest.approx(renew_at, abs=1e-3)

    clock.offset = renew_at - clock() - 60  # a minute early: nothing to do
    assert manager.run_due() == pytest.approx(renew_at, abs=1e-3)
    assert ca.orders == [] and cert_file.read_bytes() == old

    clock.offset += 120
    manager.run_due()
    assert ca.orders == [tuple(HOSTS)]
    assert cert_file.read_bytes() != old
    assert leaf(cert_file).not_valid_before_utc.timestamp() == pytest.approx(clock(), abs=2)


@pytest.mark.parametrize("problem", ["expired", "other names", "wrong key", "garbage"])
def test_unusable_files_are_replaced_at_once(
    tmp_path: Path, ca: FakeCA, clock: Clock, problem: str
) -> None:
    config = make_config(tmp_path, HOSTS)
    if problem == "expired":  # 90 days from 100 days ago
        issued = ca.issue(HOSTS, HOSTS, not_before=clock.moment() - dt.timedelta(days=100))
    else:
        issued = ca.issue(OTHER if problem == "other names" else HOSTS, HOSTS)
    cert_file, key_file = install(config, HOSTS, issued)
    if problem == "wrong key":
        key_file.write_bytes(ca.issue(HOSTS, HOSTS).key_pem)
    if problem == "garbage":
        cert_file.write_text("not a certificate")
    manager = CertificateManager(config, ca, clock)
    assert manager.next_attempt() <= clock()
    manager.run_due()
    assert ca.orders == [tuple(HOSTS)]
    assert names(leaf(cert_file)) == sorted(HOSTS)


def test_a_failure_keeps_the_files_and_backs_off_even_across_restarts(
    tmp_path: Path, ca: FakeCA, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path, HOSTS, retry_interval="10m")
    manager = CertificateManager(config, ca, clock)
    manager.run_due()
    cert_file, key_file = config.acme.certificate_paths(HOSTS)
    files = cert_file.read_bytes(), key_file.read_bytes()
    before = status(tmp_path)["portway.test"]

    clock.offset = before["renew_at"] - clock() + 1
    ca.order_error = AcmeError("validating portway.test failed: 404 from the listener")
    with caplog.at_level(logging.ERROR, logger="portway.acme"):
        manager.run_due()

    assert (cert_file.read_bytes(), key_file.read_bytes()) == files
    record = status(tmp_path)["portway.test"]
    assert record["last_error"] == "validating portway.test failed: 404 from the listener"
    assert record["last_failure"] == pytest.approx(clock(), abs=2)
    assert record["next_attempt"] == pytest.approx(record["last_failure"] + 600, abs=1e-3)
    assert record["failures"] == 1
    assert {k: record[k] for k in ("serial", "not_after", "last_success")} == {
        k: before[k] for k in ("serial", "not_after", "last_success")
    }
    assert caplog.records[-1].getMessage() == (
        "ACME: could not renew the certificate for portway.test, www.portway.test: validating "
        "portway.test failed: 404 from the listener; the current certificate stays in use; next "
        "attempt in 600s"
    )

    # A restarted process does not retry before the back-off ends ...
    restarted = CertificateManager(config, ca, clock)
    assert restarted.next_attempt() == pytest.approx(record["next_attempt"], abs=1e-3)
    assert status(tmp_path)["portway.test"]["failures"] == 1
    orders = len(ca.orders)
    restarted.run_due()
    assert len(ca.orders) == orders
    # ... unless the ACME settings change (they may be the fix): then it tries at once.
    restarted.reload(make_config(tmp_path, HOSTS, retry_interval="10m", email="ops@portway.test"))
    assert restarted.next_attempt() <= clock()
    ca.order_error = None
    restarted.run_due()
    record = status(tmp_path)["portway.test"]
    assert (record["failures"], record["last_error"]) == (0, None)
    assert record["serial"] != before["serial"]


def test_an_unreachable_ca_fails_every_due_certificate_after_one_try(
    tmp_path: Path, ca: FakeCA, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path, HOSTS, OTHER)
    ca.connect_error = "fetching the ACME directory: cannot reach the ACME server x: refused"
    manager = CertificateManager(config, ca, clock)
    with caplog.at_level(logging.ERROR, logger="portway.acme"):
        manager.run_due()
    assert ca.connects == 1 and ca.orders == []
    records = status(tmp_path)
    assert {r["last_error"] for r in records.values()} == {ca.connect_error}
    assert not config.acme.certificate_paths(HOSTS)[0].exists()
    assert "there is no certificate yet" in caplog.records[-1].getMessage()


def test_a_certificate_that_does_not_cover_the_hosts_is_refused(
    tmp_path: Path, ca: FakeCA, clock: Clock
) -> None:
    config = make_config(tmp_path, HOSTS)
    ca.names = ["portway.test"]  # www.portway.test left out
    manager = CertificateManager(config, ca, clock)
    manager.run_due()
    assert not config.acme.certificate_paths(HOSTS)[0].exists()
    assert status(tmp_path)["portway.test"]["last_error"] == (
        "the certificate issued for portway.test, www.portway.test does not cover www.portway.test"
    )


def test_an_unexpected_error_is_recorded_and_the_other_certificates_go_on(
    tmp_path: Path, ca: FakeCA, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path, HOSTS, OTHER)
    manager = CertificateManager(config, ca, clock)
    ca.order_error = RuntimeError("a bug")
    with caplog.at_level(logging.ERROR, logger="portway.acme"):
        manager.run_due()
    assert ca.orders == [tuple(HOSTS), tuple(OTHER)]
    assert {r["last_error"] for r in status(tmp_path).values()} == {
        "unexpected error: RuntimeError('a bug')"
    }


def test_reload_follows_the_certificate_list_and_keeps_history(
    tmp_path: Path, ca: FakeCA, clock: Clock
) -> None:
    manager = CertificateManager(make_config(tmp_path, HOSTS), ca, clock)
    manager.run_due()
    first = status(tmp_path)["portway.test"]

    manager.reload(make_config(tmp_path, HOSTS, OTHER))
    records = status(tmp_path)
    assert records["portway.test"]["last_success"] == first["last_success"]
    assert records["api.portway.test"]["next_attempt"] <= clock()
    manager.run_due()
    assert ca.orders == [tuple(HOSTS), tuple(OTHER)]

    manager.reload(make_config(tmp_path, OTHER))
    assert list(status(tmp_path)) == ["api.portway.test"]
    assert config_files_exist(tmp_path, HOSTS)  # a removed certificate's files stay
    assert [r.hosts for r in read_status(AcmeConfig(state_dir=str(tmp_path)))] == [OTHER]


def config_files_exist(state: Path, hosts: list[str]) -> bool:
    folder = state / "certificates" / hosts[0]
    return (folder / "fullchain.pem").exists() and (folder / "privkey.pem").exists()


def test_each_certificate_is_listed_once(caplog: pytest.LogCaptureFixture) -> None:
    listener = {"certificates": [{"acme": True, "hosts": HOSTS}]}
    config = Config.model_validate(
        {
            "listeners": [
                {"address": "127.0.0.1:80"},
                {"address": "127.0.0.1:443", "tls": listener},
                {"address": "127.0.0.1:8443", "tls": listener},  # the same certificate again
                {
                    "address": "127.0.0.1:9443",
                    "tls": {"certificates": [{"acme": True, "hosts": ["portway.test"]}]},
                },
            ]
        }
    )
    with caplog.at_level(logging.ERROR, logger="portway.acme"):
        assert acme_certificates(config) == [tuple(HOSTS)]
    assert "would share the files of portway.test" in caplog.text


def test_challenge_files_left_by_an_interrupted_order_are_removed_at_start(
    tmp_path: Path, ca: FakeCA, clock: Clock
) -> None:
    config = make_config(tmp_path, HOSTS)
    config.acme.challenge_dir.mkdir(parents=True)
    (config.acme.challenge_dir / "stale-token-from-a-killed-process").write_text("x")
    CertificateManager(config, ca, clock)
    assert list(config.acme.challenge_dir.iterdir()) == []
