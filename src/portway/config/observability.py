"""What Portway shows about itself: the access log and the admin listener."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from portway.config.types import Address, parse_host_port


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


class AdminConfig(_Model):
    """The admin listener: health, config, routes, services, metrics, dashboard."""

    address: Address | None = Field(
        "127.0.0.1:9901", description="`host:port` of the admin API; none: no admin listener."
    )
    token: str | None = Field(
        None,
        description="Bearer token the admin API requires; mandatory when the address is not "
        "loopback.",
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
