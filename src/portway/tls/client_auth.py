"""What a TLS connection established, and whether a request on it may reach the host it names.

``TlsSession`` is read once per connection after the handshake. ``authorize`` runs per request,
only on listeners where some certificate has ``client_auth``:

* The request's Host must be served by the certificate SNI chose when either has client_auth;
  else 421 Misdirected Request (RFC 9110 §15.5.20). A client cannot pass the handshake of a host
  without mTLS and then ask an mTLS host for a resource.
* ``require``: no verified client certificate answers 400, as nginx does.
* A resumed TLS 1.3 session may have been verified under another SNI name (OpenSSL resumes across
  names), so its certificate must have been verified for this host in a full handshake of this
  worker (session tickets are per worker), or be directly issued by a CA in ca_file.
* ``allowed_subjects`` / ``allowed_sans`` narrow who is let in: 403.

The identity then travels to the upstream in the ``x-client-cert*`` headers; the same headers
from clients are always dropped (``upstream.forward``).
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from urllib.parse import quote

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from portway.errors import (
    ClientCertificateRejected,
    ClientCertificateRequired,
    Forbidden,
    HttpError,
    MisdirectedRequest,
)
from portway.tls.store import CertificateStore, ServedCertificate

_SAFE = " =,+;\"\\<>#/:@.-_()'*!~"


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """A verified client certificate, in the forms upstreams are given."""

    certificate: x509.Certificate
    subject: str  # RFC 4514
    sans: tuple[str, ...]  # "DNS:…", "URI:…", "email:…", "IP:…"
    fingerprint: str  # SHA-256 of the DER, hex
    header_lines: bytes  # the x-client-cert* lines for the upstream

    @classmethod
    def from_der(cls, der: bytes) -> ClientIdentity:
        certificate = x509.load_der_x509_certificate(der)
        subject = certificate.subject.rfc4514_string()
        sans: list[str] = []
        try:
            names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            pass
        else:
            value = names.value
            sans += [f"DNS:{n}" for n in value.get_values_for_type(x509.DNSName)]
            sans += [f"URI:{n}" for n in value.get_values_for_type(x509.UniformResourceIdentifier)]
            sans += [f"email:{n}" for n in value.get_values_for_type(x509.RFC822Name)]
            sans += [f"IP:{n}" for n in value.get_values_for_type(x509.IPAddress)]
        fingerprint = hashlib.sha256(der).hexdigest()
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
        lines = (
            f"x-client-cert-subject: {quote(subject, safe=_SAFE)}\r\n"
            f"x-client-cert-san: {quote(','.join(sans), safe=_SAFE)}\r\n"
            f"x-client-cert-fingerprint: {fingerprint}\r\n"
            f"x-client-cert: {quote(pem, safe='')}\r\n"
        )
        return cls(certificate, subject, tuple(sans), fingerprint, lines.encode("ascii"))

    def san_values(self) -> set[str]:
        return {san.partition(":")[2] for san in self.sans}


class TlsSession:
    """Facts of one TLS connection, for every request on it."""

    __slots__ = ("alpn", "cipher", "identity", "resumed", "served", "sni", "version")

    def __init__(self, ssl_object: ssl.SSLObject, store: CertificateStore) -> None:
        served = getattr(ssl_object, "portway_served", None)
        self.served: ServedCertificate | None = served or store.select(None)
        self.sni: str | None = getattr(ssl_object, "portway_sni", None)
        self.version = ssl_object.version() or ""
        cipher = ssl_object.cipher()
        self.cipher = cipher[0] if cipher else ""
        self.alpn = ssl_object.selected_alpn_protocol()
        self.resumed = ssl_object.session_reused
        der = ssl_object.getpeercert(binary_form=True)
        self.identity = ClientIdentity.from_der(der) if der else None
        served = self.served
        if (
            self.identity is not None
            and not self.resumed
            and served is not None
            and served.client_auth is not None
        ):  # OpenSSL verified it against this certificate's CAs just now
            store.remember_verified(served.position, self.identity.fingerprint)


def _directly_issued(certificate: x509.Certificate, issuers: tuple[x509.Certificate, ...]) -> bool:
    for issuer in issuers:
        try:
            certificate.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        return True
    return False


def authorize(session: TlsSession, store: CertificateStore, host: str) -> bytes | HttpError:
    """The identity header lines to send upstream (maybe none), or the error to answer."""
    chosen = session.served
    target = store.select(host) if host else chosen
    if target is not chosen and (
        (target is not None and target.client_auth is not None)
        or (chosen is not None and chosen.client_auth is not None)
    ):
        return MisdirectedRequest(
            f"host {host!r} needs a TLS connection made for it (SNI {session.sni or 'none'!r})"
        )
    if chosen is None or chosen.client_auth is None:
        return b""
    auth = chosen.client_auth
    identity = session.identity
    if identity is None:
        if auth.mode == "require":
            return ClientCertificateRequired("a client certificate is required for this host")
        return b""
    if (
        session.resumed
        and not store.was_verified(chosen.position, identity.fingerprint)
        and not _directly_issued(identity.certificate, chosen.client_issuers)
    ):
        return ClientCertificateRejected(
            "the client certificate of this resumed TLS session was not issued by this host's "
            "CA; connect again without resuming"
        )
    if auth.allowed_subjects and identity.subject not in auth.allowed_subjects:
        return Forbidden(f"client certificate subject {identity.subject!r} is not allowed here")
    if auth.allowed_sans and not identity.san_values() & set(auth.allowed_sans):
        return Forbidden("no SAN of the client certificate is allowed")
    return identity.header_lines
