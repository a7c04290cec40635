"""Which ACME certificates are due, getting them, and keeping the files the listeners serve.

For each ``acme: true`` certificate of the config: no usable files at
``AcmeConfig.certificate_paths(hosts)`` (missing, expired, not matching their key, or not covering
the hosts) means obtain one now; usable files are renewed once ``renew_after`` of their lifetime
(not_before .. not_after) has passed, early enough that a failing CA leaves time to retry.

Files are only ever replaced by a complete, checked certificate and key: a failed order keeps the
files that are being served, logs the hosts and the reason, and is tried again ``retry_interval``
later, also across restarts of the process (the back-off is read back from ``status.json``), so a
crash loop does not become a storm of failed validations at the CA.

The manager blocks (it calls ``AcmeClient``); ``process.py`` runs it in a thread.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from portway.acme.client import AcmeClient, AcmeError, IssuedCertificate
from portway.acme.files import remove_quietly, write_atomic
from portway.acme.status import CertificateStatus, read_status, write_status
from portway.config.model import Config
from portway.config.tls import AcmeConfig
from portway.pki import CertificateInfo, MaterialError, describe, load_key_pair

log = logging.getLogger("portway.acme")

Hosts = tuple[str, ...]


class Issuer(Protocol):
    """What the manager needs from an ACME client (``AcmeClient``; a fake in unit tests)."""

    def account_url(self) -> str: ...

    def obtain(self, hosts: Sequence[str]) -> IssuedCertificate: ...

    def close(self) -> None: ...


IssuerFactory = Callable[[AcmeConfig], Issuer]


def acme_certificates(config: Config) -> list[Hosts]:
    """The host lists of the config's ``acme: true`` certificates, each once, in config order.

    Two listeners may list the same certificate; they share its files. Certificates are stored
    under their first host, so a second, different host list with the same first host cannot
    have files of its own: it is skipped with an error.
    """
    found: dict[str, Hosts] = {}
    for listener in config.listeners:
        if listener.tls is None:
            continue
        for certificate in listener.tls.certificates:
            if not certificate.acme:
                continue
            hosts = tuple(certificate.hosts)
            known = found.setdefault(hosts[0], hosts)
            if known != hosts:
                log.error(
                    "ACME: certificates for %s and for %s would share the files of %s; "
                    "only the first is obtained",
                    ", ".join(known),
                    ", ".join(hosts),
                    hosts[0],
                )
    return list(found.values())


def needs_acme(config: Config) -> bool:
    return bool(acme_certificates(config))


def _timestamp(moment: dt.datetime) -> float:
    return moment.timestamp()


def _when(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class CertificateManager:
    """Keeps the config's ACME certificates obtained and renewed; see the module docstring."""

    def __init__(
        self,
        config: Config,
        issuer_factory: IssuerFactory = AcmeClient,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.acme = config.acme
        self.issuer_factory = issuer_factory
        self.clock = clock
        self._issuer: Issuer | None = None
        self.records: dict[Hosts, CertificateStatus] = {}
        self._clean_challenges()
        previous = {tuple(r.hosts): r for r in read_status(self.acme)}
        self._follow(config, previous)

    # ------------------------------------------------------------------------------ the config

    def reload(self, config: Config) -> None:
        """Follow a new config: new certificates are looked at now, removed ones forgotten (their
        files stay), the others keep their history. New ACME settings mean a new client."""
        changed = config.acme != self.acme
        if changed:
            self._drop_issuer()
            self.acme = config.acme
        # New settings may be the fix for what failed: then failed certificates are tried now.
        self._follow(config, self.records, keep_backoff=not changed)

    def _follow(
        self, config: Config, previous: dict[Hosts, CertificateStatus], keep_backoff: bool = True
    ) -> None:
        now = self.clock()
        records: dict[Hosts, CertificateStatus] = {}
        for hosts in acme_certificates(config):
            record = self._inspect(hosts, now)
            old = previous.get(hosts)
            if old is not None:
                record.last_success, record.last_failure = old.last_success, old.last_failure
                record.last_error, record.failures = old.last_error, old.failures
                if keep_backoff and old.failures and old.next_attempt > now:
                    record.next_attempt = max(record.next_attempt, old.next_attempt)
            records[hosts] = record
        self.records = records
        self._save()

    def _inspect(self, hosts: Hosts, now: float) -> CertificateStatus:
        """The record of what is on disk for ``hosts``, due now unless the files are usable."""
        cert_path, key_path = self.acme.certificate_paths(list(hosts))
        record = CertificateStatus(list(hosts), str(cert_path), str(key_path), next_attempt=now)
        label = ", ".join(hosts)
        try:
            pair = load_key_pair(
                str(cert_path), str(key_path), dt.datetime.fromtimestamp(now, dt.UTC)
            )
        except MaterialError as exc:
            if cert_path.exists() or key_path.exists():
                log.warning("ACME: %s: %s; a new certificate will be obtained", label, exc)
            return record
        self._describe(record, pair.info)
        missing = [host for host in hosts if host not in pair.info.names]
        if missing:
            log.info("ACME: %s does not cover %s; a new one will be obtained", cert_path, missing)
        else:
            assert record.renew_at is not None
            record.next_attempt = record.renew_at
        return record

    def _describe(self, record: CertificateStatus, info: CertificateInfo) -> None:
        record.serial, record.issuer = info.serial, info.issuer
        record.not_before = _timestamp(info.not_before)
        record.not_after = _timestamp(info.not_after)
        lifetime = record.not_after - record.not_before
        record.renew_at = record.not_before + self.acme.renew_after * lifetime

    # --------------------------------------------------------------------------------- running

    def next_attempt(self) -> float:
        """When the next certificate is due (Unix seconds); infinity if there is none."""
        return min((r.next_attempt for r in self.records.values()), default=math.inf)

    def run_due(self) -> float:
        """Obtain or renew every certificate whose time has come; return ``next_attempt()``."""
        due = [r for r in self.records.values() if r.next_attempt <= self.clock()]
        if not due:
            return self.next_attempt()
        try:
            issuer = self._connect()
        except AcmeError as exc:  # one reason for all of them, found with one try
            for record in due:
                self._failed(record, str(exc))
            self._drop_issuer()
            return self.next_attempt()
        for record in due:
            self._attempt(issuer, record)
        return self.next_attempt()

    def close(self) -> None:
        self._drop_issuer()

    def _connect(self) -> Issuer:
        if self._issuer is None:
            self._issuer = self.issuer_factory(self.acme)
            try:
                self._issuer.account_url()  # connects, registering the account if need be
            except BaseException:
                self._drop_issuer()
                raise
        return self._issuer

    def _drop_issuer(self) -> None:
        if self._issuer is not None:
            self._issuer.close()
            self._issuer = None

    def _attempt(self, issuer: Issuer, record: CertificateStatus) -> None:
        label = ", ".join(record.hosts)
        try:
            issued = issuer.obtain(record.hosts)
            info = _check(issued)
            self._install(record, issued)
        except AcmeError as exc:
            self._failed(record, str(exc))
            self._drop_issuer()  # reconnect next time: the CA may have restarted or moved on
            return
        except OSError as exc:
            self._failed(record, f"cannot write the certificate files: {exc}")
            return
        except Exception as exc:  # a bug must not stop the other certificates' renewals
            log.exception("ACME: unexpected error for %s", label)
            self._failed(record, f"unexpected error: {exc!r}")
            self._drop_issuer()
            return
        now = self.clock()
        renewed = record.not_after is not None
        self._describe(record, info)
        assert record.renew_at is not None
        record.last_success, record.last_error, record.failures = now, None, 0
        record.next_attempt = max(record.renew_at, now + self.acme.retry_interval)
        self._save()
        log.info(
            "ACME: %s the certificate for %s (serial %s, issued by %s, valid until %s); "
            "renewal from %s",
            "renewed" if renewed else "obtained",
            label,
            info.serial,
            info.issuer,
            _when(record.not_after or 0.0),
            _when(record.next_attempt),
        )

    def _install(self, record: CertificateStatus, issued: IssuedCertificate) -> None:
        """Write the key, then the chain: a reader that notices the new chain finds its key."""
        write_atomic(Path(record.key_file), issued.key_pem, mode=0o600)
        write_atomic(Path(record.cert_file), issued.fullchain_pem, mode=0o644)

    def _failed(self, record: CertificateStatus, reason: str) -> None:
        now = self.clock()
        record.last_failure, record.last_error = now, reason
        record.failures += 1
        record.next_attempt = now + self.acme.retry_interval
        self._save()
        kept = (
            "the current certificate stays in use"
            if record.not_after is not None
            else "there is no certificate yet"
        )
        log.error(
            "ACME: could not %s the certificate for %s: %s; %s; next attempt in %gs",
            "renew" if record.not_after is not None else "obtain",
            ", ".join(record.hosts),
            reason,
            kept,
            self.acme.retry_interval,
        )

    def _save(self) -> None:
        try:
            write_status(self.acme, self.records.values(), self.clock())
        except OSError as exc:
            log.error("ACME: cannot write the status file in %s: %s", self.acme.state_dir, exc)

    def _clean_challenges(self) -> None:
        """Tokens left by an order that was cut short (the process was stopped) are of no use."""
        folder = self.acme.challenge_dir
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file():
                    remove_quietly(path)


def _check(issued: IssuedCertificate) -> CertificateInfo:
    """What the CA sent, checked before it replaces anything: a chain whose leaf covers the hosts
    and matches the key."""
    label = ", ".join(issued.hosts)
    try:
        chain = x509.load_pem_x509_certificates(issued.fullchain_pem)
        key = serialization.load_pem_private_key(issued.key_pem, password=None)
    except ValueError as exc:
        raise AcmeError(f"the certificate issued for {label} is unreadable: {exc}") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != chain[0].public_key().public_bytes(der, spki):
        raise AcmeError(f"the certificate issued for {label} does not match its key")
    info = describe(chain[0])
    missing = [host for host in issued.hosts if host not in info.names]
    if missing:
        raise AcmeError(f"the certificate issued for {label} does not cover {', '.join(missing)}")
    return info
