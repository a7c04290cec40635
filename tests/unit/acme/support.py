"""A CA in memory standing in for an ACME server, so the manager's decisions (what is due, what is
written, what is recorded) are tested without a network; tests/e2e/test_acme.py uses pebble."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trustme

from portway.acme import AcmeError, IssuedCertificate
from portway.config.model import Config
from portway.config.tls import AcmeConfig

HOSTS = ["portway.test", "www.portway.test"]
OTHER = ["api.portway.test"]
DAY = 86400.0


class Clock:
    """Wall-clock time plus ``offset`` seconds."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def moment(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self(), dt.UTC).replace(microsecond=0)


class FakeIssuer:
    """Issues from a trustme CA for ``lifetime`` seconds starting now (by ``clock``), or fails as
    told. Every instance the factory makes shares the counters of its ``FakeCA``."""

    def __init__(self, ca: FakeCA, config: AcmeConfig) -> None:
        self.ca = ca
        self.config = config

    def account_url(self) -> str:
        self.ca.connects += 1
        if self.ca.connect_error is not None:
            raise AcmeError(self.ca.connect_error)
        return "https://ca.test/account/1"

    def obtain(self, hosts: Sequence[str]) -> IssuedCertificate:
        self.ca.orders.append(tuple(hosts))
        if self.ca.order_error is not None:
            raise self.ca.order_error
        names = self.ca.names or list(hosts)
        return self.ca.issue(names, hosts)

    def close(self) -> None:
        self.ca.closed += 1


class FakeCA:
    """The factory the manager is given, and what its issuers did."""

    def __init__(self, clock: Clock, lifetime: float = 90 * DAY) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.trustme = trustme.CA()
        self.orders: list[tuple[str, ...]] = []
        self.connects = 0
        self.closed = 0
        self.connect_error: str | None = None
        self.order_error: Exception | None = None
        self.names: list[str] | None = None  # issue for these names instead of the hosts asked

    def __call__(self, config: AcmeConfig) -> FakeIssuer:
        return FakeIssuer(self, config)

    def issue(
        self, names: Sequence[str], hosts: Sequence[str], not_before: dt.datetime | None = None
    ) -> IssuedCertificate:
        start = not_before or self.clock.moment()
        leaf = self.trustme.issue_cert(
            *names, not_before=start, not_after=start + dt.timedelta(seconds=self.lifetime)
        )
        chain = leaf.cert_chain_pems[0].bytes() + self.trustme.cert_pem.bytes()
        return IssuedCertificate(tuple(hosts), chain, leaf.private_key_pem.bytes())


def make_config(state_dir: Path, *certificates: list[str], **acme: Any) -> Config:
    return Config.model_validate(
        {
            "listeners": [
                {"address": "127.0.0.1:0"},
                {
                    "address": "127.0.0.1:0",
                    "tls": {"certificates": [{"acme": True, "hosts": h} for h in certificates]},
                },
            ],
            "acme": {"directory_url": "https://ca.test/dir", "state_dir": str(state_dir), **acme},
        }
    )


def install(config: Config, hosts: list[str], issued: IssuedCertificate) -> tuple[Path, Path]:
    """Put certificate files in place as a previous run would have left them."""
    cert_file, key_file = config.acme.certificate_paths(hosts)
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    cert_file.write_bytes(issued.fullchain_pem)
    key_file.write_bytes(issued.key_pem)
    return cert_file, key_file
