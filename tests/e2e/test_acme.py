"""ACME against a real CA: Debian's pebble validating HTTP-01 over loopback.

The manager tests serve the challenge folder with ``ChallengeServer`` (tests/support/pebble.py);
the ``portway run`` tests let Portway's own plain listener answer the CA, its HTTPS listener pick up
the issued files, and check the handshake with Python's ssl against pebble's root.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from portway.acme import AcmeClient, AcmeError, CertificateManager
from portway.config.model import Config
from tests.support.admin import admin_get, wait_until
from tests.support.backends import Backend
from tests.support.pebble import (
    ChallengeServer,
    Pebble,
    chain_of,
    challenge_server,
    dns_names_of,
    handshake,
    pebble,
    public_spki,
    spki,
)
from tests.support.processes import free_port, run_portway

# Fixtures, requested by name: listed here so the imports count as used (and are not redefined).
__all__ = ["challenge_server", "pebble"]

HOSTS = ["portway.test", "www.portway.test"]
# pebble validates at once: look at a pending authorization sooner than the default 0.5 s.
QUICK = functools.partial(AcmeClient, poll_interval=0.1)
OTHER = ["api.portway.test"]


class Clock:
    """Wall-clock time moved forward by ``offset`` seconds: a renewal point years away is reached
    without waiting for it."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def manager_config(ca: Pebble, state_dir: Path, *certificates: list[str], **acme: object) -> Config:
    return Config.model_validate(
        {
            "listeners": [
                {"address": "127.0.0.1:0"},
                {
                    "address": "127.0.0.1:0",
                    "tls": {"certificates": [{"acme": True, "hosts": h} for h in certificates]},
                },
            ],
            "acme": ca.acme_settings(state_dir, **acme),
        }
    )


def status_document(state_dir: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((state_dir / "status.json").read_text())
    return document


def status_of(state_dir: Path) -> dict[str, dict[str, Any]]:
    """status.json's records by first host."""
    return {r["hosts"][0]: r for r in status_document(state_dir)["certificates"]}


# ------------------------------------------------------------------------------------ manager


def test_manager_obtains_a_certificate_from_pebble(
    pebble: Pebble, challenge_server: ChallengeServer, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    challenge_server.folder = state / "challenges"
    manager = CertificateManager(manager_config(pebble, state, HOSTS), QUICK)
    before = status_of(state)["portway.test"]
    assert before["serial"] is None and before["next_attempt"] <= time.time()  # due at once

    started = time.time()
    next_attempt = manager.run_due()
    finished = time.time()

    cert_file = state / "certificates" / "portway.test" / "fullchain.pem"
    key_file = state / "certificates" / "portway.test" / "privkey.pem"
    chain = chain_of(cert_file)
    pebble.assert_issued(chain, HOSTS)
    leaf = chain[0]
    assert spki(key_file.read_bytes()) == public_spki(leaf)
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    assert os.stat(cert_file).st_mode & 0o777 == 0o644

    record = status_of(state)["portway.test"]
    not_before = leaf.not_valid_before_utc.timestamp()
    not_after = leaf.not_valid_after_utc.timestamp()
    assert record["hosts"] == HOSTS
    assert record["cert_file"] == str(cert_file) and record["key_file"] == str(key_file)
    assert record["serial"] == f"{leaf.serial_number:x}"
    assert record["issuer"] == leaf.issuer.rfc4514_string()
    assert (record["not_before"], record["not_after"]) == (not_before, not_after)
    assert record["renew_at"] == pytest.approx(
        not_before + 2 / 3 * (not_after - not_before), abs=1e-3
    )
    assert record["next_attempt"] == record["renew_at"] == next_attempt
    assert started <= record["last_success"] <= finished
    assert (record["last_failure"], record["last_error"], record["failures"]) == (None, None, 0)

    # HTTP-01 really happened: pebble fetched one token per host, and the files are gone since.
    assert len(set(challenge_server.requested)) == len(HOSTS)
    assert list((state / "challenges").iterdir()) == []
    registration = json.loads((state / "account" / "registration.json").read_text())
    assert registration["directory_url"] == pebble.directory_url
    assert registration["registration"]["uri"].startswith(f"https://127.0.0.1:{pebble.acme_port}/")
    for name in ("key.pem", "registration.json"):
        assert os.stat(state / "account" / name).st_mode & 0o777 == 0o600


def test_certificate_is_renewed_once_renew_after_of_its_lifetime_has_passed(
    challenge_server: ChallengeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    challenge_server.folder = state / "challenges"
    # pebble issues for 4 s (a 3 s lifetime: its notAfter is inclusive), renewed halfway.
    with Pebble(tmp_path / "pebble", challenge_server.port, validity=4) as short:
        config = manager_config(short, state, HOSTS, renew_after=0.5, retry_interval="1s")
        manager = CertificateManager(config, QUICK)
        manager.run_due()
        cert_file, key_file = config.acme.certificate_paths(HOSTS)
        first_chain, first_key = cert_file.read_bytes(), key_file.read_bytes()
        first = status_of(state)["portway.test"]
        old = chain_of(cert_file)[0]
        lifetime = (old.not_valid_after_utc - old.not_valid_before_utc).total_seconds()
        assert lifetime == 3
        assert first["renew_at"] == pytest.approx(first["not_before"] + lifetime / 2, abs=1e-3)

        asked = len(challenge_server.requested)
        assert manager.run_due() == first["next_attempt"]  # not due yet: nothing happens
        assert len(challenge_server.requested) == asked
        assert cert_file.read_bytes() == first_chain

        time.sleep(max(0.0, first["next_attempt"] - time.time()))
        with caplog.at_level(logging.INFO, logger="portway.acme"):
            manager.run_due()

        new = chain_of(cert_file)
        short.assert_issued(new, HOSTS)
        assert new[0].serial_number != old.serial_number
        assert new[0].not_valid_after_utc > old.not_valid_after_utc
        assert key_file.read_bytes() != first_key  # a fresh key with every certificate
        assert spki(key_file.read_bytes()) == public_spki(new[0])
        record = status_of(state)["portway.test"]
        assert record["serial"] == f"{new[0].serial_number:x}"
        assert record["not_after"] == new[0].not_valid_after_utc.timestamp()
        assert record["last_success"] > first["last_success"]
        assert record["next_attempt"] > first["next_attempt"]
        assert any(
            "renewed the certificate for portway.test, www.portway.test" in r.getMessage()
            for r in caplog.records
        )


def test_failed_renewal_keeps_the_files_records_the_failure_and_retries_later(
    pebble: Pebble,
    challenge_server: ChallengeServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = tmp_path / "state"
    challenge_server.folder = state / "challenges"
    clock = Clock()
    config = manager_config(pebble, state, HOSTS, retry_interval="60s")
    manager = CertificateManager(config, QUICK, clock)
    manager.run_due()
    cert_file, key_file = config.acme.certificate_paths(HOSTS)
    files = cert_file.read_bytes(), key_file.read_bytes()
    issued = status_of(state)["portway.test"]

    # The renewal point is reached, but the plain listener does not answer the CA: 404.
    clock.offset = issued["renew_at"] - time.time() + 1
    challenge_server.serving = False
    with caplog.at_level(logging.ERROR, logger="portway.acme"):
        manager.run_due()
    assert (cert_file.read_bytes(), key_file.read_bytes()) == files
    assert list(config.acme.challenge_dir.iterdir()) == []  # cleaned up after a failure too
    record = status_of(state)["portway.test"]
    failed_at = record["last_failure"]
    assert failed_at == pytest.approx(clock(), abs=5)
    assert record["failures"] == 1 and record["last_success"] == issued["last_success"]
    assert record["serial"] == issued["serial"] and record["not_after"] == issued["not_after"]
    assert record["next_attempt"] == pytest.approx(failed_at + 60, abs=1e-3)
    # pebble's own words, with whichever host it tried first.
    assert re.fullmatch(
        r"validating (www\.)?portway\.test failed: Non-200 status code from HTTP: "
        rf"http://(www\.)?portway\.test:{challenge_server.port}/\.well-known/acme-challenge/"
        r"[\w-]+ returned 404 \(unauthorized\)",
        record["last_error"],
    ), record["last_error"]
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(
        "could not renew the certificate for portway.test, www.portway.test" in line
        and "404" in line
        and "the current certificate stays in use" in line
        for line in logged
    ), logged

    asked = len(challenge_server.requested)
    manager.run_due()  # within retry_interval: no new order
    assert len(challenge_server.requested) == asked and status_of(state)["portway.test"] == record

    # After retry_interval the CA itself is gone: another failure, files still untouched.
    pebble.stop_server()
    clock.offset += 61
    manager.run_due()
    assert (cert_file.read_bytes(), key_file.read_bytes()) == files
    record = status_of(state)["portway.test"]
    assert record["failures"] == 2
    assert record["last_error"] == (
        f"fetching the ACME directory: cannot reach the ACME server {pebble.directory_url}: "
        "Connection refused"
    )

    # The CA is back (a new pebble on the same URL: it forgot the account) and the challenge is
    # served: the next attempt registers again and renews.
    pebble.start()
    challenge_server.serving = True
    clock.offset += 61
    manager.run_due()
    record = status_of(state)["portway.test"]
    assert (record["failures"], record["last_error"]) == (0, None)
    assert record["serial"] != issued["serial"]
    pebble.assert_issued(chain_of(cert_file), HOSTS)


def test_account_is_reused_across_manager_restarts(
    pebble: Pebble, challenge_server: ChallengeServer, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    challenge_server.folder = state / "challenges"
    first = CertificateManager(manager_config(pebble, state, HOSTS), QUICK)
    first.run_due()
    first.close()
    account_key = (state / "account" / "key.pem").read_bytes()
    url = json.loads((state / "account" / "registration.json").read_text())["registration"]["uri"]
    cert_file = state / "certificates" / "portway.test" / "fullchain.pem"
    issued = cert_file.read_bytes()

    # A new process with one more certificate: the existing one is not due, the new one is.
    config = manager_config(pebble, state, HOSTS, OTHER)
    second = CertificateManager(config, QUICK)
    records = status_of(state)
    assert records["portway.test"]["next_attempt"] == records["portway.test"]["renew_at"]
    assert records["portway.test"]["last_success"] is not None  # history read back
    assert records["api.portway.test"]["next_attempt"] <= time.time()
    second.run_due()

    assert cert_file.read_bytes() == issued
    pebble.assert_issued(chain_of(config.acme.certificate_paths(OTHER)[0]), OTHER)
    assert (state / "account" / "key.pem").read_bytes() == account_key
    assert AcmeClient(config.acme).account_url() == url
    registration = json.loads((state / "account" / "registration.json").read_text())
    assert registration["registration"]["uri"] == url
    log = pebble.log()
    assert "There are now 1 accounts in memory" in log
    assert "There are now 2 accounts" not in log


def test_untrusted_acme_server_certificate_gives_a_clear_error(
    pebble: Pebble, tmp_path: Path
) -> None:
    settings = pebble.acme_settings(tmp_path / "state")
    del settings["ca_file"]  # pebble's HTTPS certificate is not in the system store
    config = Config.model_validate({"acme": settings})
    with pytest.raises(AcmeError) as caught:
        AcmeClient(config.acme).account_url()
    assert str(caught.value) == (
        f"fetching the ACME directory: TLS with the ACME server 127.0.0.1:{pebble.acme_port} "
        "failed: unable to get local issuer certificate; acme.ca_file names a CA bundle to trust"
    )


# ------------------------------------------------------------------------------- portway run


def portway_config(
    backend: Backend, http_port: int, https_port: int, certificates: list[dict[str, Any]],
    acme: dict[str, object],
) -> str:  # fmt: skip
    return yaml.safe_dump(
        {
            "listeners": [
                {"address": f"127.0.0.1:{http_port}"},
                {
                    "address": f"127.0.0.1:{https_port}",
                    "tls": {"certificates": certificates, "reload_interval": "200ms"},
                },
            ],
            "services": {"web": {"instances": [backend.address]}},
            "routes": [{"service": "web"}],
            "acme": acme,
        }
    )


def test_portway_run_obtains_and_serves_an_acme_certificate(tmp_path: Path) -> None:
    http_port, https_port = free_port(), free_port()
    state = tmp_path / "state"
    with (
        Pebble(tmp_path / "pebble", http_port=http_port) as ca,
        Backend("web") as backend,
    ):
        acme = ca.acme_settings(state, retry_interval="1s")
        text = portway_config(
            backend, http_port, https_port, [{"acme": True, "hosts": HOSTS}], acme
        )
        with run_portway(text, workers=2) as gateway:
            gateway.wait_for_stderr(r"ACME process started as pid \d+")
            served = wait_until(
                lambda: handshake(https_port, "www.portway.test", ca.root_pem()), 20
            )
            assert served is not None, gateway.stderr_text()
            peer, response = served
            assert dns_names_of(peer) == sorted(HOSTS)
            issuer = dict(item for rdn in peer["issuer"] for item in rdn)
            assert issuer["commonName"].startswith("Pebble Intermediate CA")
            head, _, body = response.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")  # proxied to the backend over HTTPS
            echoed = json.loads(body)
            assert echoed["backend"] == "web"
            assert echoed["headers"]["x-forwarded-proto"] == "https"
            record = status_of(state)["portway.test"]
            served_serial = int(peer["serialNumber"], 16)
            assert record["serial"] == f"{served_serial:x}" and record["last_error"] is None
            assert "There are now 1 accounts in memory" in ca.log()
            # The admin API shows the ACME record and the served certificate; metrics too.
            admin_port = gateway.admin_port

            def issued_and_reported() -> list[dict[str, Any]] | None:
                listed = admin_get(admin_port, "/certificates").json()["certificates"]
                return listed if listed and listed[0]["source"] != "acme" else None

            certificates = wait_until(issued_and_reported)
            assert certificates is not None
            assert certificates[0]["serial"] == record["serial"]
            acme = admin_get(admin_port, "/certificates").json()["acme"]
            assert [r["hosts"] for r in acme] == [HOSTS]
            metrics = admin_get(admin_port, "/metrics").text
            assert 'portway_acme_consecutive_failures{certificate="portway.test"} 0.0' in metrics
            found = re.search(
                r'portway_acme_last_success_timestamp_seconds\{certificate="portway.test"\} (\S+)',
                metrics,
            )
            assert found is not None and abs(float(found[1]) - record["last_success"]) < 1.0
            assert gateway.stop() == 0
        assert "did not stop in time" not in gateway.stderr_text()


def test_a_reload_starts_the_acme_process_and_it_follows_new_certificates(
    tmp_path: Path,
) -> None:
    http_port, https_port = free_port(), free_port()
    state = tmp_path / "state"
    files = trustme.CA().issue_cert("files.test")
    own = tmp_path / "files.pem"
    files.private_key_and_cert_chain_pem.write_to_path(str(own))
    certificates: list[dict[str, Any]] = [{"cert_file": str(own), "key_file": str(own)}]
    with (
        Pebble(tmp_path / "pebble", http_port=http_port) as ca,
        Backend("web") as backend,
    ):
        acme = ca.acme_settings(state, retry_interval="1s")
        with run_portway(portway_config(backend, http_port, https_port, certificates, acme)) as gw:
            assert "ACME process" not in gw.stderr_text()  # no acme certificate, no process

            certificates.append({"acme": True, "hosts": HOSTS})
            gw.config_path.write_text(
                portway_config(backend, http_port, https_port, certificates, acme)
            )
            os.kill(gw.proc.pid, signal.SIGHUP)
            started = gw.wait_for_stderr(r"ACME process started as pid (\d+)", timeout=10)
            served = wait_until(lambda: handshake(https_port, "portway.test", ca.root_pem()), 20)
            assert served is not None, gw.stderr_text()

            # The running process follows the next reload: one more certificate.
            certificates.append({"acme": True, "hosts": OTHER})
            gw.config_path.write_text(
                portway_config(backend, http_port, https_port, certificates, acme)
            )
            os.kill(gw.proc.pid, signal.SIGHUP)
            served = wait_until(lambda: handshake(https_port, OTHER[0], ca.root_pem()), 20)
            assert served is not None, gw.stderr_text()
            assert dns_names_of(served[0]) == OTHER
            pid = int(started.group(1))
            assert pid in gw.pids()  # the same process, reloaded
            records = status_of(state)
            assert set(records) == {"portway.test", "api.portway.test"}

            # Killed, it is restarted; its certificates are valid, so it orders nothing.
            killed_at = time.time()
            os.kill(pid, signal.SIGKILL)
            again = gw.wait_for_stderr(r"ACME process restarted as pid (\d+)", timeout=10)
            assert int(again.group(1)) != pid
            assert wait_until(lambda: status_document(state)["updated"] > killed_at, 10)
            for host, record in status_of(state).items():
                assert record["serial"] == records[host]["serial"]
                assert record["next_attempt"] == record["renew_at"] > time.time() + 365 * 86400
            assert ca.log().count("Issued certificate serial") == 2
            assert gw.stop() == 0
        assert "did not stop in time" not in gw.stderr_text()
