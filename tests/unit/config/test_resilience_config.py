"""The resilience part of a service's config: defaults, parsing and what is refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from portway.config.model import ServiceConfig
from portway.config.resilience import parse_status_ranges


def service(**fields: object) -> ServiceConfig:
    return ServiceConfig.model_validate({"instances": ["127.0.0.1:1"], **fields})


def test_defaults_are_the_safe_ones() -> None:
    s = service()
    assert s.health_check is None  # needs a path the instances answer
    assert s.outlier_detection.enabled and s.outlier_detection.consecutive_5xx == 5
    assert s.outlier_detection.max_ejection_percent == 50
    assert s.retries.attempts == 2 and s.retries.on_statuses == [502, 503, 504]
    assert not s.retries.non_idempotent
    assert s.retries.buffer_limit == 64 * 1024
    assert s.panic_threshold == 50 and s.slow_start == 0.0
    assert (s.circuit_breaker.max_requests, s.circuit_breaker.max_connections) == (0, 0)
    assert (s.try_timeout, s.request_timeout) == (0.0, 0.0)


def test_health_check_status_ranges() -> None:
    check = service(health_check={"expected_statuses": ["200-299", 304, "418"]}).health_check
    assert check is not None
    assert check.status_ranges == ((200, 299), (304, 304), (418, 418))
    assert parse_status_ranges(["500-599"]) == ((500, 599),)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        (
            {"health_check": {"expected_statuses": ["299-200"]}},
            "expected_statuses",
            "empty status range",
        ),
        (
            {"health_check": {"expected_statuses": ["2xx"]}},
            "expected_statuses",
            "expected a status",
        ),
        ({"health_check": {"expected_statuses": []}}, "expected_statuses", "at least one"),
        ({"health_check": {"path": "healthz"}}, "path", "must start with '/'"),
        ({"health_check": {"interval": 0}}, "health_check", "greater than 0"),
        ({"retries": {"on_statuses": [404]}}, "on_statuses", "only 5xx"),
        ({"outlier_detection": {"failure_rate": {"window": 0}}}, "window", "longer than 0"),
        ({"outlier_detection": {"max_ejection_percent": 101}}, "max_ejection_percent", "100"),
        ({"outlier_detection": {"base_ejection_time": ".nan"}}, "base_ejection_time", "duration"),
        ({"panic_threshold": -1}, "panic_threshold", "0"),
        ({"retries": {"bogus": 1}}, "bogus", "Extra inputs"),
    ],
)
def test_bad_values_are_refused_at_their_field(
    fields: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        service(**fields)
    error = caught.value.errors()[0]
    assert field in ".".join(str(part) for part in error["loc"])
    assert message in error["msg"]
