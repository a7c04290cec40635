"""The error tree. Each error that reaches a client knows the status it maps to.

PortwayError
├── ConfigError            a config that cannot be loaded; carries every issue found
└── HttpError              answered to the client with ``status``; ``close`` ends the connection
    ├── BadRequest         400, malformed or ambiguous framing (RFC 9112 §6.3, §11.2)
    │   ├── ClientCertificateRequired  400, an mTLS host got no client certificate
    │   └── ClientCertificateRejected  400, a resumed session's certificate is not this host's
    ├── Forbidden          403, e.g. a client certificate subject not allowed
    ├── MisdirectedRequest 421, Host names a TLS host other than the one SNI chose
    ├── RequestTimeout     408, the request head did not arrive in time
    ├── PayloadTooLarge    413
    ├── UriTooLong         414
    ├── HeadersTooLarge    431 (RFC 6585 §5)
    ├── NotImplemented_     501, a transfer coding we do not implement (RFC 9112 §6.1)
    ├── VersionNotSupported 505
    └── (gateway errors: 404 no route, 502, 503, 504 are built by the proxy)
"""

from __future__ import annotations

from dataclasses import dataclass


class PortwayError(Exception):
    """Base of every error Portway raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config source: where it is and why it is wrong."""

    source: str  # file name, or "<string>"
    field: str  # dotted field path, e.g. "routes[2].path"
    message: str
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class ConfigError(PortwayError):
    """A config source could not be turned into a valid config. Lists every issue found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class HttpError(PortwayError):
    """An error answered to the client with ``status``."""

    status = 500
    reason = "internal error"
    cause = b"internal_error"  # sent as the ``portway-error`` header
    headers: tuple[tuple[bytes, bytes], ...] = ()  # extra response headers the status calls for

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.reason
        super().__init__(self.detail)


class BadRequest(HttpError):
    status = 400
    reason = "bad request"
    cause = b"bad_request"


class ClientCertificateRequired(BadRequest):
    reason = "a client certificate is required"
    cause = b"client_cert_required"


class ClientCertificateRejected(BadRequest):
    reason = "the client certificate cannot be accepted for this host"
    cause = b"client_cert_rejected"


class Forbidden(HttpError):
    status = 403
    reason = "forbidden"
    cause = b"forbidden"


class MisdirectedRequest(HttpError):
    status = 421
    reason = "misdirected request"
    cause = b"misdirected_request"


class RequestTimeout(HttpError):
    status = 408
    reason = "request header timeout"
    cause = b"request_timeout"


class PayloadTooLarge(HttpError):
    status = 413
    reason = "request body too large"
    cause = b"body_too_large"


class UriTooLong(HttpError):
    status = 414
    reason = "request line too long"
    cause = b"uri_too_long"


class HeadersTooLarge(HttpError):
    status = 431
    reason = "request header fields too large"
    cause = b"headers_too_large"


class NotImplemented_(HttpError):
    status = 501
    reason = "not implemented"
    cause = b"not_implemented"


class VersionNotSupported(HttpError):
    status = 505
    reason = "HTTP version not supported"
    cause = b"version_not_supported"
