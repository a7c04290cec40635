"""One HTTPS listener's certificates: chosen by SNI, reloaded when their files change.

Every handshake starts on the listener's *base* context. Its SNI callback looks the name up (exact,
then the one-label wildcard, then the default certificate or a rejection) and switches the
connection to that certificate's context. Session tickets are sealed with the base context's keys,
so replacing the base context rotates them (``ticket_key_rotation``).

Certificate files are polled (``reload_interval``): a changed file is read and checked on a worker
thread, and only good material replaces the served one. Bad material is logged and counted, and
the previous certificate keeps serving. Open connections keep the context they started with.

mTLS and SNI: OpenSSL decides whether to ask for a client certificate before SNI is known, so a
listener with any mTLS certificate asks every client for one (``CERT_OPTIONAL``), and each
certificate's context verifies against its own hosts' CAs (or, without client_auth, the union of
the listener's CAs, so a client certificate sent unasked does not fail the handshake). Whether a
certificate is *required* is enforced per request (``tls.client_auth``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509

from portway.config.tls import AcmeConfig, CertificateConfig, ClientAuthConfig, ListenerTlsConfig
from portway.pki import (
    CertificateInfo,
    KeyPair,
    MaterialError,
    describe,
    load_ca_bundle,
    load_key_pair,
    self_signed,
)
from portway.tls.contexts import server_context
from portway.tls.sni_routes import lookup_name

log = logging.getLogger("portway.tls")

VERIFIED_CLIENTS = 10_000  # client certificates remembered per listener for resumed sessions
FileStamp = tuple[int, int, int] | None  # (mtime_ns, size, inode); None: missing


@dataclass(frozen=True, slots=True)
class ServedCertificate:
    """One certificate as a listener serves it."""

    position: int  # in the listener's certificates list
    hosts: tuple[str, ...]  # SNI names it answers
    context: ssl.SSLContext
    pair: KeyPair  # kept: a new base context is built from the default certificate's
    source: str  # the cert file, or "acme" while an ACME certificate is not issued yet
    client_auth: ClientAuthConfig | None
    client_issuers: tuple[x509.Certificate, ...]  # CAs that may issue this host's clients' certs
    stamps: tuple[FileStamp, ...]  # of the files it was read from, to notice changes

    @property
    def info(self) -> CertificateInfo:
        return self.pair.info


def _stamp(path: str) -> FileStamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class CertificateStore:
    """The certificates of one HTTPS listener, for its handshakes and for the admin API."""

    def __init__(
        self,
        name: str,
        policy: ListenerTlsConfig,
        acme: AcmeConfig,
        on_reload: Callable[[bool], None] = lambda ok: None,
    ) -> None:
        """Raises ``MaterialError`` when a certificate cannot be served. ``on_reload`` hears of
        every attempt to reload changed files (True: served; False: refused)."""
        self.name = name
        self.on_reload = on_reload
        self.exact: dict[str, ServedCertificate] = {}
        self.wildcard: dict[str, ServedCertificate] = {}
        self.served: list[ServedCertificate] = []
        self.failures: dict[int, str] = {}  # position -> why its changed files were refused
        # (certificate position, client certificate fingerprint) verified in a full handshake of
        # this worker: a resumed session (tickets are per worker) of one of them is trusted.
        self.verified_clients: OrderedDict[tuple[int, str], None] = OrderedDict()
        self.next_check = 0.0
        self.next_rotation = 0.0
        self._loading = False
        self.configure(policy, acme)

    # -- building ------------------------------------------------------------------------------

    def configure(self, policy: ListenerTlsConfig, acme: AcmeConfig) -> None:
        """Serve ``policy``'s certificates (all or nothing: raises ``MaterialError``)."""
        issuers = {
            position: tuple(load_ca_bundle(c.client_auth.ca_file))
            for position, c in enumerate(policy.certificates)
            if c.client_auth is not None
        }
        served = [
            self._build(policy, acme, position, certificate, issuers)
            for position, certificate in enumerate(policy.certificates)
        ]
        self.policy, self.acme, self.issuers = policy, acme, issuers
        self._install(served)
        self.failures = {}
        self.verified_clients.clear()  # the CAs may have changed
        self.base = self._base_context()

    @staticmethod
    def _files(certificate: CertificateConfig, acme: AcmeConfig) -> tuple[str, str]:
        if certificate.acme:
            cert, key = acme.certificate_paths(certificate.hosts)
            return str(cert), str(key)
        assert certificate.cert_file is not None and certificate.key_file is not None
        return certificate.cert_file, certificate.key_file

    def _build(
        self,
        policy: ListenerTlsConfig,
        acme: AcmeConfig,
        position: int,
        certificate: CertificateConfig,
        issuers: dict[int, tuple[x509.Certificate, ...]],
    ) -> ServedCertificate:
        cert_file, key_file = self._files(certificate, acme)
        stamps = (_stamp(cert_file), _stamp(key_file))
        source = cert_file
        if certificate.acme and None in stamps:
            pair = _placeholder(certificate.hosts)  # until the ACME process has issued it
            source = "acme"
        else:
            pair = load_key_pair(cert_file, key_file)
        own = issuers.get(position)
        trusted = own if own is not None else tuple(c for cas in issuers.values() for c in cas)
        context = server_context(policy, pair, trusted_clients=list(trusted) or None)
        return ServedCertificate(
            position=position,
            hosts=tuple(certificate.hosts) or pair.info.names,
            context=context,
            pair=pair,
            source=source,
            client_auth=certificate.client_auth,
            client_issuers=own or (),
            stamps=stamps,
        )

    def _install(self, served: list[ServedCertificate]) -> None:
        exact: dict[str, ServedCertificate] = {}
        wildcard: dict[str, ServedCertificate] = {}
        for certificate in served:
            for host in certificate.hosts:
                if host.startswith("*."):
                    wildcard.setdefault(host[2:], certificate)
                else:
                    exact.setdefault(host, certificate)
        default = self.policy.default_certificate
        chosen = served[0]
        if default is not None:
            chosen = exact.get(default) or wildcard.get(default[2:], served[0])
        # One assignment each, in an order where a handshake never sees a half-built state.
        self.default = chosen
        self.exact, self.wildcard, self.served = exact, wildcard, served

    def _base_context(self) -> ssl.SSLContext:
        base = server_context(
            self.policy,
            self.default.pair,
            trusted_clients=[c for cas in self.issuers.values() for c in cas] or None,
        )
        base.sni_callback = self._on_sni
        return base

    # -- handshakes ----------------------------------------------------------------------------

    def select(self, host: str | None) -> ServedCertificate | None:
        """The certificate for ``host``; the default one (or None under ``unknown_sni: reject``)
        for a name no certificate serves or no name at all."""
        if host:
            found = lookup_name(host, self.exact, self.wildcard)
            if found is not None:
                return found
        if host and self.policy.unknown_sni == "reject":
            return None
        return self.default

    def _on_sni(
        self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        name = server_name.lower().rstrip(".") if server_name else None
        chosen = self.select(name)
        if chosen is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        connection.context = chosen.context
        connection.portway_served = chosen  # type: ignore[attr-defined]  # read after the handshake
        connection.portway_sni = name  # type: ignore[attr-defined]
        return None

    def remember_verified(self, position: int, fingerprint: str) -> None:
        key = (position, fingerprint)
        self.verified_clients[key] = None
        self.verified_clients.move_to_end(key)
        if len(self.verified_clients) > VERIFIED_CLIENTS:
            self.verified_clients.popitem(last=False)

    def was_verified(self, position: int, fingerprint: str) -> bool:
        return (position, fingerprint) in self.verified_clients

    # -- changes over time ---------------------------------------------------------------------

    def tick(self, now: float, loop: asyncio.AbstractEventLoop) -> None:
        """Called often from the worker's sweeper: rotate ticket keys, look for changed files."""
        if now >= self.next_rotation:
            if self.next_rotation:
                self.base = self._base_context()
            self.next_rotation = now + self.policy.ticket_key_rotation
        if now >= self.next_check and not self._loading:
            self.next_check = now + self.policy.reload_interval
            changed = [s for s in self.served if self._stamps(s) != s.stamps]
            if changed:
                self._loading = True
                future = loop.run_in_executor(None, self._reload, changed)
                future.add_done_callback(self._reloaded)

    def _stamps(self, served: ServedCertificate) -> tuple[FileStamp, ...]:
        cert_file, key_file = self._files(self.policy.certificates[served.position], self.acme)
        return (_stamp(cert_file), _stamp(key_file))

    def _reload(
        self, changed: list[ServedCertificate]
    ) -> list[tuple[ServedCertificate, ServedCertificate | str, tuple[FileStamp, ...]]]:
        """On a worker thread: each changed certificate rebuilt, or why it cannot be, with the
        stamps of the files as they were before they were read."""
        results: list[tuple[ServedCertificate, ServedCertificate | str, tuple[FileStamp, ...]]]
        results = []
        for old in changed:
            certificate = self.policy.certificates[old.position]
            # Taken before reading: a file replaced while (or after) it was read differs from
            # these stamps, so it is read again at the next check.
            stamps = self._stamps(old)
            try:
                new = self._build(self.policy, self.acme, old.position, certificate, self.issuers)
            except (MaterialError, ssl.SSLError) as exc:
                results.append((old, str(exc), stamps))
            else:
                results.append((old, new, new.stamps))
        return results

    def _reloaded(self, future: asyncio.Future[Any]) -> None:
        self._loading = False
        if future.cancelled():
            return
        if future.exception() is not None:
            log.error("listener %s: certificate reload failed: %s", self.name, future.exception())
            self.on_reload(False)
            return
        served = list(self.served)
        for old, result, stamps in future.result():
            if old.position >= len(served) or served[old.position] is not old:
                continue  # the config was reloaded meanwhile and read the files afresh
            if isinstance(result, str):
                if self.failures.get(old.position) != result:
                    log.error(
                        "listener %s: certificate %d not reloaded, the previous one keeps "
                        "serving: %s",
                        self.name,
                        old.position,
                        result,
                    )
                self.failures[old.position] = result
                # Remember the bad files so that they are not re-read until they change again.
                served[old.position] = replace(old, stamps=stamps)
                self.on_reload(False)
                continue
            self.failures.pop(old.position, None)
            served[old.position] = result
            log.info(
                "listener %s: serving the new certificate for %s (expires %s)",
                self.name,
                ", ".join(result.hosts),
                f"{result.info.not_after:%Y-%m-%d}",
            )
            self.on_reload(True)
        previous_default = self.default
        self._install(served)
        # The base context carries the default certificate: rebuild it when that one changed
        # (not for refused files, whose entry only records their stamps).
        if self.default.pair is not previous_default.pair:
            self.base = self._base_context()

    def describe(self) -> list[dict[str, object]]:
        """Every certificate served, for the admin API and metrics."""
        return [
            {
                "listener": self.name,
                "position": s.position,
                "hosts": list(s.hosts),
                "names": list(s.info.names),
                "subject": s.info.subject,
                "issuer": s.info.issuer,
                "serial": s.info.serial,
                "not_before": s.info.not_before.isoformat(),
                "not_after": s.info.not_after.isoformat(),
                "fingerprint_sha256": s.info.fingerprint_sha256,
                "source": s.source,
                "default": s is self.default,
                "client_auth": s.client_auth.mode if s.client_auth is not None else None,
                "reload_error": self.failures.get(s.position),
            }
            for s in self.served
        ]


def _placeholder(hosts: list[str]) -> KeyPair:
    chain, key = self_signed(hosts)
    return KeyPair(chain, key, describe(x509.load_pem_x509_certificate(chain)))
