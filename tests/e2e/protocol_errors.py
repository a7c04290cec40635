"""What every protocol error answer must look like, shared by the limit and bad-input tests."""

from __future__ import annotations

from tests.support.client import Response

# The machine-readable cause each protocol error status carries in ``portway-error``.
CAUSES = {
    400: ("bad_request",),
    405: ("method_not_allowed",),
    408: ("request_timeout",),
    413: ("body_too_large",),
    414: ("uri_too_long",),
    431: ("headers_too_large",),
    501: ("not_implemented", "upgrade_not_supported"),
    505: ("version_not_supported",),
}


def assert_error(response: Response, status: int, reason: str) -> None:
    """A protocol error answer: status, cause, close, and the reason and request id in the body."""
    assert response.status == status, (response.status, response.body)
    assert response.header("portway-error") in CAUSES[response.status]
    assert response.header("connection") == "close"
    body = response.body.decode("latin-1")
    assert body.startswith(f"{status} "), body
    assert reason.lower() in body.lower(), body
    rid = response.header("x-request-id")
    assert rid, response.headers
    assert f"request id: {rid}" in body
