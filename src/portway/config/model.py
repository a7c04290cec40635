"""The native config model: what users write in YAML, typed and validated.

Every model is frozen and rejects unknown keys. Field-level rules live here (a regex must compile,
a host must be a DNS name or a one-label wildcard); rules that span fields or sections (a route
names a service that exists) live in ``config.semantic`` so that every issue is reported with its
field path.
Each field's ``description`` feeds the generated reference (``config.reference``): keep them short.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from portway.config.observability import AccessLogConfig, AdminConfig, TracingConfig
from portway.config.policies import PolicyConfig, RedisConfig
from portway.config.resilience import (
    CircuitBreakerConfig,
    HealthCheckConfig,
    OutlierDetectionConfig,
    RetryConfig,
)
from portway.config.rewrites import RedirectConfig, RewriteConfig
from portway.config.tls import (
    AcmeConfig,
    HttpsRedirectConfig,
    ListenerTlsConfig,
    PassthroughConfig,
    UpstreamTlsConfig,
)
from portway.config.types import Address, Cidr, Duration, HostPattern, Size


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


# ---------------------------------------------------------------------------------------- server


class LimitsConfig(Model):
    """Request limits; exceeding one answers the status named beside it."""

    max_request_line: Size = Field(
        8192,
        description="Longest request-target (the URL in the request line); longer answers 414.",
    )
    max_header_bytes: Size = Field(
        32768, description="All header lines together; more answers 431."
    )
    max_header_count: Annotated[int, Field(ge=1)] = Field(
        100, description="Most header lines in one request; more answers 431."
    )
    max_body_bytes: Size = Field(
        100 * 1024 * 1024, description="Largest request body; larger answers 413. 0: no limit."
    )


class TimeoutsConfig(Model):
    """How long Portway waits for clients."""

    header: Duration = Field(10.0, description="408 when the request head is not complete in time.")
    keepalive: Duration = Field(60.0, description="An idle client connection is closed after this.")
    body: Duration = Field(
        60.0, description="408 when the client sends no request body bytes for this long."
    )
    drain: Duration = Field(
        30.0, description="On SIGTERM, in-flight requests get this long to finish."
    )


class ListenerConfig(Model):
    """An address Portway accepts client connections on."""

    address: Address = Field(description="`host:port` to listen on; `[v6]:port` for IPv6.")
    name: str | None = Field(None, description="A label for logs and metrics.")
    tls: ListenerTlsConfig | None = Field(
        None, description="Terminate TLS (HTTPS); none: plain HTTP."
    )
    https_redirect: HttpsRedirectConfig | None = Field(
        None, description="On a plain-HTTP listener: redirect requests to HTTPS."
    )
    passthrough: PassthroughConfig | None = Field(
        None, description="Relay TLS unterminated to the service its SNI routes pick."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if self.passthrough is not None and (self.tls is not None or self.https_redirect):
            raise ValueError("a passthrough listener has no tls or https_redirect of its own")
        if self.tls is not None and self.https_redirect is not None:
            raise ValueError("https_redirect belongs on a plain-HTTP listener, not a TLS one")
        return self


class ServerConfig(Model):
    """Static settings: changing them needs a restart."""

    limits: LimitsConfig = Field(LimitsConfig(), description="Request size limits.")
    timeouts: TimeoutsConfig = Field(TimeoutsConfig(), description="Client-side timeouts.")
    trusted_proxies: list[Cidr] = Field(
        [],
        description="Clients whose X-Forwarded-* / Forwarded headers are believed; "
        "everyone else's are replaced.",
    )
    explain_from: list[Cidr] = Field(
        [],
        description="Clients that may ask for the routing decision trace with the "
        "`x-portway-explain` header.",
    )
    # RFC 3986 keeps "//" meaningful, so merging is opt-in.
    merge_slashes: bool = Field(False, description="Merge repeated slashes in request paths.")
    access_log: AccessLogConfig = Field(AccessLogConfig(), description="One line per request.")
    tracing: TracingConfig = Field(
        TracingConfig(), description="W3C trace context (always) and OpenTelemetry spans."
    )


# -------------------------------------------------------------------------------------- services


def _instance_shorthand(value: object) -> object:
    if isinstance(value, str):
        return {"address": value}
    if not isinstance(value, dict):
        raise ValueError(
            f"expected an address 'host:port' or a mapping with 'address', got {value!r}"
        )
    return value


class InstanceConfig(Model):
    """One backend of a service. A plain `host:port` string is short for `{address: host:port}`."""

    address: Address = Field(description="`host:port` of the instance.")
    weight: Annotated[int, Field(ge=1, le=10000)] = Field(
        1, description="Relative share of traffic."
    )


class HashOn(Model):
    """The key of consistent hashing: exactly one of header, cookie, client_ip."""

    header: str | None = Field(None, description="Hash the value of this request header.")
    cookie: str | None = Field(None, description="Hash the value of this cookie.")
    client_ip: bool = Field(False, description="Hash the client IP address.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        chosen = [self.header is not None, self.cookie is not None, self.client_ip]
        if sum(chosen) != 1:
            raise ValueError("set exactly one of header, cookie or client_ip")
        return self

    @field_validator("header")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value is not None else None


class StickyConfig(Model):
    """Sticky sessions through a cookie that Portway sets; the value names an instance opaquely."""

    cookie: str = Field("portway_sticky", description="Name of the cookie.")
    max_age: Duration | None = Field(None, description="Cookie lifetime; none: a session cookie.")
    path: str = Field("/", description="Cookie `Path` attribute.")
    secure: bool = Field(False, description="Set the `Secure` attribute.")
    http_only: bool = Field(True, description="Set the `HttpOnly` attribute.")


class PoolConfig(Model):
    """Upstream connections kept per instance and per worker."""

    max_idle: Annotated[int, Field(ge=0)] = Field(
        256, description="Idle connections kept per instance."
    )
    idle_timeout: Duration = Field(60.0, description="An idle connection is closed after this.")


Algorithm = Literal["round_robin", "least_request", "random", "ring_hash", "maglev"]


class ServiceConfig(Model):
    """A named group of interchangeable instances that routes send requests to."""

    instances: list[Annotated[InstanceConfig, BeforeValidator(_instance_shorthand)]] = Field(
        description="The backends; an empty list answers 503."
    )
    algorithm: Algorithm = Field("round_robin", description="How an instance is picked.")
    hash_on: HashOn | None = Field(
        None, description="Key for ring_hash / maglev; none: the client IP."
    )
    sticky: StickyConfig | None = Field(
        None, description="Pin each client to one instance with a cookie."
    )
    connect_timeout: Duration = Field(
        5.0, description="504 when no instance accepts the connection in time."
    )
    read_timeout: Duration = Field(
        60.0, description="504 when the instance sends nothing for this long."
    )
    connect_retries: Annotated[int, Field(ge=0, le=10)] = Field(
        2, description="Other instances tried when connecting fails."
    )
    rewrite_host: bool = Field(
        False, description="Send the instance's host:port as Host instead of the client's."
    )
    tls: UpstreamTlsConfig | None = Field(
        None, description="Speak TLS to the instances; none: plain HTTP."
    )
    unavailable: str | None = Field(
        None,
        description="Why the service has no instances (e.g. a Kubernetes Service that does not "
        "exist); requests answer 503 `backend_not_found` saying so.",
    )
    pool: PoolConfig = Field(PoolConfig(), description="Upstream connection reuse.")
    try_timeout: Duration = Field(
        0.0, description="504 (or a retry) when one try gets no response head in time; 0: off."
    )
    request_timeout: Duration = Field(
        0.0, description="504 when the whole request, retries included, takes longer; 0: off."
    )
    health_check: HealthCheckConfig | None = Field(
        None, description="Active health checks; none: off."
    )
    outlier_detection: OutlierDetectionConfig = Field(
        OutlierDetectionConfig(), description="Passive health: eject instances that fail requests."
    )
    panic_threshold: Annotated[int, Field(ge=0, le=100)] = Field(
        50,
        description="Below this percentage of available instances, send to all of them; 0: off.",
    )
    slow_start: Duration = Field(
        0.0, description="A new or recovered instance's share ramps up over this long; 0: off."
    )
    retries: RetryConfig = Field(RetryConfig(), description="Trying again on another instance.")
    circuit_breaker: CircuitBreakerConfig = Field(
        CircuitBreakerConfig(), description="Per-worker limits; overflow answers 503 at once."
    )


# ---------------------------------------------------------------------------------------- routes


def _compile_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return pattern


def _http_method(value: str) -> str:
    method = value.upper()
    if not method.isalpha():
        raise ValueError(f"not an HTTP method: {method!r}")
    return method


class ValueMatch(Model):
    """Matches a named value (a header or query parameter): exactly one of exact, regex, present."""

    name: str = Field(description="Name of the value to match.")
    exact: str | None = Field(None, description="The value must equal this.")
    regex: str | None = Field(None, description="The whole value must match this expression.")
    present: bool | None = Field(None, description="true: must be present; false: must be absent.")

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        return _compile_regex(value) if value is not None else None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if sum(x is not None for x in (self.exact, self.regex, self.present)) != 1:
            raise ValueError("set exactly one of exact, regex or present")
        return self


class HeaderMatch(ValueMatch):
    """Matches a request header (case-insensitive name): exactly one of exact, regex, present."""

    @field_validator("name")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class QueryMatch(ValueMatch):
    """Matches a query parameter: exactly one of exact, regex, present."""


PathType = Literal["exact", "prefix", "regex"]


def _lower_path_type(value: object) -> object:
    # Accept the Kubernetes spelling (Exact, Prefix) too.
    return value.lower() if isinstance(value, str) else value


def _path_problem(data: object) -> str | None:
    """What is wrong with a route's raw ``path`` given its ``path_type``, if anything.

    Works on the raw input so that it can run even when other fields of the route are invalid; a
    path or path_type of the wrong type is left to the field validators.
    """
    if not isinstance(data, dict):
        return None
    path, path_type = data.get("path", "/"), data.get("path_type", "prefix")
    if not isinstance(path, str) or not isinstance(path_type, str):
        return None
    path, path_type = path.strip(), path_type.strip().lower()
    if path_type == "regex":
        try:
            _compile_regex(path)
        except ValueError as exc:
            return str(exc)
    elif path_type in ("exact", "prefix") and not path.startswith("/"):
        return f"path must start with '/': {path!r}"
    return None


class RouteConfig(Model):
    """Which requests go to which service. Every match condition given must hold."""

    name: str | None = Field(None, description="Used in logs and metrics; none: `route-<index>`.")
    hosts: list[HostPattern] = Field(
        [], description="Host names, or `*.domain` for one label; empty: any host."
    )
    path: str = Field("/", description="The path to match, as path_type says.")
    path_type: Annotated[PathType, BeforeValidator(_lower_path_type)] = Field(
        "prefix", description="How `path` is compared with the request path."
    )
    methods: list[Annotated[str, AfterValidator(_http_method)]] = Field(
        [], description="HTTP methods; empty: any method."
    )
    headers: list[HeaderMatch] = Field([], description="Header conditions; all must hold.")
    query: list[QueryMatch] = Field([], description="Query parameter conditions; all must hold.")
    service: str | None = Field(
        None,
        description="Name of the service in `services` that gets the requests (none only with "
        "`redirect`).",
    )
    policies: list[str] = Field(
        [],
        description="Names of `policies` applied to these requests, run in phase order whatever "
        "the order here: address filters, CORS, authentication, rate limits.",
    )
    rewrite: RewriteConfig | None = Field(
        None, description="Change the path or Host sent upstream (after the policies pass)."
    )
    redirect: RedirectConfig | None = Field(
        None, description="Answer with a redirect instead of forwarding (no service then)."
    )

    @model_validator(mode="after")
    def _service_or_redirect(self) -> Self:
        # A redirect answers without a service (a missing one is reported by the wrap validator).
        if self.service is not None and self.redirect is not None:
            raise ValueError("set exactly one of service or redirect")
        if self.redirect is not None and self.rewrite is not None:
            raise ValueError("a redirect route forwards nothing: rewrite does not apply")
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _path_fits_path_type(cls, data: object, handler: ModelWrapValidatorHandler[Self]) -> Self:
        # A wrap validator (not "after") so that the path is checked even when another field of
        # the route is invalid, and so that the problem is reported at ``path``, not the route.
        problem = _path_problem(data)
        # A service is required unless the route redirects: reported with the other errors too.
        missing = isinstance(data, dict) and data.get("service") is data.get("redirect") is None
        if problem is None and not missing:
            return handler(data)
        assert isinstance(data, dict)  # both are only found in a mapping
        errors: list[InitErrorDetails] = []
        if missing:
            errors.append(InitErrorDetails(type="missing", loc=("service",), input=data))
        if problem is not None:
            errors.append(
                InitErrorDetails(
                    type=PydanticCustomError("value_error", problem),
                    loc=("path",),
                    input=data.get("path"),
                )
            )
        try:
            handler(data)
        except ValidationError as exc:
            errors = [
                InitErrorDetails(
                    type=PydanticCustomError(error["type"], error["msg"]),
                    loc=error["loc"],
                    input=error["input"],
                )
                for error in exc.errors(include_url=False)
            ] + errors
        raise ValidationError.from_exception_data(cls.__name__, errors)


# ---------------------------------------------------------------------------------------- root


class Config(Model):
    """A whole native config file."""

    listeners: list[ListenerConfig] = Field(
        [ListenerConfig(address="127.0.0.1:8080")], description="Where clients connect."
    )
    server: ServerConfig = Field(ServerConfig(), description="Static server settings.")
    services: dict[str, ServiceConfig] = Field(
        {}, description="Backends by name; names are lower-case (they become metric labels)."
    )
    routes: list[RouteConfig] = Field(
        [], description="Request matching rules, each sending to one service."
    )
    policies: dict[str, PolicyConfig] = Field(
        {}, description="Address filters, CORS, authentication and rate limits by name, for routes."
    )
    redis: RedisConfig | None = Field(
        None, description="Where `store: redis` rate limits share their counts."
    )
    admin: AdminConfig = Field(AdminConfig(), description="The admin listener.")
    acme: AcmeConfig = Field(
        AcmeConfig(), description="ACME account and storage for `acme: true` certificates."
    )
