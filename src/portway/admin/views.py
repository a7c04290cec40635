"""The JSON bodies of ``/config``, ``/routes``, ``/services`` and ``/certificates``.

Built from the config the admin API serves (the same one the workers serve, by fingerprint) and the
aggregated totals; ``/routes`` runs the real ``compile_routes``, so what it shows is the table the
workers select from, in the order they try it.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel

from portway.acme.status import read_status, status_path
from portway.admin.aggregate import Totals
from portway.admin.metrics import InstanceHealth
from portway.config.model import Config
from portway.config.types import SECRET
from portway.health.state import HealthState
from portway.routing import CompiledRoute, HostTable, RouteTable, compile_routes, render_table

REDACTED = "<redacted>"


class ServiceName:
    """What a route targets in the admin's table: the service's name, no sockets."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return self.name


def config_json(config: Config) -> dict[str, Any]:
    """The config as JSON with its secrets replaced by ``<redacted>``: the fields the model marks
    ``SECRET`` (the admin token, API keys, JWT secrets) and passwords in URLs (Redis). Without a
    token anyone on the machine may read it, and with one what it shows still ends up in
    dashboards, logs and support tickets."""
    data: dict[str, Any] = config.model_dump(mode="json")
    _redact(config, data)
    return data


def _redact(model: BaseModel, data: dict[str, Any]) -> None:
    """Replace, in ``data`` (``model`` dumped as JSON), what ``model`` holds secret."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None:
            continue
        if field.json_schema_extra == SECRET:
            data[name] = REDACTED
        elif isinstance(value, str):
            data[name] = _without_password(value)
        else:
            for item, dumped in _nested(value, data[name]):
                _redact(item, dumped)


def _nested(value: object, dumped: Any) -> list[tuple[BaseModel, dict[str, Any]]]:
    """The models in a field's value (itself, or the items of a list or dict), each with its
    dumped JSON."""
    if isinstance(value, BaseModel):
        return [(value, dumped)]
    if isinstance(value, list | tuple):
        pairs = list(zip(value, dumped, strict=True))
    elif isinstance(value, dict):
        pairs = [(item, dumped[key]) for key, item in value.items()]
    else:
        return []
    return [(item, data) for item, data in pairs if isinstance(item, BaseModel)]


def _without_password(text: str) -> str:
    """``text``, or the URL it is with the password of its user info replaced."""
    if "://" not in text or "@" not in text:
        return text
    try:
        parts = urlsplit(text)
        has_password = parts.password is not None
    except ValueError:
        return text
    if not has_password:
        return text
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{hostport}"))


def route_table(config: Config) -> RouteTable[ServiceName]:
    names = {name: ServiceName(name) for name in config.services}
    return compile_routes(config.routes, names, merge_slashes=config.server.merge_slashes)


def routes_text(config: Config) -> str:
    return render_table(route_table(config)) + "\n"


def _route(route: CompiledRoute[ServiceName]) -> dict[str, Any]:
    return {
        "name": route.name,
        "index": route.index,
        "hosts": list(route.hosts),
        "path_type": route.path_type,
        "path": route.path,
        "matchers": [m.describe() for m in route.matchers],
        "service": route.target.name if route.target is not None else None,
        "action": route.action.describe() if route.action is not None else None,
    }


def _host_table(table: HostTable[ServiceName]) -> dict[str, Any]:
    """A host table's routes in the order they are tried: exact, regex, prefix longest first."""
    ordered: list[CompiledRoute[ServiceName]] = []
    for path in sorted(table.exact):
        ordered.extend(table.exact[path])
    for _pattern, group in table.regex:
        ordered.extend(group)
    for key in sorted(table.prefix, key=lambda k: (-len(k), k)):
        ordered.extend(table.prefix[key])
    return {"host": table.label, "title": table.title, "routes": [_route(r) for r in ordered]}


def routes_json(config: Config) -> dict[str, Any]:
    table = route_table(config)
    return {
        "host_tables": [_host_table(t) for t in table.host_tables()],
        "diagnostics": list(table.diagnostics),
    }


def _health(checked: bool, state: HealthState | None, workers_say_healthy: bool) -> str:
    if not checked:
        return "unchecked"
    if state is None:  # checked in-process, or the board follows another config for a moment
        return "healthy" if workers_say_healthy else "unhealthy"
    return {
        HealthState.UNKNOWN: "pending",
        HealthState.HEALTHY: "healthy",
        HealthState.UNHEALTHY: "unhealthy",
    }[state]


def services_json(config: Config, totals: Totals, health: InstanceHealth) -> dict[str, Any]:
    services = []
    for name, service in sorted(config.services.items()):
        checked = service.health_check is not None
        instances = []
        for instance in service.instances:
            key = (name, instance.address)
            reported = totals.instances.get(key)
            state = _health(checked, health.get(key), reported is None or reported.healthy)
            instances.append(
                {
                    "address": instance.address,
                    "weight": instance.weight,
                    "health": state,
                    "healthy": state != "unhealthy",
                    "ejected": reported is not None and reported.ejected_by > 0,
                    "ejected_by_workers": reported.ejected_by if reported is not None else 0,
                    "ejections": totals.ejections.get(key, 0),
                    "active_requests": reported.active if reported is not None else 0,
                }
            )
        services.append(
            {
                "name": name,
                "algorithm": service.algorithm,
                "health_check": checked,
                "retries": totals.retries.get((name,), 0),
                "instances": instances,
            }
        )
    return {"services": services}


def certificates_json(config: Config, totals: Totals) -> dict[str, Any]:
    """Every certificate the listeners serve, soonest expiry first, and the ACME process's record
    of its orders (``acme.state_dir/status.json``) when there is one."""
    now = time.time()
    certificates = []
    for certificate in totals.certificates:
        expires = datetime.fromisoformat(str(certificate["not_after"])).timestamp()
        certificates.append({**certificate, "days_left": round((expires - now) / 86400, 2)})
    certificates.sort(key=lambda c: (c["days_left"], c["listener"], c["position"]))
    records = read_status(config.acme) if status_path(config.acme).exists() else None
    acme = [r.to_json() for r in records] if records is not None else None
    return {"certificates": certificates, "acme": acme}
