"""A listener as a worker serves it: its kind (HTTP, HTTPS, passthrough) and per-listener state.

Plain and HTTPS listeners speak HTTP/1.1 through ``ClientConnection``; what differs is in
``Listener``: the scheme forwarded upstream, the certificate store, HSTS, the redirect to HTTPS
and the ACME challenges a plain listener answers.
An HTTPS connection is accepted by ``TlsHandshake``: it runs the handshake through the loop's
``start_tls`` and only then hands the connection to a ``ClientConnection``. So a failed handshake
is seen with its reason (counted per listener), which a server started with ``ssl=`` would hide.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

from portway.config.model import Config, ListenerConfig
from portway.config.tls import HttpsRedirectConfig
from portway.observability.stats import WorkerStats
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
        if (listener.tls is None) != (self.store is None) or listener.passthrough:
            log.warning("listener %s changed kind: that takes effect on restart only", self.name)
            return
        if self.store is not None and listener.tls is not None and (
            listener.tls != self.store.policy or config.acme != self.store.acme
        ):
            self.store.configure(listener.tls, config.acme)
        self._apply(config, listener)

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


def handshake_failure(exc: BaseException) -> str:
    """A bounded label for why a handshake failed (metric label values must not be open-ended)."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return _FAILURES.get((exc.reason or "").lower(), "other")
    if isinstance(exc, ConnectionError | EOFError):
        return "closed"
    return "other"


class _Held(asyncio.Protocol):
    """Keeps what arrives between the handshake's end and the hand-over to the HTTP protocol."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False
        self.lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True  # stay open: the HTTP protocol decides

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)


class TlsHandshake(asyncio.Protocol):
    """Accepts one TCP connection of an HTTPS listener, shakes hands, hands over."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listener: Listener,
        stats: WorkerStats,
        connections: set[asyncio.Protocol],
        make_protocol: Callable[[], asyncio.Protocol],
        on_tls: Callable[[asyncio.Protocol, ssl.SSLObject], None],
    ) -> None:
        self.loop = loop
        self.listener = listener
        self.stats = stats
        self.connections = connections
        self.make_protocol = make_protocol
        self.on_tls = on_tls
        self.task: asyncio.Task[None] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        transport.pause_reading()  # type: ignore[attr-defined]  # start_tls reads the ClientHello, not this protocol
        self.connections.add(self)
        self.task = self.loop.create_task(self._handshake(self.transport))

    def close(self) -> None:
        """A drain closes connections still shaking hands."""
        if self.task is not None:
            self.task.cancel()

    idle = True  # no request in flight: a drain may close it at once

    async def _handshake(self, transport: asyncio.Transport) -> None:
        listener = self.listener
        store = listener.store
        assert store is not None
        held = _Held()
        try:
            tls = await self.loop.start_tls(
                transport,
                held,
                store.base,
                server_side=True,
                ssl_handshake_timeout=store.policy.handshake_timeout,
            )
        except asyncio.CancelledError:
            transport.abort()
            return
        except Exception as exc:  # any failure is the client's connection's alone
            self.stats.handshake(listener.name, handshake_failure(exc))
            transport.abort()
            return
        finally:
            self.connections.discard(self)
        if tls is None:  # the loop refused TLS on this transport
            transport.abort()
            return
        self.stats.handshake(listener.name, "ok")
        protocol = self.make_protocol()
        ssl_object = tls.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.on_tls(protocol, ssl_object)
        tls.set_protocol(protocol)
        protocol.connection_made(tls)
        for data in held.data:
            protocol.data_received(data)
        if held.lost is not None:
            protocol.connection_lost(held.lost[0])
        elif held.eof and not protocol.eof_received():
            tls.close()
