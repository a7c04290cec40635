"""What Portway shows about itself: the access log, tracing and the admin listener."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from portway.config.types import SECRET, Address, parse_host_port


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class AccessLogConfig(_Model):
    """One line per request, written by a thread of its own, never by the event loop."""

    enabled: bool = Field(True, description="Write the access log.")
    format: Literal["json", "common", "combined"] = Field(
        "json", description="`json` (every field), or Apache's `common` / `combined`."
    )
    path: str = Field("-", description="File to append to; `-` is standard error.")
    sample_rate: Annotated[float, Field(ge=0, le=1)] = Field(
        1.0, description="Share of requests logged; errors (status >= 500) always are."
    )


class TracingConfig(_Model):
    """W3C trace context and OpenTelemetry spans. Propagation is always on: a valid incoming
    `traceparent` is continued, any other request starts a trace; spans are exported only when
    enabled."""

    enabled: bool = Field(
        False,
        description="Export a span per request and per upstream try, over OTLP/HTTP (protobuf).",
    )
    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP collector URL, e.g. `http://127.0.0.1:4318` (`/v1/traces` is "
        "appended when the URL has no path); none: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, "
        "`OTEL_EXPORTER_OTLP_ENDPOINT` or `http://localhost:4318`.",
    )
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = Field(
        1.0,
        description="Share of new traces sampled (decided on the trace id); a continued trace "
        "keeps its caller's decision.",
    )
    service_name: Annotated[str, Field(min_length=1)] = Field(
        "portway", description="`service.name` of the exported spans."
    )

    @model_validator(mode="after")
    def _endpoint_is_a_url(self) -> Self:
        if self.otlp_endpoint is not None:
            parts = urlsplit(self.otlp_endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(
                    f"otlp_endpoint must be an http:// or https:// URL, got {self.otlp_endpoint!r}"
                )
        return self


class AdminConfig(_Model):
    """The admin listener: health, config, routes, services, metrics, dashboard."""

    address: Address | None = Field(
        "127.0.0.1:9901", description="`host:port` of the admin API; none: no admin listener."
    )
    token: str | None = Field(
        None,
        description="Bearer token the admin API requires; mandatory when the address is not "
        "loopback.",
        json_schema_extra=SECRET,
    )

    @model_validator(mode="after")
    def _token_off_loopback(self) -> Self:
        if self.address is not None and self.token is None:
            host, _ = parse_host_port(self.address)
            if not _is_loopback(host):
                raise ValueError(
                    f"the admin listener on {self.address} is reachable from other machines: "
                    "set admin.token"
                )
        return self


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume reachable
