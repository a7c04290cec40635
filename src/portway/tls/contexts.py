"""``ssl.SSLContext`` objects built from checked material and a listener's or service's policy.

Python's ``load_cert_chain`` reads files only. Material is checked in memory first (``pki``), so
it is handed to OpenSSL through a private temporary file in a RAM-backed directory where there is
one: what is served is exactly what was checked, even if the file changes in between.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from portway.config.tls import ListenerTlsConfig, TlsVersion, UpstreamTlsConfig
from portway.pki import KeyPair, load_ca_bundle, load_key_pair

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_RAM_DIR = "/dev/shm" if Path("/dev/shm").is_dir() else None


def load_pair_into(context: ssl.SSLContext, pair: KeyPair) -> None:
    """``context.load_cert_chain`` from PEM bytes."""
    fd, name = tempfile.mkstemp(prefix="portway-", suffix=".pem", dir=_RAM_DIR)
    try:
        with os.fdopen(fd, "wb") as file:  # mkstemp makes it 0600
            file.write(pair.key_pem.rstrip(b"\n") + b"\n" + pair.chain_pem)
        context.load_cert_chain(name)
    finally:
        os.unlink(name)


def ca_pem(certificates: list[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certificates)


def _policy(context: ssl.SSLContext, min_version: TlsVersion) -> None:
    context.minimum_version = _VERSIONS[min_version]
    # No renegotiation (a DoS lever, and HTTP/2 forbids it); prefer the server's cipher order.
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE


def server_context(
    policy: ListenerTlsConfig,
    pair: KeyPair,
    *,
    trusted_clients: list[x509.Certificate] | None = None,
) -> ssl.SSLContext:
    """A context serving ``pair`` under ``policy``; with ``trusted_clients`` it asks for a client
    certificate and verifies it against them (an absent one is the HTTP layer's business)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _policy(context, policy.min_version)
    if policy.ciphers is not None:
        context.set_ciphers(policy.ciphers)
    context.set_alpn_protocols(list(policy.alpn))
    if policy.session_tickets:
        context.num_tickets = 2
    else:
        context.options |= ssl.OP_NO_TICKET
        context.num_tickets = 0
    load_pair_into(context, pair)
    if trusted_clients:
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(cadata=ca_pem(trusted_clients))
    return context


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """How a service's instances are spoken to over TLS: one context per service."""

    context: ssl.SSLContext
    server_name: str | None  # None: the instance's host

    def server_hostname(self, host: str) -> str:
        """SNI and the name verified (Python sends no SNI for an IP address, and checks it
        against the certificate's IP SANs)."""
        return self.server_name or host.strip("[]")


def upstream_tls(tls: UpstreamTlsConfig | None) -> UpstreamTls | None:
    return UpstreamTls(upstream_context(tls), tls.server_name) if tls is not None else None


def upstream_context(tls: UpstreamTlsConfig) -> ssl.SSLContext:
    """The client context a service's connections to its instances use."""
    if tls.ca_file is not None:
        load_ca_bundle(tls.ca_file)  # a clear error for a bad bundle, not OpenSSL's
    context = ssl.create_default_context(cafile=tls.ca_file)
    _policy(context, tls.min_version)
    context.set_alpn_protocols(["http/1.1"])
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.cert_file is not None and tls.key_file is not None:
        load_pair_into(context, load_key_pair(tls.cert_file, tls.key_file))
    return context
