"""Certificates and keys from PEM files, checked the way a careful operator would before a reload.

``load_key_pair`` refuses what would make clients fail later: a file that is missing or holds no
PEM certificate, a key that does not match the certificate, a certificate outside its validity
period, and a chain whose links do not sign each other. Each error names the file and says why.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class MaterialError(ValueError):
    """Certificate or key material that cannot be served; the message names the file."""


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What an operator needs to know about a certificate, and what SNI selection needs."""

    names: tuple[str, ...]  # DNS names (SAN, else the CN), lower-case
    subject: str  # RFC 4514
    issuer: str
    serial: str  # hex
    not_before: dt.datetime  # UTC
    not_after: dt.datetime  # UTC
    fingerprint_sha256: str  # hex, lower-case

    def seconds_left(self, now: dt.datetime | None = None) -> float:
        now = now or dt.datetime.now(dt.UTC)
        return (self.not_after - now).total_seconds()


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A checked certificate chain and its key, as PEM, ready for ``SSLContext.load_cert_chain``."""

    chain_pem: bytes
    key_pem: bytes
    info: CertificateInfo


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise MaterialError(f"{what} {path}: file not found") from None
    except IsADirectoryError:
        raise MaterialError(f"{what} {path}: is a directory, not a file") from None
    except PermissionError:
        raise MaterialError(f"{what} {path}: permission denied") from None
    except OSError as exc:
        raise MaterialError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None


def _certificates(data: bytes, path: str, what: str) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise MaterialError(f"{what} {path}: no PEM certificate in the file")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise MaterialError(f"{what} {path}: not a valid PEM certificate ({exc})") from None


def describe(certificate: x509.Certificate) -> CertificateInfo:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [
            str(attribute.value).lower()
            for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    return CertificateInfo(
        names=tuple(dict.fromkeys(names)),
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        serial=f"{certificate.serial_number:x}",
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        fingerprint_sha256=hashlib.sha256(
            certificate.public_bytes(serialization.Encoding.DER)
        ).hexdigest(),
    )


def _check_validity(certificate: x509.Certificate, path: str, what: str, now: dt.datetime) -> None:
    if certificate.not_valid_after_utc < now:
        raise MaterialError(
            f"{what} {path}: certificate {certificate.subject.rfc4514_string()!r} expired on "
            f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
        )
    if certificate.not_valid_before_utc > now:
        raise MaterialError(
            f"{what} {path}: certificate {certificate.subject.rfc4514_string()!r} is not valid "
            f"before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
        )


def _check_chain(chain: list[x509.Certificate], path: str) -> None:
    for position, (child, parent) in enumerate(itertools.pairwise(chain)):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            raise MaterialError(
                f"cert_file {path}: the chain is broken: certificate {position + 1} "
                f"({child.subject.rfc4514_string()!r}) is not issued by certificate "
                f"{position + 2} ({parent.subject.rfc4514_string()!r}); put the leaf first, "
                "then each issuer"
            ) from None


def load_key_pair(cert_file: str, key_file: str, now: dt.datetime | None = None) -> KeyPair:
    """Read and check a certificate chain (leaf first) and its private key."""
    now = now or dt.datetime.now(dt.UTC)
    chain_pem = _read(cert_file, "cert_file")
    chain = _certificates(chain_pem, cert_file, "cert_file")
    key_pem = _read(key_file, "key_file")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise MaterialError(
            f"key_file {key_file}: the key is encrypted; Portway needs an unencrypted key"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "unreadable"
        raise MaterialError(f"key_file {key_file}: not a PEM private key ({reason})") from None
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, spki) != leaf.public_key(
    ).public_bytes(serialization.Encoding.DER, spki):
        raise MaterialError(
            f"key_file {key_file}: the key does not match the certificate in {cert_file} "
            f"({leaf.subject.rfc4514_string()!r})"
        )
    for certificate in chain:
        _check_validity(certificate, cert_file, "cert_file", now)
    _check_chain(chain, cert_file)
    return KeyPair(chain_pem=chain_pem, key_pem=key_pem, info=describe(leaf))


def load_ca_bundle(path: str, what: str = "ca_file") -> list[x509.Certificate]:
    """The certificates of a CA bundle; at least one."""
    return _certificates(_read(path, what), path, what)


def self_signed(names: list[str], days: int = 30) -> tuple[bytes, bytes]:
    """A throwaway self-signed certificate and key for ``names`` (PEM): served for an ACME host
    until its real certificate is issued, so the listener can start."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem
