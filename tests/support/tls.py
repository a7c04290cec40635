"""TLS material and TLS clients for the HTTPS tests.

``Pki`` is a throwaway root CA (trustme) that writes what it issues to a folder: each certificate
as ``NAME.crt`` (the chain, leaf first), ``NAME.key`` and ``NAME.pem`` (key and chain in one file,
so that one atomic rename replaces both). Expired, not-yet-valid and mismatched material is made
with the same CA.

The clients are real: Python's ``ssl`` over loopback sockets (``https_request`` returns the status,
headers, body and the certificate the server presented), ``memory_handshake`` for unit tests that
need a real ``SSLObject`` without sockets, and ``s_client`` / ``curl`` run the Debian tools.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.support.responses import ResponseReader

TOOL_TIMEOUT = 20.0
_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----\r?\n?", re.DOTALL
)
LONG_AGO = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the DER encoding, lower-case hex (what ``x-client-cert-fingerprint`` carries)."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def dns_names(certificate: x509.Certificate) -> list[str]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(san.get_values_for_type(x509.DNSName))


# -- material ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, written to ``folder`` three ways (see the module docstring)."""

    leaf: trustme.LeafCert
    cert_file: Path
    key_file: Path
    pem_file: Path

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.leaf.cert_chain_pems[0].bytes())

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate)

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    @property
    def pem(self) -> str:
        """The leaf certificate as PEM text."""
        return self.leaf.cert_chain_pems[0].bytes().decode("ascii")

    def files(self, combined: bool = False) -> dict[str, str]:
        """``cert_file`` / ``key_file`` for a config; ``combined``: both name the ``.pem`` file."""
        if combined:
            return {"cert_file": str(self.pem_file), "key_file": str(self.pem_file)}
        return {"cert_file": str(self.cert_file), "key_file": str(self.key_file)}


class Pki:
    """A root CA and the folder its certificates are written to."""

    def __init__(self, folder: Path, ca: trustme.CA | None = None, name: str = "ca") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.ca = ca or trustme.CA()
        self.ca_file = folder / f"{name}.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def issue(
        self,
        *identities: str,
        file: str | None = None,
        ca: trustme.CA | None = None,
        common_name: str | None = None,
        organization_unit: str | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> Issued:
        """A certificate for ``identities`` (DNS names, IPs, e-mails, URIs) issued by ``ca``
        (default: the root), written as ``file`` (default: the first identity)."""
        leaf = (ca or self.ca).issue_cert(
            *identities,
            common_name=common_name,
            organization_unit_name=organization_unit,
            not_before=not_before,
            not_after=not_after,
        )
        return self.write(leaf, file or identities[0].replace("*", "star"))

    def write(self, leaf: trustme.LeafCert, stem: str) -> Issued:
        issued = Issued(
            leaf,
            self.folder / f"{stem}.crt",
            self.folder / f"{stem}.key",
            self.folder / f"{stem}.pem",
        )
        leaf.cert_chain_pems[0].write_to_path(str(issued.cert_file))
        for blob in leaf.cert_chain_pems[1:]:
            blob.write_to_path(str(issued.cert_file), append=True)
        leaf.private_key_pem.write_to_path(str(issued.key_file))
        leaf.private_key_and_cert_chain_pem.write_to_path(str(issued.pem_file))
        return issued

    def issue_with(
        self,
        names: Sequence[x509.GeneralName],
        *,
        subject: x509.Name,
        file: str,
        key_usage: Sequence[x509.ObjectIdentifier] = (
            ExtendedKeyUsageOID.CLIENT_AUTH,
            ExtendedKeyUsageOID.SERVER_AUTH,
        ),
    ) -> Issued:
        """A certificate trustme cannot make (URI SANs, no SAN at all, a chosen subject), signed
        by the root with ``cryptography``; ``names`` empty: no SAN extension."""
        ca_key = serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca_cert = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage(list(key_usage)), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), False)
        certificate = builder.sign(ca_key, hashes.SHA256())
        leaf = trustme.LeafCert(
            key_pem(key), certificate.public_bytes(serialization.Encoding.PEM), []
        )
        return self.write(leaf, file)

    def expired(self, *identities: str, file: str | None = None) -> Issued:
        """A certificate whose validity ended in 2021."""
        return self.issue(
            *identities,
            file=file,
            not_before=LONG_AGO,
            not_after=LONG_AGO + dt.timedelta(days=365),
        )

    def not_yet_valid(self, *identities: str, file: str | None = None) -> Issued:
        start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=30)
        return self.issue(
            *identities, file=file, not_before=start, not_after=start + dt.timedelta(days=90)
        )


def key_pem(key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    """``key`` as PEM; by default a fresh private key that matches no certificate."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def replace_file(path: Path, content: bytes) -> None:
    """Write ``content`` next to ``path`` and rename it over ``path`` (atomic, a new inode)."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_bytes(content)
    os.replace(temporary, path)


# -- Python clients ------------------------------------------------------------------------------


def client_context(
    trust: Pki | trustme.CA | None = None,
    *,
    cert: Issued | None = None,
    alpn: Sequence[str] | None = None,
    min_version: ssl.TLSVersion | None = None,
    max_version: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client context trusting ``trust`` (nothing verified when None), presenting ``cert``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if trust is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        (trust.ca if isinstance(trust, Pki) else trust).configure_trust(context)
        context.check_hostname = check_hostname
    if cert is not None:
        cert.leaf.configure_cert(context)
    if alpn is not None:
        context.set_alpn_protocols(list(alpn))
    if min_version is not None:
        context.minimum_version = min_version
    if max_version is not None:
        context.maximum_version = max_version
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


def tls_connect(
    port: int,
    sni: str | None,
    context: ssl.SSLContext | None = None,
    timeout: float = 5.0,
    session: ssl.SSLSession | None = None,
) -> ssl.SSLSocket:
    """A TLS connection to 127.0.0.1:``port`` asking for ``sni`` (None: no SNI), handshake done;
    ``session``: try to resume it."""
    context = context or client_context()
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return context.wrap_socket(raw, server_hostname=sni, session=session)
    except BaseException:
        raw.close()
        raise


def peer_certificate(tls: ssl.SSLSocket | ssl.SSLObject) -> x509.Certificate:
    der = tls.getpeercert(binary_form=True)
    assert der is not None, "the server presented no certificate"
    return x509.load_der_x509_certificate(der)


def served_certificate(
    port: int, sni: str | None, context: ssl.SSLContext | None = None
) -> x509.Certificate:
    """The certificate a handshake asking for ``sni`` gets (no request is sent)."""
    with tls_connect(port, sni, context) as tls:
        return peer_certificate(tls)


@dataclass
class TlsResponse:
    """A response over TLS and what the handshake established."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    peer: x509.Certificate
    version: str
    alpn: str | None
    cipher: str
    session: ssl.SSLSession | None  # to resume (read after the response, so TLS 1.3 has one)
    resumed: bool

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        values = [value for key, value in self.headers if key == wanted]
        return ", ".join(values) if values else None

    def json(self) -> Any:
        return json.loads(self.body)

    def upstream_headers(self) -> dict[str, str]:
        """The request headers the echo backend saw (``tests.support.backends``)."""
        headers: dict[str, str] = self.json()["headers"]
        return headers


def _tls_source(tls: ssl.SSLSocket) -> Callable[[], bytes]:
    def receive() -> bytes:
        try:
            return tls.recv(1 << 16)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError, ConnectionResetError):
            return b""

    return receive


def _request_bytes(
    method: str, path: str, host: str | None, headers: Iterable[tuple[str, str]]
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def https_request(
    port: int,
    *,
    sni: str | None,
    host: str | None = None,
    path: str = "/echo",
    method: str = "GET",
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    context: ssl.SSLContext | None = None,
    timeout: float = 5.0,
    session: ssl.SSLSession | None = None,
) -> TlsResponse:
    """One request on a new TLS connection; ``host`` defaults to ``sni``. A handshake the server
    refuses raises ``ssl.SSLError`` (in TLS 1.3 a refused client certificate surfaces on the
    first read, after the client's side of the handshake has completed)."""
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    with tls_connect(port, sni, context, timeout, session) as tls:
        tls.sendall(_request_bytes(method, path, host if host is not None else sni, items))
        response = ResponseReader(_tls_source(tls)).read(method)
        cipher = tls.cipher()
        return TlsResponse(
            status=response.status,
            reason=response.reason,
            headers=response.headers,
            body=response.body,
            peer=peer_certificate(tls),
            version=tls.version() or "",
            alpn=tls.selected_alpn_protocol(),
            cipher=cipher[0] if cipher else "",
            session=tls.session,
            resumed=bool(tls.session_reused),
        )


def memory_handshake(
    server: ssl.SSLContext,
    client: ssl.SSLContext,
    sni: str | None,
    session: ssl.SSLSession | None = None,
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A complete handshake between two ``SSLObject`` over memory BIOs, no sockets: the server's
    and the client's side. When the server fails, what it wrote (its alert) is delivered to the
    client, and the client's ``ssl.SSLError`` is raised (the server's when the client saw none).
    Session tickets the server sends are read, so ``client.session`` can be resumed."""
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    client_side = client.wrap_bio(client_in, client_out, server_hostname=sni, session=session)

    def step(side: ssl.SSLObject) -> bool:
        try:
            side.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    client_done = server_done = False
    for _ in range(10):
        client_done = client_done or step(client_side)
        server_in.write(client_out.read())
        try:
            server_done = server_done or step(server_side)
        except ssl.SSLError as server_error:
            client_in.write(server_out.read())
            with contextlib.suppress(ssl.SSLWantReadError):  # raises the client's view of the
                step(client_side)  # alert, if there was one
                client_side.read(1)
            raise server_error from None
        client_in.write(server_out.read())
        if client_done and server_done and not client_out.pending:
            break
    assert client_done and server_done, f"the handshake did not finish ({client_done=})"
    # TLS 1.3: the server's NewSessionTicket and its verdict on a client certificate come after
    # the client's Finished; let the client read them.
    with contextlib.suppress(ssl.SSLWantReadError):
        client_side.read(1)
    return server_side, client_side


# -- openssl s_client and curl -------------------------------------------------------------------


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not installed (apt-get install {name})")
    return path


@dataclass
class SClient:
    """What ``openssl s_client`` printed about one connection."""

    returncode: int
    output: str
    certificates: list[x509.Certificate] = field(default_factory=list)  # as sent, leaf first

    @property
    def alpn(self) -> str | None:
        match = re.search(r"^ALPN protocol: (\S+)", self.output, re.MULTILINE)
        return match.group(1) if match else None

    @property
    def verify_code(self) -> str | None:
        match = re.search(r"Verify return code: (\d+ \([^)]*\))", self.output)
        return match.group(1) if match else None

    @property
    def protocol(self) -> str | None:
        match = re.search(r"^New, (TLSv[\d.]+), Cipher is", self.output, re.MULTILINE)
        return match.group(1) if match else None


def s_client(
    port: int,
    servername: str | None,
    *,
    ca_file: Path | None = None,
    alpn: Sequence[str] | None = None,
    extra: Sequence[str] = (),
) -> SClient:
    """``openssl s_client -connect 127.0.0.1:PORT -servername NAME -showcerts`` with stdin at
    EOF: the handshake, then a close."""
    command = [tool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}", "-showcerts"]
    command += ["-servername", servername] if servername else ["-noservername"]
    if ca_file is not None:
        command += ["-CAfile", str(ca_file)]
    if alpn:
        command += ["-alpn", ",".join(alpn)]
    command += list(extra)
    done = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    output = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
    certificates = [
        x509.load_pem_x509_certificate(block) for block in _PEM_CERTIFICATE.findall(done.stdout)
    ]
    return SClient(done.returncode, output, certificates)


@dataclass
class CurlResult:
    returncode: int
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    stderr: str

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        values = [value for key, value in self.headers if key == wanted]
        return ", ".join(values) if values else None


def curl(
    url: str, *, resolve: str, ca_file: Path, extra: Sequence[str] = (), folder: Path
) -> CurlResult:
    """``curl --resolve RESOLVE --cacert CA_FILE URL``: the status, response headers and body."""
    head_file, body_file = folder / "curl-head.txt", folder / "curl-body.bin"
    command = [
        tool("curl"),
        "--silent",
        "--show-error",
        "--http1.1",
        "--max-time",
        "10",
        "--resolve",
        resolve,
        "--cacert",
        str(ca_file),
        "--dump-header",
        str(head_file),
        "--output",
        str(body_file),
        *extra,
        url,
    ]
    done = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, timeout=TOOL_TIMEOUT, check=False
    )
    status, headers = 0, []
    if head_file.exists():
        lines = head_file.read_bytes().decode("latin-1").splitlines()
        status = int(lines[0].split()[1]) if lines[0] else 0
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers.append((name.strip().lower(), value.strip()))
    body = body_file.read_bytes() if body_file.exists() else b""
    return CurlResult(
        done.returncode, status, headers, body, done.stderr.decode("utf-8", "replace")
    )
