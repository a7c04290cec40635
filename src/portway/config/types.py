"""Small value types shared by the config model: durations, sizes, addresses, CIDRs."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Final

from pydantic import AfterValidator, BeforeValidator, JsonValue, ValidationInfo

# Marks a field whose value is a secret (``json_schema_extra=SECRET``): JSON Schema's ``writeOnly``
# (the value goes in, it does not come back out), so the admin API's ``/config`` shows it redacted
# and its OpenAPI document says so.
SECRET: Final[dict[str, JsonValue]] = {"writeOnly": True}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> float:
    """``5``, ``2.5``, ``"100ms"``, ``"5s"``, ``"2m"``, ``"1h"`` -> seconds (float, >= 0)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s, 250ms or 2m, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError(f"expected a duration such as 5s, 250ms or 2m, got {value!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be a finite number of seconds, got {value!r}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


_SIZE = re.compile(r"^\s*(\d+)\s*(b|k|kb|ki|kib|m|mb|mi|mib|g|gb|gi|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1, "b": 1,
    "k": 1024, "kb": 1000, "ki": 1024, "kib": 1024,
    "m": 1024**2, "mb": 1000**2, "mi": 1024**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gi": 1024**3, "gib": 1024**3,
}  # fmt: skip


def parse_size(value: object) -> int:
    """``1024``, ``"64k"``/``"64KiB"`` (1024-based), ``"10MB"`` (1000-based) -> bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 8k or 10MiB, not a boolean")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        unit = m.group(2).lower() if m.group(2) else None
        size = int(m.group(1)) * _SIZE_UNITS[unit]
    else:
        raise ValueError(f"expected a size such as 8192, 8k or 10MiB, got {value!r}")
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


def parse_host_port(value: object) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> (host, port). The host is kept as written."""
    if not isinstance(value, str):
        raise ValueError(f"expected 'host:port', got {value!r}")
    text = value.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected '[ipv6]:port', got {value!r}")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"expected 'host:port' with a port, got {value!r}")
        if ":" in host:
            raise ValueError(f"an IPv6 address needs brackets: '[{host}]:{port_text}'")
    if not host:
        raise ValueError(f"missing host in {value!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535 in {value!r}")
    return host, int(port_text)


def format_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _address(value: object) -> str:
    host, port = parse_host_port(value)
    return format_host_port(host, port)


def _cidr(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a CIDR such as 10.0.0.0/8, got {value!r}")
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError as exc:
        raise ValueError(f"not a valid IP network: {value!r} ({exc})") from None


_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def validate_host_pattern(value: str) -> str:
    """A DNS name, or ``*.`` followed by one (Kubernetes: the wildcard covers exactly one label)."""
    host = value.strip().lower().rstrip(".")
    if ":" in host:
        raise ValueError(f"a route host has no port: {value!r}")
    labels = host.split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if not labels:
            raise ValueError("a wildcard host needs a domain after '*.' such as '*.example.com'")
    if not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError(
            f"not a valid host: {value!r} (DNS labels of a-z, 0-9 and '-', "
            "optionally starting with '*.')"
        )
    return host


def _file_path(value: object, info: ValidationInfo) -> str:
    """A path to a file; relative paths are made relative to the config file's directory (the
    loader passes it as ``base_dir`` in the validation context)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a file path, got {value!r}")
    path = Path(value.strip()).expanduser()
    context = info.context if isinstance(info.context, dict) else {}
    if path.is_absolute() or "base_dir" not in context:
        return str(path)  # without a config file, relative stays relative: to the working directory
    return str((Path(context["base_dir"]) / path).absolute())


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
Address = Annotated[str, BeforeValidator(_address)]
Cidr = Annotated[str, BeforeValidator(_cidr)]
HostPattern = Annotated[str, AfterValidator(validate_host_pattern)]
FilePath = Annotated[str, BeforeValidator(_file_path)]


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Validated CIDR strings (``Cidr`` fields) as networks to test addresses against."""
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def ip_in(ip: str, nets: tuple[IPNetwork, ...]) -> bool:
    """Whether address ``ip`` (a zone suffix ignored, IPv4-mapped IPv6 as IPv4) is in ``nets``."""
    if not nets or not ip:
        return False
    try:
        address = ipaddress.ip_address(ip.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in n for n in nets)
