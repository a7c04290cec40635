"""Debian's ``pebble`` (Let's Encrypt's ACME test server) on loopback, with what it needs to
validate HTTP-01 challenges against a test: a DNS stub and a challenge server.

* ``DnsStub``: pebble resolves the names it validates through DNS (``-dnsserver``); the stub answers
  ``A 127.0.0.1`` for every name and nothing for other types, so any test host name reaches the
  loopback port pebble was told (``httpPort``). Written on the stdlib socket module: it needs to
  answer one question per packet, no more.
* ``ChallengeServer``: ``GET /.well-known/acme-challenge/<token>`` answers the file ``<token>`` of
  a folder (an ``AcmeConfig.challenge_dir``), standing in for Portway's plain-HTTP listener in tests
  of the ACME manager; ``serving = False`` makes it answer 404, as a broken listener would.
* ``Pebble``: the server itself, with a config file generated per instance (free ports, its own
  HTTPS certificate from ``trustme``, whose CA is ``ca_file``), no random validation sleeps, no
  rejected nonces, no reused authorizations (each order is really validated) and, if asked, a short
  certificate validity (``certificateValidityPeriod``, seconds) so renewals come due in a test.
  ``root_pem()`` is the root it issues under (management interface ``/roots/0``); it changes with
  every start.

The fixtures ``challenge_server`` and ``pebble`` (wired to each other) start them per test. The
helpers at the end check what was issued: ``Pebble.assert_issued`` (names, chain to the root),
``handshake`` (a TLS client trusting only pebble's root, as a browser would trust a real CA's).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.lifecycle import StartStop
from tests.support.processes import free_port

START_TIMEOUT = 10.0
CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


MISSING = (
    "pebble is not installed: run scripts/install-test-deps (Debian package 'pebble'), or put "
    "Let's Encrypt's pebble 2.x on PATH"
)


def pebble_binary() -> str:
    """The path of ``pebble``; a missing tool fails the test (as a missing promtool does) rather
    than skipping it, so a machine without it cannot pass the suite by accident."""
    path = shutil.which("pebble")
    if path is None:
        raise AssertionError(MISSING)
    return path


# ------------------------------------------------------------------------------------------ DNS


def dns_answer(query: bytes, address: str = "127.0.0.1") -> bytes | None:
    """The response to one DNS query (RFC 1035 §4.1): ``A address`` for an A question, an empty
    NOERROR answer for any other type; None for a packet that is not a query."""
    if len(query) < 12:
        return None
    ident, flags, questions = struct.unpack("!HHH", query[:6])
    if flags & 0x8000 or questions != 1:
        return None
    end = 12
    while end < len(query) and query[end]:
        end += query[end] + 1
    end += 5  # the root label, QTYPE and QCLASS
    if end > len(query):
        return None
    question = query[12:end]
    (qtype,) = struct.unpack("!H", question[-4:-2])
    reply_flags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080  # QR, AA, RD copied, RA
    records = b""
    if qtype == 1:  # A: pointer to the question's name, A IN, TTL 60, 4 bytes
        records = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
    header = struct.pack("!6H", ident, reply_flags, 1, 1 if records else 0, 0, 0)
    return header + question + records


class DnsStub(StartStop):
    """A UDP DNS server on 127.0.0.1 that resolves every name to 127.0.0.1."""

    def __init__(self) -> None:
        self.port = 0
        self.questions = 0
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> Self:
        sock = self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.1)
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="dns-stub", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._socket is not None
        while not self._stopping.is_set():
            try:
                query, peer = self._socket.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            answer = dns_answer(query)
            if answer is not None:
                self.questions += 1
                self._socket.sendto(answer, peer)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self._socket is not None:
            self._socket.close()


# ---------------------------------------------------------------------------------- challenges


class ChallengeServer(StartStop):
    """Serves HTTP-01 key authorizations from ``folder`` on 127.0.0.1:``port`` (0: any)."""

    def __init__(self, folder: Path | None = None, port: int = 0) -> None:
        self.folder = folder
        self.serving = True
        self.requested: list[str] = []  # tokens asked for, in order, whether answered or not
        self._wanted_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> Self:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = owner.answer(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = self._server = ThreadingHTTPServer(("127.0.0.1", self._wanted_port), Handler)
        server.daemon_threads = True
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def answer(self, path: str) -> bytes | None:
        if not path.startswith(CHALLENGE_PREFIX):
            return None
        token = path[len(CHALLENGE_PREFIX) :]
        self.requested.append(token)
        if not self.serving or self.folder is None or "/" in token or token.startswith("."):
            return None
        try:
            return (self.folder / token).read_bytes()
        except OSError:
            return None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)


# -------------------------------------------------------------------------------------- pebble


class Pebble(StartStop):
    """``pebble`` validating HTTP-01 on 127.0.0.1:``http_port``; see the module docstring."""

    def __init__(self, folder: Path, http_port: int, validity: int | None = None) -> None:
        self.folder = folder
        self.http_port = http_port
        self.validity = validity
        self.acme_port = free_port()
        self.management_port = free_port()
        self.dns = DnsStub()
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.ca_file = folder / "pebble-https-ca.pem"
        self.log_file = folder / "pebble.log"
        self._https = trustme.CA()
        self._https.cert_pem.write_to_path(str(self.ca_file))
        served = self._https.issue_cert("127.0.0.1", "localhost")
        served.cert_chain_pems[0].write_to_path(str(folder / "pebble-https-cert.pem"))
        served.private_key_pem.write_to_path(str(folder / "pebble-https-key.pem"))

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    @property
    def management_url(self) -> str:
        return f"https://127.0.0.1:{self.management_port}"

    def config_file(self) -> Path:
        settings: dict[str, object] = {
            "listenAddress": f"127.0.0.1:{self.acme_port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(self.folder / "pebble-https-cert.pem"),
            "privateKey": str(self.folder / "pebble-https-key.pem"),
            "httpPort": self.http_port,
            "tlsPort": free_port(),  # TLS-ALPN-01, unused; pebble binds nothing for it
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if self.validity is not None:
            settings["certificateValidityPeriod"] = self.validity
        path = self.folder / "pebble-config.json"
        path.write_text(json.dumps({"pebble": settings}, indent=2))
        return path

    def start(self) -> Self:
        if self.proc is None:
            self.dns.start()
        env = {
            **os.environ,
            "PEBBLE_VA_NOSLEEP": "1",  # validate at once instead of after 0-15 s
            "PEBBLE_WFE_NONCEREJECT": "0",  # no artificial badNonce errors
            "PEBBLE_AUTHZREUSE": "0",  # every order is validated, so a failure can be provoked
        }
        argv = [pebble_binary(), "-config", str(self.config_file()), "-dnsserver"]
        argv.append(f"127.0.0.1:{self.dns.port}")
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.get("/dir", management=False)
                return self
            except (OSError, urllib.error.URLError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"pebble did not start; its log:\n{self.log()}") from None
                time.sleep(0.05)

    def stop_server(self) -> None:
        """Stop pebble alone (the CA goes away; the DNS stub stays for a ``start`` again)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop(self) -> None:
        self.stop_server()
        self.dns.stop()

    def restart(self) -> None:
        """Stop and start on the same ports: the same directory URL, a CA that forgot everything
        (accounts, orders) and issues under a new root."""
        self.stop_server()
        self.start()

    def acme_settings(self, state_dir: Path, **extra: object) -> dict[str, object]:
        """The ``acme`` section of a Portway config that uses this pebble."""
        return {
            "directory_url": self.directory_url,
            "ca_file": str(self.ca_file),
            "state_dir": str(state_dir),
            **extra,
        }

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def get(self, path: str, *, management: bool = True) -> bytes:
        base = self.management_url if management else f"https://127.0.0.1:{self.acme_port}"
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(base + path, context=context, timeout=5) as response:
            body: bytes = response.read()
            return body

    def root_pem(self) -> bytes:
        return self.get("/roots/0")

    def intermediate_pem(self) -> bytes:
        return self.get("/intermediates/0")

    def assert_issued(self, chain: list[x509.Certificate], hosts: list[str]) -> None:
        """``chain`` (leaf first) names exactly ``hosts`` and leads to this pebble's root."""
        root = x509.load_pem_x509_certificate(self.root_pem())
        intermediate = x509.load_pem_x509_certificate(self.intermediate_pem())
        assert len(chain) == 2 and chain[1] == intermediate
        chain[0].verify_directly_issued_by(intermediate)
        intermediate.verify_directly_issued_by(root)
        assert dns_names(chain[0]) == sorted(hosts)


# ------------------------------------------------------------------------ what pebble issued


def chain_of(path: str | Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(Path(path).read_bytes())


def dns_names(certificate: x509.Certificate) -> list[str]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(san.get_values_for_type(x509.DNSName))


def spki(key_pem: bytes) -> bytes:
    """The public half of a PEM private key, as DER: what its certificate must carry."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_spki(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def handshake(port: int, name: str, root_pem: bytes) -> tuple[dict[str, Any], bytes] | None:
    """Connect to 127.0.0.1:``port`` with SNI ``name`` trusting only ``root_pem`` (pebble's root);
    the peer certificate and the response to ``GET /``, or None while the certificate served is
    not one that root issued (a listener's placeholder before the ACME certificate arrives)."""
    context = ssl.create_default_context(cadata=root_pem.decode())
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            peer = tls.getpeercert()
            assert peer is not None
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
            response = b""
            while chunk := tls.recv(65536):
                response += chunk
            return dict(peer), response
    except ssl.SSLCertVerificationError:
        return None


def dns_names_of(peer: dict[str, Any]) -> list[str]:
    """The DNS names of a certificate as ``SSLSocket.getpeercert()`` gives it."""
    return sorted(v for k, v in peer["subjectAltName"] if k == "DNS")


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def challenge_server() -> Iterator[ChallengeServer]:
    """A challenge server with no folder yet: a test points ``folder`` at its challenge_dir."""
    with ChallengeServer() as server:
        yield server


@pytest.fixture
def pebble(tmp_path: Path, challenge_server: ChallengeServer) -> Iterator[Pebble]:
    """pebble validating HTTP-01 against ``challenge_server``, with its default validity."""
    with Pebble(tmp_path / "pebble", http_port=challenge_server.port) as server:
        yield server
