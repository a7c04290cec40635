"""Responses Portway writes itself: errors a client can read, never a stack trace."""

from __future__ import annotations

from http import HTTPStatus

# The machine-readable cause, sent as ``portway-error`` so scripts and logs need not parse bodies.
NO_ROUTE = b"no_route"
NO_HEALTHY_INSTANCE = b"no_healthy_instance"
BACKEND_NOT_FOUND = b"backend_not_found"  # the service exists only to say why it has no instances
UPSTREAM_REFUSED = b"upstream_connect_failed"
UPSTREAM_RESET = b"upstream_reset"
UPSTREAM_TIMEOUT = b"upstream_timeout"
UPSTREAM_BAD_RESPONSE = b"upstream_bad_response"
BAD_REQUEST = b"bad_request"
# The circuit breaker's overflows: the service is at a configured limit.
OVERFLOW_REQUESTS = b"overflow_max_requests"
OVERFLOW_CONNECTIONS = b"overflow_max_connections"
OVERFLOW_PENDING = b"overflow_pending_timeout"


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"


def local_response(
    status: int,
    detail: str,
    request_id: bytes,
    *,
    cause: bytes | None = None,
    close: bool = False,
    head_only: bool = False,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes | None = None,
) -> bytes:
    """A complete HTTP/1.1 response: status, a one-line reason and the request id in a text body
    (or ``body``, whose content-type is then among ``extra_headers``). A 204 has neither a body
    nor a Content-Length (RFC 9110 §15.3.5, §8.6)."""
    phrase = reason_phrase(status)
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, phrase)]
    no_content = status == 204
    if no_content:
        body = b""
    elif body is None:
        body = b"%d %s: %s\nrequest id: %s\n" % (
            status,
            phrase,
            detail.encode("ascii", "replace"),
            request_id,
        )
        lines.append(b"content-type: text/plain; charset=utf-8\r\n")
    lines.append(b"x-content-type-options: nosniff\r\n")
    if not no_content:
        lines.append(b"content-length: %d\r\n" % len(body))
    lines.append(b"x-request-id: %s\r\n" % request_id)
    if cause is not None:
        lines.append(b"portway-error: %s\r\n" % cause)
    for name, value in extra_headers or ():
        lines.append(b"%s: %s\r\n" % (name, value))
    if close:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    if not head_only:
        lines.append(body)
    return b"".join(lines)
