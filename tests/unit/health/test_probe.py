"""One check of one instance, against real backends on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from portway.config.resilience import HealthCheckConfig
from portway.health.probe import ProbeResult, format_ranges, probe
from tests.support.backends import Backend, refused_port


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    with Backend("checked") as started:
        yield started


def check(**fields: Any) -> HealthCheckConfig:
    return HealthCheckConfig.model_validate({"timeout": "1s", **fields})


def run_probe(port: int, config: HealthCheckConfig, host: str = "127.0.0.1") -> ProbeResult:
    return asyncio.run(probe(host, port, config))


def test_a_2xx_answer_is_healthy_and_the_request_is_what_the_docs_say(backend: Backend) -> None:
    backend.clear_requests()
    result = run_probe(backend.port, check(path="/healthz"))
    assert result == ProbeResult(True, "status 200")
    (received,) = backend.wait_for_requests(1)
    assert (received.method, received.target, received.http_version) == ("GET", b"/healthz", "1.1")
    assert received.header("host") == backend.address
    assert received.header("connection") == "close"
    assert received.header("user-agent") == "portway-health"


def test_the_host_header_and_method_come_from_the_check(backend: Backend) -> None:
    backend.clear_requests()
    result = run_probe(backend.port, check(path="/status/204", method="HEAD", host="svc.internal"))
    assert result == ProbeResult(True, "status 204")
    (received,) = backend.wait_for_requests(1)
    assert received.method == "HEAD"
    assert received.header("host") == "svc.internal"


def test_a_status_outside_the_ranges_fails_naming_both(backend: Backend) -> None:
    assert run_probe(backend.port, check(path="/status/503")) == ProbeResult(
        False, "status 503 not in 200-399"
    )
    several = check(path="/status/404", expected_statuses=["200-299", 302])
    assert run_probe(backend.port, several) == ProbeResult(False, "status 404 not in 200-299, 302")
    assert run_probe(backend.port, check(path="/status/404", expected_statuses=[404])).ok


def test_body_contains_matches_or_names_the_missing_text(backend: Backend) -> None:
    # The default answer is a JSON echo naming the backend.
    assert run_probe(backend.port, check(body_contains='"backend": "checked"')).ok
    assert run_probe(backend.port, check(body_contains="ok")) == ProbeResult(
        False, "body does not contain 'ok'"
    )


def test_body_contains_reads_a_close_delimited_body_to_its_end(backend: Backend) -> None:
    result = run_probe(backend.port, check(path="/until-close", body_contains="until close"))
    assert result == ProbeResult(True, "status 200")


def test_an_instance_that_never_answers_times_out_within_the_timeout(backend: Backend) -> None:
    started = time.monotonic()
    result = run_probe(backend.port, check(path="/hang", timeout="200ms"))
    elapsed = time.monotonic() - started
    assert result == ProbeResult(False, "timeout after 0.2s")
    assert 0.15 < elapsed < 1.0


def test_a_refused_connection_fails() -> None:
    assert run_probe(refused_port(), check()) == ProbeResult(False, "connection refused")
    assert run_probe(refused_port(), check(type="tcp")) == ProbeResult(False, "connection refused")


def test_a_reset_or_empty_answer_fails(backend: Backend) -> None:
    result = run_probe(backend.port, check(path="/reset"))
    assert not result.ok
    assert result.detail in {"connection reset", "connection closed before a response"}


def test_a_tcp_check_only_connects(backend: Backend) -> None:
    backend.clear_requests()
    before = backend.connections_accepted
    assert run_probe(backend.port, check(type="tcp")) == ProbeResult(True, "connected")
    deadline = time.monotonic() + 2
    while backend.connections_accepted == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert backend.connections_accepted == before + 1
    assert backend.requests == []


def test_a_path_with_a_query_is_sent_as_written(backend: Backend) -> None:
    backend.clear_requests()
    result = run_probe(backend.port, check(path="/ready?full=1", body_contains="full=1"))
    assert result.ok, result
    assert backend.wait_for_requests(1)[0].target == b"/ready?full=1"


def test_body_contains_looks_at_the_first_64_kib_only(backend: Backend) -> None:
    # A 10 MB body without the text: the check gives up after 64 KiB instead of reading it all.
    started = time.monotonic()
    result = run_probe(backend.port, check(path="/stream?bytes=10000000", body_contains="nope!"))
    assert result == ProbeResult(False, "body does not contain 'nope!'")
    assert time.monotonic() - started < 0.5


def test_format_ranges() -> None:
    assert format_ranges(((200, 399),)) == "200-399"
    assert format_ranges(((200, 299), (404, 404))) == "200-299, 404"
