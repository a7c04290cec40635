"""Blocking ACME (RFC 8555) operations on certbot's ``acme`` library: the account, and one order per
certificate, validated by HTTP-01.

The protocol (JWS signing, nonces, directory, polling the order) is the library's; this module
decides what Portway keeps and how failures read. The account key and registration are kept in
``state_dir/account/`` so that a restarted process, or a new certificate, reuses the account
instead of registering a new one each time (a CA limits registrations). Every certificate gets a
fresh EC P-256 key: a renewal never reuses a key that may have leaked with the old certificate.

Every call blocks on the network, so callers run it off any event loop (``process.py`` uses a
thread). Failures become ``AcmeError`` with one sentence an operator can act on: which step, which
server, and the CA's or the network's reason, never a stack trace.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import requests
from acme import challenges, crypto_util, messages
from acme import errors as acme_errors
from acme.client import ClientNetwork, ClientV2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.errors import DeserializationError
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from portway.acme.files import remove_quietly, write_atomic
from portway.config.tls import AcmeConfig

log = logging.getLogger("portway.acme")

T = TypeVar("T")

USER_AGENT = "portway-acme"
NETWORK_TIMEOUT = 30  # seconds for one HTTP request to the CA
ORDER_TIMEOUT = 90.0  # seconds for validation and issuance, as certbot allows
POLL_INTERVAL = 0.5  # seconds between two looks at a pending authorization
# A token becomes a file name under challenge_dir: RFC 8555 §8.3 makes it base64url, and anything
# else (a "../" from a hostile server) is refused rather than written.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,256}")
_DIRECTORY_FIELDS = ("newNonce", "newAccount", "newOrder")  # RFC 8555 §7.1.1, what Portway uses
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^\"')]+)")
_VERIFY = re.compile(r"certificate verify failed: ([^(\"']+)")


class AcmeError(Exception):
    """An ACME operation that failed; the message says which step failed and why."""


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate the CA issued: the full chain (leaf first) and its new key, both PEM."""

    hosts: tuple[str, ...]
    fullchain_pem: bytes
    key_pem: bytes


def new_key_pem() -> bytes:
    """A fresh EC P-256 private key as unencrypted PKCS#8 PEM (what ``make_csr`` reads)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class AcmeClient:
    """One ACME account on one CA (``config.directory_url``), connected on first use."""

    def __init__(
        self,
        config: AcmeConfig,
        *,
        timeout: int = NETWORK_TIMEOUT,
        order_timeout: float = ORDER_TIMEOUT,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.config = config
        self.timeout = timeout
        self.order_timeout = order_timeout
        self.poll_interval = poll_interval
        self._client: ClientV2 | None = None

    @property
    def account_dir(self) -> Path:
        return Path(self.config.state_dir) / "account"

    @property
    def account_key_path(self) -> Path:
        return self.account_dir / "key.pem"

    @property
    def registration_path(self) -> Path:
        return self.account_dir / "registration.json"

    def account_url(self) -> str:
        """Connect (loading or registering the account) and return the account's URL."""
        account = self._connect().net.account
        assert account is not None
        return str(account.uri)

    def obtain(self, hosts: Sequence[str]) -> IssuedCertificate:
        """Order a certificate for ``hosts`` (first host first), answer HTTP-01 for each host by
        writing its key authorization to ``challenge_dir/<token>``, and return the full chain.

        The challenge files are removed afterwards, whether the order succeeded or not.
        """
        client = self._connect()
        key_pem = new_key_pem()
        csr_pem = crypto_util.make_csr(key_pem, list(hosts))
        label = ", ".join(hosts)
        order = self._call(f"ordering a certificate for {label}", lambda: client.new_order(csr_pem))
        written: list[Path] = []
        try:
            for authorization in order.authorizations:
                if authorization.body.status == messages.STATUS_VALID:
                    continue  # the CA reused a recent validation of this host
                self._answer(client, authorization, written)
            deadline = time.monotonic() + self.order_timeout
            valid = [self._wait_valid(client, a, deadline) for a in order.authorizations]
            order = order.update(authorizations=valid)
            finalize_by = dt.datetime.now() + dt.timedelta(seconds=self.order_timeout)
            order = self._call(
                f"finalizing the order for {label}",
                functools.partial(client.finalize_order, order, finalize_by),
            )
        finally:
            for path in written:
                remove_quietly(path)
        if not order.fullchain_pem:
            raise AcmeError(f"the order for {label} is valid but the CA sent no certificate")
        return IssuedCertificate(tuple(hosts), order.fullchain_pem.encode(), key_pem)

    def close(self) -> None:
        if self._client is not None:
            self._client.net.session.close()
            self._client = None

    # ------------------------------------------------------------------------------ the account

    def _connect(self) -> ClientV2:
        if self._client is not None:
            return self._client
        key = self._account_key()
        net = ClientNetwork(key, alg=ES256, user_agent=USER_AGENT, timeout=self.timeout)
        if self.config.ca_file is not None:
            # requests takes a CA bundle path wherever it takes True; the library passes
            # verify_ssl straight to it, so this trusts exactly the configured CAs.
            net.verify_ssl = self.config.ca_file  # type: ignore[assignment]
        url = self.config.directory_url
        directory = self._call(
            "fetching the ACME directory", lambda: ClientV2.get_directory(url, net)
        )
        missing = [name for name in _DIRECTORY_FIELDS if name not in directory.to_partial_json()]
        if missing:
            raise AcmeError(
                f"fetching the ACME directory: {url} is not an ACME directory "
                f"(it lacks {', '.join(missing)})"
            )
        client = ClientV2(directory, net)
        self._register(client)
        self._client = client
        return client

    def _account_key(self) -> JWKEC:
        path = self.account_key_path
        if path.exists():
            try:
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            except (ValueError, TypeError) as exc:
                raise AcmeError(f"the ACME account key {path} is unreadable: {exc}") from None
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
                raise AcmeError(f"the ACME account key {path} is not an EC P-256 key")
            return JWKEC(key=key)
        self.account_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = new_key_pem()
        write_atomic(path, pem, mode=0o600)
        log.info("ACME: created an account key in %s", path)
        key = serialization.load_pem_private_key(pem, password=None)
        return JWKEC(key=key)

    def _stored_registration(self) -> messages.RegistrationResource | None:
        """The saved registration, if it was made with this directory URL."""
        try:
            saved = json.loads(self.registration_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ACME: ignoring unreadable %s (%s)", self.registration_path, exc)
            return None
        if not isinstance(saved, dict) or saved.get("directory_url") != self.config.directory_url:
            return None
        try:
            stored: messages.RegistrationResource
            stored = messages.RegistrationResource.from_json(saved["registration"])
        except (KeyError, DeserializationError) as exc:
            log.warning("ACME: ignoring unreadable %s (%s)", self.registration_path, exc)
            return None
        return stored

    def _register(self, client: ClientV2) -> None:
        url = self.config.directory_url
        stored = self._stored_registration()
        if stored is not None:
            try:
                regr = client.query_registration(stored)
            except messages.Error as exc:
                if exc.code != "accountDoesNotExist":
                    reason = _refusal(exc)
                    raise AcmeError(f"checking the ACME account {stored.uri}: {reason}") from None
                log.warning("ACME: %s does not know account %s; registering anew", url, stored.uri)
            except requests.exceptions.RequestException as exc:
                raise self._network_error("checking the ACME account", exc) from None
            else:
                log.info("ACME: using account %s", regr.uri)
                return
        registration = messages.NewRegistration.from_data(
            email=self.config.email, terms_of_service_agreed=True
        )

        def create() -> messages.RegistrationResource:
            try:
                return client.new_account(registration)
            except acme_errors.ConflictError as exc:
                # This key has an account already (its registration file was lost): look it up.
                known = messages.RegistrationResource(
                    uri=exc.location, body=messages.Registration()
                )
                return client.query_registration(known)

        regr = self._call("registering an ACME account", create)
        saved = {"directory_url": url, "registration": json.loads(regr.json_dumps())}
        write_atomic(self.registration_path, json.dumps(saved, indent=2).encode(), mode=0o600)
        log.info("ACME: registered account %s with %s", regr.uri, url)

    # ---------------------------------------------------------------------------- validation

    def _answer(
        self, client: ClientV2, authorization: messages.AuthorizationResource, written: list[Path]
    ) -> None:
        """Publish the key authorization for ``authorization``'s HTTP-01 challenge (its path goes
        to ``written`` at once, so it is removed whatever happens next) and tell the CA."""
        host = authorization.body.identifier.value
        offered = [
            c for c in authorization.body.challenges if isinstance(c.chall, challenges.HTTP01)
        ]
        if not offered:
            raise AcmeError(
                f"{host}: the CA offers no HTTP-01 challenge, the only one Portway answers"
            )
        challenge = offered[0]
        response, validation = challenge.response_and_validation(client.net.key)
        token: str = challenge.chall.encode("token")
        if not _TOKEN.fullmatch(token):
            raise AcmeError(f"{host}: the CA sent a malformed HTTP-01 token {token[:40]!r}")
        path = self.config.challenge_dir / token
        write_atomic(path, validation.encode())
        written.append(path)
        self._call(
            f"answering the HTTP-01 challenge for {host}",
            lambda: client.answer_challenge(challenge, response),
        )

    def _wait_valid(
        self, client: ClientV2, authorization: messages.AuthorizationResource, deadline: float
    ) -> messages.AuthorizationResource:
        host = authorization.body.identifier.value
        while authorization.body.status == messages.STATUS_PENDING:
            if time.monotonic() > deadline:
                raise AcmeError(f"{host}: still not validated after {self.order_timeout:g}s")
            time.sleep(self.poll_interval)
            authorization, _ = self._call(
                f"checking the validation of {host}", functools.partial(client.poll, authorization)
            )
        if authorization.body.status != messages.STATUS_VALID:
            raise AcmeError(f"validating {host} failed: {_authorization_failure(authorization)}")
        return authorization

    # -------------------------------------------------------------------------------- errors

    def _call(self, what: str, operation: Callable[[], T]) -> T:
        """Run one library call; turn whatever it raises into an ``AcmeError`` that says why."""
        try:
            return operation()
        except AcmeError:
            raise
        except requests.exceptions.RequestException as exc:
            raise self._network_error(what, exc) from None
        except messages.Error as exc:
            raise AcmeError(f"{what}: {_refusal(exc)}") from None
        except acme_errors.IssuanceError as exc:
            raise AcmeError(f"{what}: the CA did not issue it: {_refusal(exc.error)}") from None
        except acme_errors.TimeoutError:
            raise AcmeError(f"{what}: not done after {self.order_timeout:g}s") from None
        except acme_errors.ClientError as exc:
            raise AcmeError(f"{what}: {_unexpected(exc, self.config.directory_url)}") from None
        except acme_errors.Error as exc:
            raise AcmeError(f"{what}: {exc}") from None
        except (DeserializationError, KeyError) as exc:
            raise AcmeError(
                f"{what}: {self.config.directory_url} does not answer as an ACME server ({exc})"
            ) from None

    def _network_error(self, what: str, exc: requests.exceptions.RequestException) -> AcmeError:
        url = self.config.directory_url
        server = urlsplit(url).netloc
        if isinstance(exc, requests.exceptions.SSLError):
            match = _VERIFY.search(str(exc))
            reason = match.group(1).strip() if match else _network_reason(exc)
            hint = "" if self.config.ca_file else "; acme.ca_file names a CA bundle to trust"
            return AcmeError(f"{what}: TLS with the ACME server {server} failed: {reason}{hint}")
        if isinstance(exc, requests.exceptions.Timeout):
            return AcmeError(f"{what}: the ACME server {server} did not answer in {self.timeout}s")
        return AcmeError(f"{what}: cannot reach the ACME server {url}: {_network_reason(exc)}")


def _network_reason(exc: BaseException) -> str:
    """The operating system's words for a failed connection ("Connection refused"), without the
    layers of urllib3 and requests wrapped around them."""
    text = str(exc)
    match = _ERRNO.search(text)
    return match.group(1).strip() if match else text


def _refusal(error: messages.Error) -> str:
    reason = error.detail or error.description or "no reason given"
    return f"{reason} ({error.code or error.typ})"


def _unexpected(exc: acme_errors.ClientError, url: str) -> str:
    argument = exc.args[0] if exc.args else None
    if isinstance(argument, requests.Response):
        return f"{argument.url} answered HTTP {argument.status_code}, not an ACME response"
    return f"{url} does not answer as an ACME server ({exc})"


def _authorization_failure(authorization: messages.AuthorizationResource) -> str:
    for challenge in authorization.body.challenges:
        if challenge.error is not None:
            return _refusal(challenge.error)
    return f"the authorization is {authorization.body.status}"
