"""What a listener decides about a request before routing: ACME challenges, the redirect to HTTPS,
client certificates, HSTS.

Runs only on listeners that have one of these (``Listener.handles_specially``), so plain listeners
pay one attribute test per request.
"""

from __future__ import annotations

import re

from portway.config.tls_checks import name_covers
from portway.errors import HttpError
from portway.messages import LocalAnswer, Request
from portway.server.listeners import ACME_CHALLENGE_PREFIX, Listener
from portway.tls.client_auth import TlsSession, authorize

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")  # base64url, RFC 8555 §8.3
HSTS_HEADER = b"strict-transport-security"


def before_routing(
    listener: Listener, session: TlsSession | None, request: Request
) -> LocalAnswer | bytes:
    """Answer the request here, or return the extra header lines for the upstream (maybe none)."""
    path = request.path
    challenges = listener.challenge_dir
    if challenges is not None and path.startswith(ACME_CHALLENGE_PREFIX):
        return _acme_challenge(listener, path[len(ACME_CHALLENGE_PREFIX) :])
    redirect = listener.redirect
    if redirect is not None and (
        not redirect.hosts or any(name_covers(h, request.host) for h in redirect.hosts)
    ):
        port = "" if redirect.port == 443 else f":{redirect.port}"
        query = f"?{request.query}" if request.query else ""
        location = f"https://{request.host}{port}{path}{query}"
        return LocalAnswer(
            redirect.status,
            f"moved to {location}",
            None,
            [(b"location", location.encode("ascii", "replace"))],
        )
    extra = b""
    store = listener.store
    if store is not None and session is not None:
        result = authorize(session, store, request.host)
        if isinstance(result, HttpError):
            headers = list(result.headers)
            if listener.hsts is not None:
                headers.append((HSTS_HEADER, listener.hsts))
            return LocalAnswer(result.status, result.detail, result.cause, headers)
        extra = result
    if listener.hsts is not None:
        request.response_headers.append((HSTS_HEADER, listener.hsts))
    return extra


def _acme_challenge(listener: Listener, token: str) -> LocalAnswer:
    """The key authorization the ACME process left for ``token`` (RFC 8555 §8.3)."""
    assert listener.challenge_dir is not None
    if _TOKEN.match(token):
        try:
            body = (listener.challenge_dir / token).read_bytes()
        except OSError:
            pass
        else:
            return LocalAnswer(
                200, "", None, [(b"content-type", b"application/octet-stream")], body
            )
    return LocalAnswer(404, "no such ACME challenge", b"no_acme_challenge")
