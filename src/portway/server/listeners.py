"""A listener as a worker serves it: its kind (HTTP, HTTPS, passthrough) and per-listener state.

Plain and HTTPS listeners speak HTTP/1.1 through ``ClientConnection``; what differs is in
``Listener``: the scheme forwarded upstream, the certificate store, HSTS, the redirect to HTTPS
and the ACME challenges a plain listener answers.
HTTPS connections are accepted by ``server.tls_accept``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from pathlib import Path

from portway.config.model import Config, ListenerConfig
from portway.config.tls import HttpsRedirectConfig
from portway.observability.stats import WorkerStats
from portway.proxy.service import Service
from portway.tls.sni_routes import SniRoutes, compile_sni_routes
from portway.tls.store import CertificateStore

log = logging.getLogger("portway.listeners")

ACME_CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


def listener_name(config: ListenerConfig, index: int) -> str:
    return config.name or f"listener-{index}"


class Listener:
    """One configured listener of one worker; reconfigured in place on reload."""

    __slots__ = (
        "challenge_dir",
        "config",
        "hsts",
        "index",
        "name",
        "port",
        "proto",
        "redirect",
        "sni",
        "store",
    )

    def __init__(self, config: Config, index: int, port: int, stats: WorkerStats) -> None:
        """Raises ``MaterialError`` when a certificate cannot be served."""
        listener = config.listeners[index]
        self.index = index
        self.port = port
        self.name = listener_name(listener, index)
        self.proto = b"https" if listener.tls is not None else b"http"
        self.store: CertificateStore | None = None
        self.sni: SniRoutes[Service] | None = None  # a passthrough listener's, see use_services
        if listener.tls is not None:
            name = self.name
            self.store = CertificateStore(
                name,
                listener.tls,
                config.acme,
                on_reload=lambda ok: stats.certificate_reloaded(name, ok),
            )
        self._apply(config, listener)

    def _apply(self, config: Config, listener: ListenerConfig) -> None:
        self.config = listener
        hsts = listener.tls.hsts if listener.tls is not None else None
        self.hsts = hsts.header_value().encode("ascii") if hsts is not None else None
        self.redirect: HttpsRedirectConfig | None = listener.https_redirect
        # Plain listeners answer the CA's HTTP-01 challenges when ACME certificates exist.
        wants_acme = any(
            c.acme for lc in config.listeners if lc.tls is not None for c in lc.tls.certificates
        )
        self.challenge_dir: Path | None = (
            config.acme.challenge_dir if wants_acme and listener.tls is None else None
        )

    def reconfigure(self, config: Config) -> None:
        """Follow a new config for the same address (certificates, HSTS, redirect); raises
        ``MaterialError`` and changes nothing when a certificate cannot be served."""
        listener = config.listeners[self.index]
        if _kind(listener) != _kind(self.config):
            log.warning("listener %s changed kind: that takes effect on restart only", self.name)
            return
        if self.store is not None and listener.tls is not None and (
            listener.tls != self.store.policy or config.acme != self.store.acme
        ):
            self.store.configure(listener.tls, config.acme)
        self._apply(config, listener)

    def use_services(self, services: Mapping[str, Service]) -> None:
        """Route a passthrough listener's SNI names to ``services`` (a new snapshot's)."""
        passthrough = self.config.passthrough
        if passthrough is not None:
            self.sni = compile_sni_routes(passthrough, services)
            for problem in self.sni.diagnostics:
                log.warning("listener %s: %s", self.name, problem)

    def sni_routes(self) -> SniRoutes[Service]:
        """The current SNI table of a passthrough listener (reloads replace it)."""
        assert self.sni is not None, "use_services before serving a passthrough listener"
        return self.sni

    @property
    def handles_specially(self) -> bool:
        """Does a request on this listener need more than routing (redirect, challenges, HSTS,
        client certificates)?"""
        return (
            self.redirect is not None
            or self.challenge_dir is not None
            or self.hsts is not None
            or (self.store is not None and any(s.client_auth for s in self.store.served))
        )


def _kind(listener: ListenerConfig) -> str:
    if listener.passthrough is not None:
        return "passthrough"
    return "https" if listener.tls is not None else "http"


_FAILURES = {
    "http_request": "not_tls",
    "https_proxy_request": "not_tls",
    "wrong_version_number": "not_tls",
    "unsupported_protocol": "protocol_version",
    "tlsv1_alert_protocol_version": "protocol_version",
    "no_shared_cipher": "no_shared_cipher",
    "no_application_protocol": "no_application_protocol",
    "certificate_verify_failed": "client_certificate_invalid",
    "peer_did_not_return_a_certificate": "client_certificate_missing",
    "tlsv1_alert_unknown_ca": "certificate_rejected_by_client",
    "sslv3_alert_bad_certificate": "certificate_rejected_by_client",
    "sslv3_alert_certificate_expired": "certificate_rejected_by_client",
    "sslv3_alert_certificate_unknown": "certificate_rejected_by_client",
    "callback_failed": "unrecognized_name",
    "tlsv1_alert_unrecognized_name": "unrecognized_name",
}


_HANDSHAKE_TIMEOUT = "SSL handshake is taking longer than"


def handshake_failure(exc: BaseException) -> str:
    """A bounded label for why a handshake failed (metric label values must not be open-ended)."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    # ``ssl_handshake_timeout`` expiring: uvloop (and asyncio's sslproto) abort the connection
    # with this error, not a TimeoutError.
    if isinstance(exc, ConnectionAbortedError) and _HANDSHAKE_TIMEOUT in str(exc):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return _FAILURES.get((exc.reason or "").lower(), "other")
    if isinstance(exc, ConnectionError | EOFError):
        return "closed"
    return "other"
