"""TLS settings: HTTPS listeners (certificates by SNI, mTLS, HSTS), redirects to HTTPS, TLS
passthrough, TLS to upstream instances, and ACME.

Only the shape of the settings is checked here. Whether the files hold a certificate that matches
its key, has not expired and chains up is checked by ``config.semantic`` (through ``portway.pki``),
so that ``portway validate`` reports bad material with the field that names the file.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from portway.config.types import Duration, FilePath, HostPattern


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


TlsVersion = Literal["1.2", "1.3"]


class ClientAuthConfig(_Model):
    """Mutual TLS: clients of these hosts present a certificate that a CA in `ca_file` issued."""

    mode: Literal["require", "request"] = Field(
        "require",
        description="`require`: a request without a verified client certificate answers 400; "
        "`request`: it is served without an identity.",
    )
    ca_file: FilePath = Field(description="PEM bundle of the CAs that issue client certificates.")
    allowed_subjects: list[str] = Field(
        [],
        description="If set, the certificate's subject (RFC 4514, e.g. `CN=ci,O=Example`) must be "
        "one of these; else 403.",
    )
    allowed_sans: list[str] = Field(
        [],
        description="If set, one of the certificate's DNS, URI or e-mail SANs must be one of "
        "these; else 403.",
    )


class CertificateConfig(_Model):
    """One certificate and the hosts it serves, from PEM files or obtained through ACME."""

    cert_file: FilePath | None = Field(
        None, description="PEM file: the certificate, then its intermediates (the full chain)."
    )
    key_file: FilePath | None = Field(None, description="PEM file of the private key.")
    acme: bool = Field(
        False, description="Obtain and renew this certificate for `hosts` through ACME (HTTP-01)."
    )
    hosts: list[HostPattern] = Field(
        [],
        description="SNI names served with this certificate; empty: the certificate's DNS names. "
        "Required with `acme`.",
    )
    client_auth: ClientAuthConfig | None = Field(
        None, description="Require or request client certificates for these hosts."
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        files = (self.cert_file is not None, self.key_file is not None)
        if self.acme:
            if any(files):
                raise ValueError("set either acme or cert_file/key_file, not both")
            if not self.hosts:
                raise ValueError("an acme certificate needs its hosts")
            if any(host.startswith("*.") for host in self.hosts):
                raise ValueError("ACME HTTP-01 cannot validate a wildcard host")
        elif files != (True, True):
            raise ValueError("set both cert_file and key_file (or acme: true)")
        return self


class HstsConfig(_Model):
    """The `Strict-Transport-Security` response header (RFC 6797) on HTTPS responses."""

    max_age: Annotated[int, Field(ge=0)] = Field(
        31536000, description="Seconds browsers remember to use HTTPS only."
    )
    include_subdomains: bool = Field(False, description="Add `includeSubDomains`.")
    preload: bool = Field(False, description="Add `preload`.")

    def header_value(self) -> str:
        value = f"max-age={self.max_age}"
        if self.include_subdomains:
            value += "; includeSubDomains"
        if self.preload:
            value += "; preload"
        return value


class ListenerTlsConfig(_Model):
    """TLS termination on a listener: the certificate is chosen by SNI (exact name, then the
    one-label wildcard, then the default certificate)."""

    certificates: list[CertificateConfig] = Field(
        min_length=1, description="Certificates and the hosts each serves."
    )
    default_certificate: HostPattern | None = Field(
        None,
        description="A host whose certificate answers clients without SNI or with an unknown "
        "name; none: the first certificate.",
    )
    unknown_sni: Literal["default", "reject"] = Field(
        "default",
        description="A client asking for a name no certificate serves: `default` certificate, "
        "or `reject` the handshake (alert unrecognized_name).",
    )
    min_version: TlsVersion = Field("1.2", description="Oldest TLS version accepted.")
    ciphers: str | None = Field(
        None, description="OpenSSL cipher list for TLS 1.2; none: OpenSSL's secure default."
    )
    alpn: list[str] = Field(
        ["http/1.1"],
        description="Application protocols offered through ALPN (RFC 7301); today `http/1.1`.",
    )
    session_tickets: bool = Field(True, description="Offer session resumption tickets.")
    ticket_key_rotation: Duration = Field(
        3600.0,
        description="Session ticket keys are replaced this often; a ticket issued before a "
        "rotation needs a full handshake.",
    )
    handshake_timeout: Duration = Field(
        10.0, description="A client that does not finish the handshake in time is dropped."
    )
    hsts: HstsConfig | None = Field(
        None, description="Send `Strict-Transport-Security` on responses; none: do not."
    )
    reload_interval: Duration = Field(
        2.0, description="How often certificate files are checked for changes."
    )

    @field_validator("ciphers")
    @classmethod
    def _ciphers_known(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(value)
            except ssl.SSLError:
                raise ValueError(f"OpenSSL knows no cipher in {value!r}") from None
        return value

    @field_validator("alpn")
    @classmethod
    def _alpn_served(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("offer at least one protocol")
        for protocol in value:
            if protocol == "h2":
                raise ValueError(
                    "h2 is not served yet: Portway speaks HTTP/1.1 to clients, and offering h2 "
                    "would make clients that pick it fail"
                )
            if protocol != "http/1.1":
                raise ValueError(f"unknown ALPN protocol {protocol!r} (served: http/1.1)")
        return value

    @field_validator("ticket_key_rotation")
    @classmethod
    def _rotation_positive(cls, value: float) -> float:
        if value < 60:
            raise ValueError("rotate ticket keys no more often than every 60s")
        return value


class HttpsRedirectConfig(_Model):
    """Answer plain-HTTP requests with a redirect to the same URL over HTTPS."""

    port: Annotated[int, Field(ge=1, le=65535)] = Field(
        443, description="The HTTPS port in the `Location` (omitted when 443)."
    )
    hosts: list[HostPattern] = Field([], description="Hosts redirected; empty: every host.")
    status: Literal[301, 302, 307, 308] = Field(
        308, description="Redirect status; 308 keeps the method and body."
    )


class PassthroughRouteConfig(_Model):
    """Sends TLS connections whose SNI names one of `hosts` to `service`, unterminated."""

    hosts: list[HostPattern] = Field(min_length=1, description="SNI names, or `*.domain`.")
    service: str = Field(description="The service whose instances receive the TLS stream.")


class PassthroughConfig(_Model):
    """A TLS passthrough listener: reads the SNI of the ClientHello without terminating TLS and
    relays the raw stream to the service its routes pick (L4 routing)."""

    routes: list[PassthroughRouteConfig] = Field(
        [], description="SNI routes: exact names first, then one-label wildcards."
    )
    default_service: str | None = Field(
        None, description="Service for connections with no SNI or an unrouted one; none: close."
    )
    client_hello_timeout: Duration = Field(
        10.0, description="A client that sends no complete ClientHello in time is dropped."
    )


class UpstreamTlsConfig(_Model):
    """TLS from Portway as a client: to a service's instances, or to a `forward_auth` service."""

    ca_file: FilePath | None = Field(
        None, description="PEM bundle the server's certificate must chain to; none: system CAs."
    )
    verify: bool = Field(
        True, description="Verify the server's certificate and name; false only for testing."
    )
    server_name: HostPattern | None = Field(
        None, description="SNI sent and name verified; none: the instance's (or URL's) host."
    )
    cert_file: FilePath | None = Field(
        None, description="Client certificate (PEM chain) for mTLS to the server."
    )
    key_file: FilePath | None = Field(None, description="Its private key (PEM).")
    min_version: TlsVersion = Field("1.2", description="Oldest TLS version accepted.")

    @model_validator(mode="after")
    def _client_pair(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file for a client certificate, or neither")
        return self


class AcmeConfig(_Model):
    """ACME (RFC 8555) account and storage for `acme: true` certificates, validated by HTTP-01
    on the plain-HTTP listeners (port 80 for a public CA)."""

    directory_url: str = Field(
        "https://acme-v02.api.letsencrypt.org/directory", description="The ACME directory URL."
    )
    email: str | None = Field(None, description="Contact address for the account.")
    state_dir: FilePath = Field(
        "portway-acme", description="Where the account key, certificates and challenges are kept."
    )
    ca_file: FilePath | None = Field(
        None, description="PEM bundle to trust for the ACME server's HTTPS; none: system CAs."
    )
    renew_after: Annotated[float, Field(gt=0, lt=1)] = Field(
        2 / 3, description="Renew once this share of a certificate's lifetime has passed."
    )
    retry_interval: Duration = Field(
        300.0, description="A failed order or renewal is tried again after this long."
    )

    def certificate_paths(self, hosts: list[str]) -> tuple[Path, Path]:
        """Where the certificate (full chain) and key for ``hosts`` are kept: named after the
        first host, which ACME certificates require."""
        folder = Path(self.state_dir) / "certificates" / hosts[0]
        return folder / "fullchain.pem", folder / "privkey.pem"

    @property
    def challenge_dir(self) -> Path:
        """HTTP-01 key authorizations, one file per token, served by every worker."""
        return Path(self.state_dir) / "challenges"

    @field_validator("directory_url")
    @classmethod
    def _https_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ValueError(f"expected an https:// URL, got {value!r}")
        return value
