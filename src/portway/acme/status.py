"""What the ACME process knows about each certificate, shared as ``state_dir/status.json``.

The ACME process is the only one that orders certificates, but the admin API and the metrics run
in other processes: a small JSON file, replaced atomically after every change, is the simplest
thing they can all read without talking to each other. Times are Unix seconds (what Prometheus
gauges want); ``None`` means "never" or "unknown".

Document shape::

    {"version": 1, "updated": 1732250000.0,
     "certificates": [{"hosts": ["example.com"], "cert_file": "...", "key_file": "...",
                       "serial": "3f70...", "issuer": "CN=...", "not_before": ..., "not_after": ...,
                       "renew_at": ..., "last_success": ..., "last_failure": null,
                       "last_error": null, "failures": 0, "next_attempt": ...}, ...]}
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portway.acme.files import write_atomic
from portway.config.tls import AcmeConfig

log = logging.getLogger("portway.acme")

VERSION = 1


@dataclass
class CertificateStatus:
    """One ``acme: true`` certificate: what is on disk, and how the last attempts went."""

    hosts: list[str]
    cert_file: str
    key_file: str
    serial: str | None = None  # of the certificate on disk, hex
    issuer: str | None = None  # RFC 4514
    not_before: float | None = None
    not_after: float | None = None
    renew_at: float | None = None  # not_before + renew_after x lifetime
    last_success: float | None = None
    last_failure: float | None = None
    last_error: str | None = None  # why the last attempt failed; None once one succeeds
    failures: int = 0  # consecutive failed attempts
    next_attempt: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: object) -> CertificateStatus | None:
        """A record read back, or None if it is not one (written by another version, edited)."""
        if not isinstance(data, dict):
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            record = cls(**{k: v for k, v in data.items() if k in names})
        except TypeError:
            return None
        if not isinstance(record.hosts, list) or not all(isinstance(h, str) for h in record.hosts):
            return None
        return record


def status_path(config: AcmeConfig) -> Path:
    return Path(config.state_dir) / "status.json"


def write_status(config: AcmeConfig, records: Iterable[CertificateStatus], now: float) -> None:
    document = {
        "version": VERSION,
        "updated": now,
        "certificates": [record.to_json() for record in records],
    }
    write_atomic(status_path(config), json.dumps(document, indent=2).encode() + b"\n")


def read_status(config: AcmeConfig) -> list[CertificateStatus]:
    """The records the ACME process last wrote; empty if there is no readable file yet."""
    path = status_path(config)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("ACME: ignoring unreadable %s (%s)", path, exc)
        return []
    if not isinstance(document, dict) or document.get("version") != VERSION:
        return []
    entries = document.get("certificates")
    records = [CertificateStatus.from_json(e) for e in entries] if isinstance(entries, list) else []
    return [record for record in records if record is not None]
