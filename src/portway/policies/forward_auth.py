"""Forward authentication: an external auth service decides each request (Traefik ForwardAuth,
nginx ``auth_request``, oauth2-proxy's ``/oauth2/auth``).

The gateway sends the auth service a GET to the configured URL describing the request
(``X-Forwarded-Method``, ``-Proto``, ``-Host``, ``-Uri``, ``-For``) with the request headers it is
told to pass (credentials: ``Authorization``, ``Cookie``). The answer is the verdict:

* 2xx admits. The configured ``copy_headers`` of the answer go on the upstream request (the
  client's own copies are dropped, ``drops``, so a client cannot claim to be someone the auth
  service did not say it is), and ``consumer_header`` names the consumer.
* Anything else is what the client gets, as the auth service wrote it: status, a short body and
  the fields a login flow needs (``WWW-Authenticate``, ``Location``, ``Set-Cookie``, ...). A 302 to
  a sign-in page is how a browser gets sent to log in.
* No answer: connection refused, a broken answer, or none within ``timeout`` (the chain's bound) is
  503 ``policy_unavailable``. Fail closed: a route that asked for authentication is never served
  without it.

The check runs on the loop as a Task (a pending verdict), so other requests go on meanwhile; a
client that goes away cancels it.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Final

from portway.config.policies import CONSUMER_NAME, ForwardAuthConfig
from portway.messages import LocalAnswer, Request
from portway.policies.auth_client import AuthClient, AuthResponse
from portway.policies.base import INVALID, MISSING, UNAVAILABLE, Later, Pending, Policy

# What of a refusal reaches the client besides its status and body: the login flow's fields.
RELAYED: Final = frozenset(
    {b"www-authenticate", b"location", b"set-cookie", b"content-type", b"retry-after",
     b"cache-control", b"vary"}
)  # fmt: skip
_UNAVAILABLE: Final = UNAVAILABLE.encode()
_MISSING: Final = MISSING.encode()
_INVALID: Final = INVALID.encode()


class ForwardAuthPolicy(Policy):
    kind = "forward_auth"

    def __init__(self, name: str, config: ForwardAuthConfig) -> None:
        super().__init__(name)
        self.timeout = config.timeout
        self.client = AuthClient(config.url, config.tls)
        self.passed = tuple(name.encode("ascii") for name in config.request_headers)
        self.copied = tuple(name.encode("ascii") for name in config.copy_headers)
        consumer = config.consumer_header
        self.consumer_header = consumer.encode("ascii") if consumer is not None else None

    def apply(self, request: Request) -> Pending:
        headers = self._headers(request)
        return asyncio.get_running_loop().create_task(self._check(request, headers))

    def _headers(self, request: Request) -> list[tuple[bytes, bytes]]:
        """What the auth service learns of the request."""
        uri = request.path + ("?" + request.query if request.query else "")
        host = request.header("host") or request.host
        # The scheme is the listener's; a Request does not carry it, the exchange's client does.
        proto = getattr(getattr(request, "client", None), "proto", b"http")
        headers = [
            (b"x-forwarded-method", request.method.encode("ascii")),
            (b"x-forwarded-proto", proto if isinstance(proto, bytes) else b"http"),
            (b"x-forwarded-host", host.encode("latin-1")),
            (b"x-forwarded-uri", uri.encode("ascii", "replace")),
            (b"x-forwarded-for", request.client_ip.encode("ascii")),
        ]
        passed = self.passed
        for name, value in request.headers:
            if name.lower() in passed:
                headers.append((name, value))
        return headers

    async def _check(self, request: Request, headers: list[tuple[bytes, bytes]]) -> Later:
        try:
            answer = await self.client.get(headers)
        except (OSError, ValueError) as exc:
            why = _failure(exc)
            return LocalAnswer(
                503, f"the auth service of '{self.name}' failed: {why}", _UNAVAILABLE
            )
        if 200 <= answer.status < 300:
            return self._admitted(request, answer)
        return self._refused(request, answer)

    def _admitted(self, request: Request, answer: AuthResponse) -> bytes | None:
        lines = [
            b"%s: %s\r\n" % (name, value)
            for name, value in answer.headers
            if name in self.copied and value
        ]
        if self.consumer_header is not None:
            consumer = answer.header(self.consumer_header)
            text = consumer.decode("latin-1") if consumer is not None else ""
            if CONSUMER_NAME.match(text):  # anything else would be unsafe in logs and headers
                request.consumer = text
        return b"".join(lines) or None

    def _refused(self, request: Request, answer: AuthResponse) -> LocalAnswer:
        status = answer.status
        if status >= 500:
            cause: bytes | None = _UNAVAILABLE
        elif status >= 400:
            sent = any(name.lower() in self.passed for name, _ in request.headers)
            cause = _INVALID if sent or status != 401 else _MISSING
        else:
            cause = None  # a redirect to a sign-in page is no refusal
        headers = [(name, value) for name, value in answer.headers if name in RELAYED]
        has_type = any(name == b"content-type" for name, _ in headers)
        body = answer.body if answer.body and has_type else None
        if body is None:  # the gateway's own text body replaces it, with its own content-type
            headers = [(name, value) for name, value in headers if name != b"content-type"]
        return LocalAnswer(status, f"the auth service answered {status}", cause, headers, body=body)

    def drops(self) -> frozenset[bytes]:
        return frozenset(self.copied)

    def close(self) -> None:
        self.client.close()


def _failure(exc: OSError | ValueError) -> str:
    """Why the auth service gave no answer, for the 503's body: the kind of failure, never an
    address (the client should not learn where the auth service is)."""
    if isinstance(exc, ssl.SSLCertVerificationError):  # before ValueError: it is one too
        # "unable to get local issuer certificate", "Hostname mismatch, certificate is not valid
        # for 'x'": the part before the name
        reason = (exc.verify_message or "certificate verify failed").split(",")[0]
        return f"its TLS certificate was not verified ({reason})"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"TLS failed ({exc.reason})"
    if isinstance(exc, ValueError):
        return str(exc)  # a broken answer, described by the parser
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return type(exc).__name__
