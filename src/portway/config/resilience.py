"""How a service survives failing instances: health checks, outlier ejection, retries, limits.

Defaults are the safe ones: passive outlier detection and retries of idempotent requests are on;
active health checks run only when configured (they need a path the instances answer); circuit
breaker limits are off (0) until set, since any default would be wrong for someone's traffic.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from portway.config.types import Duration, Size


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


_STATUS_RANGE = re.compile(r"^([1-5][0-9][0-9])(?:-([1-5][0-9][0-9]))?$")


def parse_status_ranges(values: list[str | int]) -> tuple[tuple[int, int], ...]:
    """``["200-399", 404]`` -> ((200, 399), (404, 404))."""
    ranges = []
    for value in values:
        match = _STATUS_RANGE.match(str(value).strip())
        if not match:
            raise ValueError(f"expected a status like 200 or a range like 200-399, got {value!r}")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if high < low:
            raise ValueError(f"empty status range {value!r}")
        ranges.append((low, high))
    return tuple(ranges)


class HealthCheckConfig(_Model):
    """Active health checks: one prober per gateway probes every instance of the service."""

    type: Literal["http", "tcp"] = Field(
        "http", description="`http` request or bare `tcp` connect."
    )
    path: str = Field("/healthz", description="Path of the HTTP check.")
    method: Literal["GET", "HEAD"] = Field("GET", description="Method of the HTTP check.")
    host: str | None = Field(
        None, description="Host header of the check; none: the instance address."
    )
    expected_statuses: list[str | int] = Field(
        ["200-399"], description="Statuses or ranges that count as healthy."
    )
    body_contains: str | None = Field(
        None, description="The response body must contain this text (first 64 KiB)."
    )
    interval: Duration = Field(5.0, description="Time between checks of one instance.")
    timeout: Duration = Field(2.0, description="A check not answered in time fails.")
    jitter: Duration = Field(
        0.5, description="Random extra delay added to each interval, up to this."
    )
    healthy_threshold: Annotated[int, Field(ge=1)] = Field(
        2, description="Consecutive successes that mark an unhealthy instance healthy."
    )
    unhealthy_threshold: Annotated[int, Field(ge=1)] = Field(
        3, description="Consecutive failures that mark a healthy instance unhealthy."
    )

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"path must start with '/': {value!r}")
        return value

    @field_validator("expected_statuses")
    @classmethod
    def _statuses(cls, value: list[str | int]) -> list[str | int]:
        if not value:
            raise ValueError("list at least one status or range")
        parse_status_ranges(value)
        return value

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> Self:
        if self.timeout <= 0 or self.interval <= 0:
            raise ValueError("interval and timeout must be greater than 0")
        return self

    @property
    def status_ranges(self) -> tuple[tuple[int, int], ...]:
        return parse_status_ranges(self.expected_statuses)


class FailureRateConfig(_Model):
    """Eject an instance whose share of failed requests in a window is too high."""

    threshold: Annotated[float, Field(gt=0, le=1)] = Field(
        0.5, description="Failed share (5xx, resets, timeouts, connect failures) that ejects."
    )
    minimum_requests: Annotated[int, Field(ge=1)] = Field(
        20, description="Requests in the window before the rate counts."
    )
    window: Duration = Field(10.0, description="Length of the window.")

    @field_validator("window")
    @classmethod
    def _positive_window(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("the window must be longer than 0")
        return value


class OutlierDetectionConfig(_Model):
    """Passive health: each worker ejects instances that fail the requests it sends them."""

    enabled: bool = Field(True, description="Eject instances on observed failures.")
    consecutive_5xx: Annotated[int, Field(ge=0)] = Field(
        5, description="Consecutive 5xx answers, resets or timeouts that eject; 0: off."
    )
    consecutive_connect_failures: Annotated[int, Field(ge=0)] = Field(
        1, description="Consecutive refused / timed-out connects that eject; 0: off."
    )
    failure_rate: FailureRateConfig | None = Field(
        None, description="Eject on a failure rate over a window; none: off."
    )
    base_ejection_time: Duration = Field(
        5.0, description="First ejection lasts this; each further one multiplies it."
    )
    max_ejection_time: Duration = Field(300.0, description="Cap on one ejection's length.")
    max_ejection_percent: Annotated[int, Field(ge=0, le=100)] = Field(
        50, description="Never eject more than this share of the instances."
    )


class RetryConfig(_Model):
    """Trying a request again on another instance."""

    attempts: Annotated[int, Field(ge=0, le=10)] = Field(
        2, description="Retries after the first try (connect failures, resets, `on_statuses`)."
    )
    on_statuses: list[int] = Field(
        [502, 503, 504], description="Upstream statuses that are retried (idempotent methods)."
    )
    non_idempotent: bool = Field(
        False, description="Also retry POST/PATCH after a reset or status (not safe in general)."
    )
    backoff_base: Duration = Field(0.025, description="First retry waits up to this (full jitter).")
    backoff_max: Duration = Field(0.25, description="Cap of the exponential back-off.")
    budget_percent: Annotated[int, Field(ge=0, le=100)] = Field(
        20, description="Retries in flight may be at most this share of requests in flight."
    )
    min_concurrent_retries: Annotated[int, Field(ge=0)] = Field(
        3, description="Retries always allowed in flight, whatever the budget says."
    )
    buffer_limit: Size = Field(
        64 * 1024, description="Request bodies up to this are kept so they can be sent again."
    )

    @field_validator("on_statuses")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        for status in value:
            if not 500 <= status <= 599:
                raise ValueError(f"only 5xx statuses can be retried, got {status}")
        return value


class CircuitBreakerConfig(_Model):
    """Limits per service and per worker; overflow answers 503 at once. 0: no limit."""

    max_connections: Annotated[int, Field(ge=0)] = Field(
        0, description="Upstream connections open to all instances together."
    )
    max_pending: Annotated[int, Field(ge=0)] = Field(
        0, description="Requests waiting for a connection (when max_connections is reached)."
    )
    max_requests: Annotated[int, Field(ge=0)] = Field(0, description="Requests in flight.")
